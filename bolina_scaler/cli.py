"""The ``bolina-scaler`` command line: ``run``, ``plan``, ``check-config``, ``demo`` and friends.

Does I/O (argument parsing, signals, stdout). Exit codes are part of the interface:
0 success, 2 bad configuration or usage, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from bolina_scaler import __version__
from bolina_scaler.config import Config, ConfigError, load_config
from bolina_scaler.logs import configure_logging

__all__ = ["main"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2

log = structlog.get_logger("bolina_scaler.cli")

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is already 2; keep one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _load(path: str) -> Config:
    return load_config(Path(path))


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.path)
    json.dump(config.redacted(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.dry_run:
        config = config.model_copy(update={"dry_run": True})
    configure_logging(level=config.logging.level, fmt=args.log_format or config.logging.format)
    return asyncio.run(_run(config))


async def _run(config: Config) -> int:
    from bolina_scaler.daemon import Daemon
    from bolina_scaler.patching import ScaleTarget
    from bolina_scaler.watching import ConsulWatch

    # Start-up leaves ~94,000 long-lived objects on the heap (kubernetes_asyncio's models,
    # pydantic, prometheus_client). Freezing them moves them out of the collector's reach, so a
    # full collection triggered while an answer is decoded no longer rescans them all.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    try:
        async with ConsulWatch(config.consul) as watch, ScaleTarget(config.kubernetes) as target:
            await Daemon(config, watch=watch, target=target).run(stop)
    except Exception as exc:  # one clear line, then a runtime-failure exit code
        log.error("daemon failed", error=_one_line(exc))
        return EXIT_RUNTIME
    return EXIT_OK


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    log.info("signal received; stopping", signal=signal.Signals(signum).name)
    stop.set()


def _cmd_plan(args: argparse.Namespace) -> int:
    config = _load(args.config)
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    return asyncio.run(_plan(config))


async def _plan(config: Config) -> int:
    from bolina_scaler.daemon import evaluation_fields
    from bolina_scaler.patching import ScaleTarget
    from bolina_scaler.policy import Memory, decide
    from bolina_scaler.watching import ConsulWatch

    try:
        async with ConsulWatch(config.consul) as watch, ScaleTarget(config.kubernetes) as target:
            snapshot = await watch.fetch()
            scale = await target.read()
            now = asyncio.get_running_loop().time()
    except Exception as exc:
        print(f"bolina-scaler plan: {_one_line(exc)}", file=sys.stderr)
        return EXIT_RUNTIME
    decision, _ = decide(
        fleet=snapshot,
        current=scale.replicas,
        config=config.policy,
        memory=Memory(last_replicas=scale.replicas),
        now=now,
    )
    report = {
        "deployment": f"{target.namespace}/{config.kubernetes.deployment}",
        "would_patch": decision.changes_scale and not config.dry_run,
        **evaluation_fields(decision, now=now),
        "decision": decision.as_dict(),
        "note": "plan has no history: stabilization windows, step budgets and startup grace start from now",
    }
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    if not snapshot.trusted:
        print(f"bolina-scaler plan: Consul data cannot be trusted: {snapshot.trust}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from bolina_scaler.demo import run_demo

    configure_logging(level="info", fmt=args.log_format or "auto")
    return asyncio.run(run_demo(speed=args.speed, plot=args.plot))


def _one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bolina-scaler", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="path to the YAML config file")
    run.add_argument("--dry-run", action="store_true", help="decide and log, never patch (overrides the file)")
    run.add_argument("--log-format", choices=["auto", "json", "console"], help="override logging.format")
    run.set_defaults(handler=_cmd_run)

    plan = commands.add_parser("plan", help="read Consul and the Deployment once; print the decision as JSON")
    plan.add_argument("--config", required=True, help="path to the YAML config file")
    plan.set_defaults(handler=_cmd_plan)

    check = commands.add_parser("check-config", help="validate a config file and print the effective config")
    check.add_argument("path", help="path to the YAML config file")
    check.set_defaults(handler=_cmd_check_config)

    demo = commands.add_parser("demo", help="run the real daemon against in-process Consul and Kubernetes fakes")
    demo.add_argument("--speed", type=float, default=1.0, help="run the scripted scenario this many times faster")
    demo.add_argument("--plot", metavar="FILE.png", help="draw the run (needs matplotlib)")
    demo.add_argument("--log-format", choices=["auto", "json", "console"], help="log format")
    demo.set_defaults(handler=_cmd_demo)

    for register in _extra_commands():
        register(commands)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Subcommands that live beside their feature (simulate, report), registered here."""
    from bolina_scaler.simulation.command import add_report_command, add_simulate_command

    registrations: list[Callable[[Any], None]] = [add_simulate_command, add_report_command]
    return registrations


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"bolina-scaler: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
