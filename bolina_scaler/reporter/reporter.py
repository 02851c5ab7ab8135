"""The server side: a sidecar that reports a Bolina server's availability stage to its Consul agent.

Does I/O (HTTP to the server's metrics URL and to the local Consul agent). The stage decision
is the pure classifier in ``availability``. One reporter, one server::

    register (service + TTL check, DeregisterCriticalServiceAfter), status from a first reading
      │
      ▼
    every ``interval``: read metrics ─► classify ─► stage changed?  ──yes──► PUT check/update
      │                  (unreadable: Critical)        │ no, but ``heartbeat`` since last update
      │                                                └───────────────────► PUT check/update
      ▼ (stop: SIGTERM)
    deregister
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import structlog

from bolina_scaler.core.model import Status
from bolina_scaler.reporter.agent import AgentClient, ConsulAgentError, check_status, registration
from bolina_scaler.reporter.availability import ClassifierConfig, Stage, classify, describe, quantize_load
from bolina_scaler.reporter.metrics_reading import MetricsError, fetch_metrics
from bolina_scaler.reporter.settings import ReporterSettings

__all__ = ["Reporter"]

log = structlog.get_logger("bolina_scaler.reporter")


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
        log.info(
            "report.registered", service=self.settings.service, id=self.settings.instance_id, stage=reading.stage.status
        )
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
                log.warning(
                    "report.check_unknown", message="check unknown to the agent; registering again", error=str(exc)
                )
                self.registered = False
                await self.register()
                return True
            raise
        self.last_update = now
        self.updates += 1
        if changed:
            log.info("report.stage_changed", stage=reading.stage.status, output=reading.output)
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
                    log.warning("report.failed", message="retrying", error=str(exc))
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
            log.info("report.deregistered", id=self.settings.instance_id)
        except ConsulAgentError as exc:
            log.warning("report.deregister_failed", message="Consul will reap the critical check", error=str(exc))
        self.registered = False
