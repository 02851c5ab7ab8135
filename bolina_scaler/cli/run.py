"""``bolina-scaler run``: the daemon, until SIGTERM, SIGINT or SIGHUP.

Does I/O (signals, the config file, the process's logging). Each of the three stops the daemon
cleanly (the patch in flight, the Lease released, ``stopped`` logged), and so does one that came
before the event loop had its handlers (``stop_signals``): the daemon then starts and stops at once.
Any number of further stop signals while it stops change nothing: the exit code stays 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
from pathlib import Path
from typing import Any

import structlog

from bolina_scaler import stop_signals
from bolina_scaler.cli.common import EXIT_OK, EXIT_RUNTIME, examples, one_line
from bolina_scaler.config import Config, load_config
from bolina_scaler.logs import configure_logging, log_loop_exception

__all__ = ["add_run_command"]

log = structlog.get_logger("bolina_scaler.cli")


def add_run_command(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the daemon",
        description=(
            "Watch the Bolina service in Consul with blocking queries and keep the share of Available\n"
            "servers above the target by patching the Deployment's scale, until SIGTERM, SIGINT or SIGHUP.\n"
            "Each of the three stops it cleanly: the patch in flight finishes, the Lease is released, and\n"
            "it exits 0. SIGHUP does not reload the config file: restart to change it (the shipped\n"
            "manifests roll the scaler's pods when config/config.yaml changes).\n"
            "With --dry-run it is a shadow: it decides and explains (logs 'dry run: would scale',\n"
            "serves /v1/decision) but never patches and never joins leader election, so it can run\n"
            "beside the real scaler. Exit codes: 0 stopped, 1 runtime failure, 2 bad config."
        ),
        epilog=examples(
            "bolina-scaler run --config /etc/bolina-scaler/config.yaml",
            "bolina-scaler run --config config/config.yaml --dry-run --log-format console",
        ),
    )
    run.add_argument("--config", required=True, help="path to the YAML config file")
    run.add_argument("--dry-run", action="store_true", help="decide and log, never patch (overrides the file)")
    run.add_argument("--log-format", choices=["auto", "json", "console"], help="override logging.format")
    run.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    if args.dry_run:
        config = config.model_copy(update={"dry_run": True})
    configure_logging(level=config.logging.level, fmt=args.log_format or config.logging.format)
    return stop_signals.run_held(_run(config))


async def _run(config: Config) -> int:
    from bolina_scaler.daemon import open_daemon

    # Start-up leaves tens of thousands of long-lived objects on the heap (aiohttp, structlog,
    # pydantic, prometheus_client). Freezing them moves them out of the collector's reach, so a
    # full collection triggered while an answer is decoded no longer rescans them all.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log_loop_exception)
    for signum in stop_signals.STOP_SIGNALS:
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    early = stop_signals.received()
    if early is not None:  # before the loop had its handlers (while importing, loading the config)
        _on_signal(stop, early)
    try:
        async with open_daemon(config) as daemon:
            await daemon.run(stop)
    except Exception as exc:  # one clear line, then a runtime-failure exit code
        log.error("daemon.failed", message="stopping with exit code 1", error=one_line(exc))
        return EXIT_RUNTIME
    return EXIT_OK


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    log.info("daemon.signal_received", message="stopping", signal=signal.Signals(signum).name)
    stop.set()
