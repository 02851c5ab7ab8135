"""The server side: a sidecar that reports a Bolina server's availability stage to its Consul agent.

Does I/O (HTTP to the server's metrics URL and to the local Consul agent). The pure parts — metric
parsing and the stage decision (``bolina_scaler.availability``) — are functions tested without a
network. One reporter, one server::

    register (service + TTL check, DeregisterCriticalServiceAfter), status from a first reading
      │
      ▼
    every ``interval``: read metrics ─► classify ─► stage changed?  ──yes──► PUT check/update
      │                  (unreadable: Critical)        │ no, but ``heartbeat`` since last update
      │                                                └───────────────────► PUT check/update
      ▼ (stop: SIGTERM)
    deregister

Registration convention (what the scaler's watch reads): ``Name`` = the service (default
``bolina``), ``ID`` = unique per server (the pod name), ``Address`` = server IP, ``Port`` = TCP
port, ``Meta``: ``server_id``, ``udp_port``, ``pod``, optionally ``load`` (0..1). The TTL check's
status is the stage: passing = Available, warning = Warning, critical = Critical.

The metrics URL answers Prometheus text exposition (``name{labels} value``; unlabelled samples are
read by name, labelled ones by ``name{labels}`` exactly as written) or a JSON object of numbers
(nested objects flatten to ``outer.inner``). py-consul has no wrapper for ``/v1/agent/check/update``,
so the agent is called with aiohttp directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict

import aiohttp
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bolina_scaler.availability import (
    ClassifierConfig,
    Stage,
    classify,
    describe,
    load_classifier_config,
    quantize_load,
)
from bolina_scaler.config import DEFAULT_CONSUL_ADDRESS, ConfigError, Duration, PositiveDuration
from bolina_scaler.model import Status

__all__ = [
    "AgentClient",
    "ConsulAgentError",
    "MetricsError",
    "Reporter",
    "ReporterSettings",
    "add_report_command",
    "check_status",
    "parse_json_metrics",
    "parse_prometheus",
    "registration",
]

log = structlog.get_logger("bolina_scaler.reporting")

_CHECK_STATUS = {Status.AVAILABLE: "passing", Status.WARNING: "warning", Status.CRITICAL: "critical"}


def check_status(status: Status) -> str:
    """The Consul check status that means ``status`` to the scaler."""
    return _CHECK_STATUS[status]


def _go_duration(seconds: float) -> str:
    return f"{seconds:g}s" if seconds != int(seconds) else f"{int(seconds)}s"


class ReporterSettings(BaseModel):
    """Who the server is, where its metrics are, and how to talk to the Consul agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consul_address: str = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDRESS)
    token: str | None = Field(default_factory=lambda: os.environ.get("CONSUL_HTTP_TOKEN") or None, repr=False)
    service: str = Field(default="bolina", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    instance_id: str = Field(min_length=1)
    server_id: str = Field(min_length=1)
    address: str = Field(min_length=1)
    tcp_port: int = Field(default=9001, ge=1, le=65535)
    udp_port: int | None = Field(default=9002, ge=1, le=65535)
    pod: str = Field(min_length=1)
    metrics_url: str
    metrics_format: Literal["auto", "prometheus", "json"] = "auto"
    interval: PositiveDuration = 5.0
    """How often the metrics are read and the stage decided."""
    ttl: PositiveDuration = 30.0
    """The check's TTL: Consul turns it Critical if no update arrives within it."""
    heartbeat: PositiveDuration | None = None
    """Longest time without an update (default ttl/2, so one lost update never expires the check)."""
    deregister_critical_after: Duration = 60.0
    """Consul removes the service after its check stayed Critical this long (Consul's minimum is 1m)."""
    load_metric: str | None = None
    """Metric whose value (0..1) is published as ``Meta.load`` at registration, if set."""
    request_timeout: PositiveDuration = 5.0

    @model_validator(mode="after")
    def _check(self) -> ReporterSettings:
        if not re.match(r"^https?://[^/\s]+", self.consul_address):
            raise ValueError(f"consul_address: expected http(s)://host:port, got {self.consul_address!r}")
        if not re.match(r"^https?://[^/\s]+", self.metrics_url):
            raise ValueError(f"metrics_url: expected http(s)://host:port/path, got {self.metrics_url!r}")
        if self.deregister_critical_after and self.deregister_critical_after < 60:
            raise ValueError("deregister_critical_after: Consul's minimum is 1m (shorter values are raised to it)")
        if self.heartbeat_every > self.ttl:
            raise ValueError(f"heartbeat: must be shorter than ttl ({self.ttl:g}s)")
        return self

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.ttl / 2

    @property
    def check_id(self) -> str:
        return f"service:{self.instance_id}"


class _RegisterCheck(TypedDict, total=False):
    CheckID: str
    Name: str
    TTL: str
    Status: str
    Notes: str
    DeregisterCriticalServiceAfter: str


class _Registration(TypedDict):
    Name: str
    ID: str
    Address: str
    Port: int
    Meta: dict[str, str]
    Check: _RegisterCheck


def registration(settings: ReporterSettings, *, status: Status, load: float | None) -> _Registration:
    """The ``PUT /v1/agent/service/register`` body under the convention the scaler reads.

    A registered check has no ``Output``: the reporter sends it with a check update right after.
    """
    meta = {"server_id": settings.server_id, "pod": settings.pod}
    if settings.udp_port is not None:
        meta["udp_port"] = str(settings.udp_port)
    if load is not None and not math.isnan(load):
        meta["load"] = f"{min(1.0, max(0.0, load)):.3f}"
    check: _RegisterCheck = {
        "CheckID": settings.check_id,
        "Name": "Bolina availability",
        "TTL": _go_duration(settings.ttl),
        "Status": check_status(status),
        "Notes": "stage reported by bolina-scaler report: passing=available, warning, critical",
    }
    if settings.deregister_critical_after:
        check["DeregisterCriticalServiceAfter"] = _go_duration(settings.deregister_critical_after)
    return {
        "Name": settings.service,
        "ID": settings.instance_id,
        "Address": settings.address,
        "Port": settings.tcp_port,
        "Meta": meta,
        "Check": check,
    }


# ------------------------------------------------------------------------------------ metrics


class MetricsError(RuntimeError):
    """The server's metrics could not be read or parsed."""


_PROM_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name`` (unlabelled) or ``name{labels}`` → value."""
    metrics: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROM_LINE.match(line)
        if match is None:
            continue
        value = _float(match["value"])
        if value is None:
            continue
        labels = match["labels"]
        key = match["name"] if not labels else match["name"] + re.sub(r"\s+", "", labels)
        metrics[key] = value
    return metrics


def parse_json_metrics(data: Any) -> dict[str, float]:
    """A JSON object's numbers, nested objects flattened with dots (``{"cpu": {"ratio": 0.4}}`` → ``cpu.ratio``)."""
    if not isinstance(data, dict):
        raise MetricsError(f"expected a JSON object of metrics, got {type(data).__name__}")
    metrics: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[prefix] = float(value)

    walk("", data)
    return metrics


async def fetch_metrics(
    session: aiohttp.ClientSession, url: str, *, fmt: Literal["auto", "prometheus", "json"], limit: float
) -> dict[str, float]:
    """Read the server's metrics URL once; ``MetricsError`` for anything but a parsable 200."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as response:
            body = await response.read()
            if response.status != 200:
                raise MetricsError(f"{url} answered {response.status}")
            content_type = response.content_type
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MetricsError(f"{url}: {type(exc).__name__}: {exc}") from None
    is_json = fmt == "json" or (fmt == "auto" and (content_type == "application/json" or body.lstrip()[:1] == b"{"))
    if is_json:
        try:
            return parse_json_metrics(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise MetricsError(f"{url}: invalid JSON: {exc}") from None
    return parse_prometheus(body.decode("utf-8", errors="replace"))


# ------------------------------------------------------------------------------------ Consul agent


class ConsulAgentError(RuntimeError):
    """The local Consul agent refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AgentClient:
    """The three agent endpoints a reporter needs, over aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, *, address: str, token: str | None, timeout: float) -> None:
        self._session = session
        self._base = address.rstrip("/")
        self._headers = {"X-Consul-Token": token} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _put(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        url = f"{self._base}{path}"
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.put(url, data=data, headers=self._headers, timeout=self._timeout) as response:
                if response.status != 200:
                    text = (await response.text()).strip().splitlines()
                    detail = text[0] if text else ""
                    raise ConsulAgentError(f"PUT {path}: {response.status} {detail}", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConsulAgentError(f"PUT {path}: {type(exc).__name__}: {exc}") from None

    async def register(self, body: Mapping[str, Any]) -> None:
        await self._put("/v1/agent/service/register", body)

    async def update_check(self, check_id: str, *, status: str, output: str) -> None:
        await self._put(f"/v1/agent/check/update/{check_id}", {"Status": status, "Output": output})

    async def deregister(self, instance_id: str) -> None:
        await self._put(f"/v1/agent/service/deregister/{instance_id}")


# ------------------------------------------------------------------------------------ the reporter


@dataclass(frozen=True, slots=True)
class _Reading:
    stage: Stage
    output: str
    load: float | None


class Reporter:
    """Register one server, keep its TTL check at its stage, deregister on stop.

    ``async with Reporter(settings, classifier) as reporter: await reporter.run(stop)``. Time is
    the event loop's clock (``loop.time()``), so ``looptime`` fast-forwards the heartbeats.
    """

    def __init__(
        self,
        settings: ReporterSettings,
        classifier: ClassifierConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self._own_session = session is None
        self._session = session
        self._clock = clock
        self._agent: AgentClient | None = None
        self.stage: Stage | None = None
        self.registered = False
        self.last_update: float | None = None
        self.last_load: float | None = None
        self.updates = 0

    async def __aenter__(self) -> Reporter:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._agent = AgentClient(
            self._session,
            address=self.settings.consul_address,
            token=self.settings.token,
            timeout=self.settings.request_timeout,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            raise RuntimeError("use the Reporter as an async context manager")
        return self._agent

    async def _read(self, now: float) -> _Reading:
        stage = self.stage or Stage.initial(now)
        assert self._session is not None
        try:
            sample = await fetch_metrics(
                self._session,
                self.settings.metrics_url,
                fmt=self.settings.metrics_format,
                limit=self.settings.request_timeout,
            )
        except MetricsError as exc:
            # A server whose metrics we cannot read is not capacity: Critical at once.
            failed = stage if stage.status is Status.CRITICAL else Stage(Status.CRITICAL, now, ("metrics unreadable",))
            return _Reading(failed, f"critical: metrics unreadable: {exc}"[:200], None)
        stage = classify(sample, config=self.classifier, stage=stage, now=now)
        raw = sample.get(self.settings.load_metric) if self.settings.load_metric else None
        load = None if raw is None else quantize_load(raw)
        output = describe(sample, stage)
        if load is not None:
            # The daemon reads "load=" from the check output (fresher than Service.Meta.load).
            output = f"load={load:.2f} {output}"
        return _Reading(stage, output, load)

    async def register(self) -> Stage:
        """Read the metrics once and register the server with that stage as the check's status."""
        now = self._now()
        reading = await self._read(now)
        body = registration(self.settings, status=reading.stage.status, load=reading.load)
        await self.agent.register(body)
        self.registered = True
        await self.agent.update_check(
            self.settings.check_id, status=check_status(reading.stage.status), output=reading.output
        )
        self.stage, self.last_update, self.last_load = reading.stage, now, reading.load
        log.info("registered", service=self.settings.service, id=self.settings.instance_id, stage=reading.stage.status)
        return reading.stage

    async def report_once(self) -> bool:
        """One turn: read, classify; update the check on a stage change or when the heartbeat is due."""
        if not self.registered:
            await self.register()
            return True
        now = self._now()
        reading = await self._read(now)
        changed = self.stage is None or reading.stage.status is not self.stage.status
        due = self.last_update is None or now - self.last_update >= self.settings.heartbeat_every - 1e-9
        # A new load step is news too (steps of LOAD_STEP keep Consul writes rare).
        due = due or reading.load != self.last_load
        self.stage = reading.stage
        self.last_load = reading.load
        if not (changed or due):
            return False
        try:
            await self.agent.update_check(
                self.settings.check_id, status=check_status(reading.stage.status), output=reading.output
            )
        except ConsulAgentError as exc:
            if exc.status == 404:  # the agent lost our registration (restarted without state): register again
                log.warning("check unknown to the agent; registering again", error=str(exc))
                self.registered = False
                await self.register()
                return True
            raise
        self.last_update = now
        self.updates += 1
        if changed:
            log.info("stage changed", stage=reading.stage.status, output=reading.output)
        return True

    def _next_wake(self) -> float:
        interval = self.settings.interval
        if self.last_update is None:
            return interval
        heartbeat_in = self.last_update + self.settings.heartbeat_every - self._now()
        return max(0.0, min(interval, heartbeat_in))

    async def run(self, stop: asyncio.Event, *, _iterations: int | None = None) -> None:
        """Report until ``stop`` is set (SIGTERM in the CLI), then deregister. Errors are logged and retried."""
        turns = 0
        try:
            while not stop.is_set():
                try:
                    await self.report_once()
                except (ConsulAgentError, MetricsError) as exc:
                    log.warning("report failed; retrying", error=str(exc))
                turns += 1
                if _iterations is not None and turns >= _iterations:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._next_wake())
        finally:
            await self.deregister()

    async def deregister(self) -> None:
        if not self.registered:
            return
        try:
            await self.agent.deregister(self.settings.instance_id)
            log.info("deregistered", id=self.settings.instance_id)
        except ConsulAgentError as exc:
            log.warning("deregister failed (Consul will reap the critical check)", error=str(exc))
        self.registered = False


# ------------------------------------------------------------------------------------ command line


def add_report_command(subparsers: Any) -> None:
    """Register ``bolina-scaler report`` on an argparse subparsers object."""
    env = os.environ.get
    report = subparsers.add_parser(
        "report",
        help="sidecar: register a Bolina server in its Consul agent and report its availability stage",
        description=(
            "Register this Bolina server in the local Consul agent with a TTL check, read the server's "
            "metrics (Prometheus text or JSON) every --interval, classify them (--classifier YAML) and "
            "update the check on every stage change and as a heartbeat; deregister on SIGTERM."
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
    report.add_argument("--load-metric", help="metric published as Meta.load (0..1) at registration")
    report.set_defaults(handler=_cmd_report)


def _settings_from_args(args: argparse.Namespace) -> ReporterSettings:
    token = Path(args.token_file).read_text(encoding="utf-8").strip() if args.token_file else None
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
    }
    if token:
        values["token"] = token
    try:
        return ReporterSettings.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"report: {str(exc).splitlines()[-1] if str(exc) else exc}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    classifier = load_classifier_config(args.classifier)
    return asyncio.run(_report_main(settings, classifier))


async def _report_main(settings: ReporterSettings, classifier: ClassifierConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Reporter(settings, classifier) as reporter:
        while not reporter.registered and not stop.is_set():
            try:
                await reporter.register()
            except ConsulAgentError as exc:  # the agent sidecar may start after us
                log.warning("cannot register yet; retrying", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.interval)
        await reporter.run(stop)
    return 0
