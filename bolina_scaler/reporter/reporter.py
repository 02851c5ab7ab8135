"""The server side: a sidecar that reports a Bolina server's availability stage to its Consul agent.

Does I/O (HTTP to the server's metrics URL and to the local Consul agent, the wall clock for the
demand's time stamp). The stage decision is the pure classifier in ``availability``, what is worth
a write the pure ``deadband``. One reporter, one server::

    register (service + TTL check Critical, DeregisterCriticalServiceAfter), then at once the
    first reading's status and output: a status change, so the agent writes the output with it
      │
      ▼
    every ``interval``: read metrics ─► classify ─► news? (status, load or demand past the
      │                  (unreadable: Critical)       deadband, refresh due) ──yes──► PUT check/update
      │                                               │ no, but ``heartbeat`` since the last update
      │                                               └──► PUT check/update with the *same* output
      ▼ (stop: SIGTERM)                                    (the agent drops it: no catalog write)
    deregister

A turn that fails (the agent refuses, times out or is not there yet) is followed by a jittered
backoff from ``RETRY_INITIAL`` (or ``interval``, if shorter) growing to ``interval``, never by the
next turn at once: an update that is overdue (the heartbeat) and keeps failing must not turn the
loop into thousands of metrics reads and agent requests a second. Each distinct problem is logged
once (``report.register_failing`` before the server is registered, ``report.failing`` after), and
the recovery once (``report.register_recovered``, ``report.recovered``).

The output is ``load=<share> demand=<share>@<unix seconds> <stage and why>`` (``deadband``);
``load=`` and ``demand=`` only when ``--load-metric`` / ``--demand-metric`` name a metric the
server exports. The scaler reads both (``source.parse``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp
import structlog

from bolina_scaler.core.model import Status
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.logs import ProblemLog
from bolina_scaler.reporter.agent import AgentClient, ConsulAgentError, check_status, registration
from bolina_scaler.reporter.availability import ClassifierConfig, Stage, classify, describe, quantize_load
from bolina_scaler.reporter.deadband import Published, format_output, news, quantize_demand
from bolina_scaler.reporter.metrics_reading import MetricsError, fetch_metrics
from bolina_scaler.reporter.settings import ReporterSettings

__all__ = ["RETRY_INITIAL", "Reporter"]

log = structlog.get_logger("bolina_scaler.reporter")

RETRY_INITIAL: Final = 1.0
"""The first wait after a failed turn: the agent is local, a second is plenty to let it come up."""


@dataclass(frozen=True, slots=True)
class _Reading:
    stage: Stage
    description: str
    load: float | None
    demand: float | None


class Reporter:
    """Register one server, keep its TTL check at its stage, deregister on stop.

    ``async with Reporter(settings, classifier) as reporter: await reporter.run(stop)``; leaving
    the ``async with`` for any reason deregisters a server still registered. Time is
    the event loop's clock (``loop.time()``), so ``looptime`` fast-forwards the heartbeats; the
    demand's time stamp and the refresh use ``wall_clock`` (``time.time``: the scaler compares the
    stamp with its own wall clock).
    """

    def __init__(
        self,
        settings: ReporterSettings,
        classifier: ClassifierConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self._own_session = session is None
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock
        self._agent: AgentClient | None = None
        self.stage: Stage | None = None
        self.registered = False
        self.last_update: float | None = None
        self.published: Published | None = None
        """What was last written: status, load, demand and their time stamp."""
        self.output = ""
        """The output last written (heartbeats repeat it, so the agent writes nothing new)."""
        self.updates = 0
        self._backoff = Backoff(min(RETRY_INITIAL, settings.interval), settings.interval, rng or random.Random())
        self._registering = ProblemLog(
            log,
            failing="report.register_failing",
            recovered="report.register_recovered",
            message="cannot register yet; retrying",
        )
        self._updating = ProblemLog(
            log,
            failing="report.failing",
            recovered="report.recovered",
            message="cannot update the check; retrying (Consul turns it critical when its TTL runs out)",
        )

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
        # Every way out deregisters what was registered: a stop, an error at the first update, a bug.
        try:
            await self.deregister()
        finally:
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
        settings = self.settings
        try:
            sample = await fetch_metrics(
                self._session,
                settings.metrics_url,
                fmt=settings.metrics_format,
                limit=settings.request_timeout,
                max_bytes=settings.max_metrics_bytes,
            )
        except MetricsError as exc:
            # A server whose metrics we cannot read is not capacity: Critical at once.
            failed = stage if stage.status is Status.CRITICAL else Stage(Status.CRITICAL, now, ("metrics unreadable",))
            return _Reading(failed, f"critical: metrics unreadable: {exc}", None, None)
        stage = classify(sample, config=self.classifier, stage=stage, now=now)
        load = sample.get(settings.load_metric) if settings.load_metric else None
        demand = sample.get(settings.demand_metric) if settings.demand_metric else None
        return _Reading(
            stage,
            describe(sample, stage),
            None if load is None else quantize_load(load),
            None if demand is None else quantize_demand(demand),
        )

    async def register(self) -> Stage:
        """Read the metrics once, register the server, then set the check to that reading.

        The check is registered Critical and updated at once: a status change makes the agent
        write the first output to the catalog with it, where an output-only change would wait
        for ``check_update_interval`` (the scaler would see the new server without its demand).
        """
        now = self._now()
        reading = await self._read(now)
        body = registration(self.settings, status=Status.CRITICAL, load=reading.load)
        await self.agent.register(body)
        self.registered = True
        await self._write(reading, now, why="first")
        log.info(
            "report.registered", service=self.settings.service, id=self.settings.instance_id, stage=reading.stage.status
        )
        return reading.stage

    async def _write(self, reading: _Reading, now: float, *, why: str) -> None:
        published = Published(
            status=reading.stage.status, load=reading.load, demand=reading.demand, at=self._wall_clock()
        )
        output = format_output(published, reading.description)
        await self.agent.update_check(self.settings.check_id, status=check_status(published.status), output=output)
        self.published, self.output, self.stage, self.last_update = published, output, reading.stage, now
        self.updates += 1
        log.debug("report.check_updated", why=why, output=output)

    async def report_once(self) -> bool:
        """One turn: read, classify; write on news (deadband), else heartbeat with the same output when due."""
        if not self.registered:
            await self.register()
            return True
        now = self._now()
        reading = await self._read(now)
        changed = self.stage is None or reading.stage.status is not self.stage.status
        why = news(
            self.published,
            status=reading.stage.status,
            load=reading.load,
            demand=reading.demand,
            now=self._wall_clock(),
            deadband=self.settings.deadband,
        )
        due = self.last_update is None or now - self.last_update >= self.settings.heartbeat_every - 1e-9
        self.stage = reading.stage
        if why is None and not due:
            return False
        try:
            if why is not None:
                await self._write(reading, now, why=why)
            else:
                # The heartbeat: the same status and output, which the agent keeps to itself.
                status = check_status(reading.stage.status)
                await self.agent.update_check(self.settings.check_id, status=status, output=self.output)
                self.last_update = now
                self.updates += 1
        except ConsulAgentError as exc:
            if exc.status == 404:  # the agent lost our registration (restarted without state): register again
                log.warning(
                    "report.check_unknown", message="check unknown to the agent; registering again", error=str(exc)
                )
                self.registered = False
                await self.register()
                return True
            raise
        if changed:
            log.info("report.stage_changed", stage=reading.stage.status, output=self.output)
        return True

    def _next_wake(self) -> float:
        interval = self.settings.interval
        if self.last_update is None:
            return interval
        heartbeat_in = self.last_update + self.settings.heartbeat_every - self._now()
        return max(0.0, min(interval, heartbeat_in))

    async def run(self, stop: asyncio.Event, *, _iterations: int | None = None) -> None:
        """Register (if not yet), then report until ``stop`` is set (SIGTERM in the CLI), then
        deregister. A failed turn is logged once and retried after a backoff."""
        turns = 0
        try:
            while not stop.is_set():
                problems = self._updating if self.registered else self._registering
                try:
                    await self.report_once()
                except (ConsulAgentError, MetricsError) as exc:
                    problems.failed(str(exc))
                    wake = self._backoff.next_delay()
                else:
                    self._backoff.reset()
                    self._registering.recovered()
                    self._updating.recovered()
                    wake = self._next_wake()
                turns += 1
                if _iterations is not None and turns >= _iterations:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wake)
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
