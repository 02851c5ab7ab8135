"""``bolina-scaler report``: the server-side sidecar's command line (flags, signals, exit codes).

Does I/O (argument parsing, the token file, signals). The work is ``reporter.Reporter``. SIGTERM,
SIGINT and SIGHUP stop it (``stop_signals``, as for ``run``): the server is deregistered and the
exit code is 0, however many stop signals come while it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bolina_scaler import stop_signals
from bolina_scaler.cli.common import examples
from bolina_scaler.config import DEFAULT_CONSUL_ADDRESS, TOKEN_FILE_BYTES, ConfigError, one_line, read_small_text
from bolina_scaler.reporter.availability import ClassifierConfig, load_classifier_config
from bolina_scaler.reporter.metrics_reading import DEFAULT_MAX_BYTES
from bolina_scaler.reporter.reporter import Reporter
from bolina_scaler.reporter.settings import ReporterSettings

__all__ = ["add_report_command"]

DURATION = "DURATION"
SYNTAX = "seconds, or 300ms, 30s, 5m, 1h"
"""How a duration flag is written: what ``config.Duration`` reads."""


def add_report_command(subparsers: Any) -> None:
    """Register ``bolina-scaler report`` on an argparse subparsers object."""
    env = os.environ.get
    report = subparsers.add_parser(
        "report",
        help="sidecar: register a Bolina server in its Consul agent and report its availability stage",
        description=(
            "Register this Bolina server in the local Consul agent with a TTL check, read the server's metrics\n"
            "(Prometheus text or JSON) every --interval, classify them (--classifier YAML) and update the check\n"
            "on every stage change and as a heartbeat. SIGTERM, SIGINT or SIGHUP deregister it and exit 0.\n"
            "Durations are seconds or 300ms, 30s, 5m, 1h."
        ),
        epilog=examples(
            "bolina-scaler report --classifier config/availability.yaml --metrics-url http://127.0.0.1:9100/metrics",
            "(in a pod: manifests/components/report sets the flags; POD_NAME, POD_IP from the downward API)",
        ),
    )
    flag = report.add_argument
    flag("--classifier", required=True, metavar="FILE", help="availability classifier YAML (config/availability.yaml)")
    flag("--metrics-url", required=True, metavar="URL", help="the server's metrics URL")
    flag(
        "--metrics-format",
        choices=["auto", "prometheus", "json"],
        default="auto",
        help="how to read the metrics answer (default: auto, from its Content-Type and first byte)",
    )
    flag(
        "--consul",
        default=env("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS,
        metavar="URL",
        help=f"the local Consul agent's address (default: $CONSUL_HTTP_ADDR, else {DEFAULT_CONSUL_ADDRESS})",
    )
    flag("--token-file", metavar="FILE", help="file holding the Consul ACL token (default: $CONSUL_HTTP_TOKEN)")
    flag("--service", default="bolina", help="service name the scaler watches (default: bolina)")
    flag("--id", default=env("POD_NAME"), help="Consul service ID (default: $POD_NAME)")
    flag("--pod", default=env("POD_NAME"), help="pod name (default: $POD_NAME)")
    flag(
        "--server-id", default=env("BOLINA_SERVER_ID"), help="Bolina server id (default: $BOLINA_SERVER_ID, else --id)"
    )
    flag("--address", default=env("POD_IP"), metavar="IP", help="server IP registered in Consul (default: $POD_IP)")
    flag("--tcp-port", type=int, default=9001, metavar="PORT", help="server TCP port registered (default: 9001)")
    flag("--udp-port", type=int, default=9002, metavar="PORT", help="server UDP port, Meta.udp_port (default: 9002)")
    flag("--interval", default="5s", metavar=DURATION, help=f"how often to read the metrics (default: 5s; {SYNTAX})")
    flag("--ttl", default="30s", metavar=DURATION, help=f"check TTL; a heartbeat every ttl/2 (default: 30s; {SYNTAX})")
    flag(
        "--deregister-after",
        default="1m",
        metavar=DURATION,
        help=f"Consul's DeregisterCriticalServiceAfter: at least 1m, 0 for never (default: 1m; {SYNTAX})",
    )
    flag(
        "--load-metric",
        metavar="NAME",
        help="metric holding the load (0..1): load= in the check output (default: none)",
    )
    flag(
        "--demand-metric",
        metavar="NAME",
        help="metric holding the offered load (clients offered per second × mean session / capacity; may exceed 1): "
        "demand= in the check output, what the scaler sizes the fleet from (default: none)",
    )
    flag(
        "--deadband-load",
        default="0.05",
        metavar="SHARE",
        help="write when the load moved this much, 0..1 (default: 0.05)",
    )
    flag(
        "--deadband-demand",
        default="0.25",
        metavar="SHARE",
        help="write when the demand moved this share of itself (default: 0.25)",
    )
    flag(
        "--refresh",
        default="5m",
        metavar=DURATION,
        help=f"write at least this often, re-stamping the demand (default: 5m; {SYNTAX})",
    )
    flag(
        "--max-metrics-bytes",
        default=str(DEFAULT_MAX_BYTES),
        metavar="BYTES",
        help=f"largest metrics answer read, in bytes (default: {DEFAULT_MAX_BYTES}, 4 MiB)",
    )
    report.set_defaults(handler=_cmd_report)


def _settings_from_args(args: argparse.Namespace) -> ReporterSettings:
    token = None
    if args.token_file:
        try:
            token = read_small_text(Path(args.token_file), TOKEN_FILE_BYTES).strip()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"report: --token-file {args.token_file}: cannot read it ({exc})") from None
    missing = [
        flag for flag, value in (("--id", args.id), ("--pod", args.pod), ("--address", args.address)) if not value
    ]
    if missing:
        raise ConfigError(f"report: {', '.join(missing)} required (or set POD_NAME / POD_IP)")
    values: dict[str, Any] = {
        "consul_address": args.consul,
        "service": args.service,
        "instance_id": args.id,
        "server_id": args.server_id or args.id,
        "address": args.address,
        "tcp_port": args.tcp_port,
        "udp_port": args.udp_port,
        "pod": args.pod,
        "metrics_url": args.metrics_url,
        "metrics_format": args.metrics_format,
        "interval": args.interval,
        "ttl": args.ttl,
        "deregister_critical_after": args.deregister_after,
        "load_metric": args.load_metric,
        "demand_metric": args.demand_metric,
        "deadband_load": args.deadband_load,
        "deadband_demand": args.deadband_demand,
        "refresh": args.refresh,
        "max_metrics_bytes": args.max_metrics_bytes,
    }
    if token:
        values["token"] = token
    try:
        return ReporterSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"report: {one_line(exc)}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    classifier = load_classifier_config(args.classifier)
    return stop_signals.run_held(_report_main(settings, classifier))


async def _report_main(settings: ReporterSettings, classifier: ClassifierConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in stop_signals.STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    if stop_signals.received() is not None:  # before the loop had its handlers: never registers
        stop.set()
    async with Reporter(settings, classifier) as reporter:
        await reporter.run(stop)  # registers first (the agent sidecar may start after us), with backoff
    return 0
