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


def add_report_command(subparsers: Any) -> None:
    """Register ``bolina-scaler report`` on an argparse subparsers object."""
    env = os.environ.get
    report = subparsers.add_parser(
        "report",
        help="sidecar: register a Bolina server in its Consul agent and report its availability stage",
        description=(
            "Register this Bolina server in the local Consul agent with a TTL check, read the server's "
            "metrics (Prometheus text or JSON) every --interval, classify them (--classifier YAML) and "
            "update the check on every stage change and as a heartbeat; deregister on SIGTERM, SIGINT or SIGHUP."
        ),
        epilog=examples(
            "bolina-scaler report --classifier config/availability.yaml --metrics-url http://127.0.0.1:9100/metrics",
            "(in a pod: manifests/components/report sets the flags; POD_NAME, POD_IP from the downward API)",
        ),
    )
    report.add_argument("--classifier", required=True, help="availability classifier YAML (config/availability.yaml)")
    report.add_argument("--metrics-url", required=True, help="the server's metrics URL")
    report.add_argument("--metrics-format", choices=["auto", "prometheus", "json"], default="auto")
    report.add_argument("--consul", default=env("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS, help="agent address")
    report.add_argument("--token-file", help="file holding the Consul ACL token (else CONSUL_HTTP_TOKEN)")
    report.add_argument("--service", default="bolina", help="service name the scaler watches (default: bolina)")
    report.add_argument("--id", default=env("POD_NAME"), help="Consul service ID (default: $POD_NAME)")
    report.add_argument("--pod", default=env("POD_NAME"), help="pod name (default: $POD_NAME)")
    report.add_argument("--server-id", default=env("BOLINA_SERVER_ID"), help="Bolina server id ($BOLINA_SERVER_ID)")
    report.add_argument("--address", default=env("POD_IP"), help="server IP (default: $POD_IP)")
    report.add_argument("--tcp-port", type=int, default=9001)
    report.add_argument("--udp-port", type=int, default=9002)
    report.add_argument("--interval", default="5s", help="how often to read the metrics (default 5s)")
    report.add_argument("--ttl", default="30s", help="check TTL (default 30s; heartbeat every ttl/2)")
    report.add_argument("--deregister-after", default="1m", help="DeregisterCriticalServiceAfter (min 1m)")
    report.add_argument("--load-metric", help="metric holding the load (0..1): load= in the check output")
    report.add_argument(
        "--demand-metric",
        help="metric holding the offered load (clients offered per second × mean session / capacity; may exceed 1): "
        "demand= in the check output, what the scaler sizes the fleet from",
    )
    report.add_argument("--deadband-load", default="0.05", help="write when the load moved this much (default 0.05)")
    report.add_argument(
        "--deadband-demand", default="0.25", help="write when the demand moved this share of itself (default 0.25)"
    )
    report.add_argument("--refresh", default="5m", help="write at least this often, re-stamping the demand (5m)")
    report.add_argument(
        "--max-metrics-bytes", default=str(DEFAULT_MAX_BYTES), help="largest metrics answer read (default 4 MiB)"
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
