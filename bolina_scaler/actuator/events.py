"""Kubernetes Events on the Bolina Deployment: what a person reads in ``kubectl describe deploy bolina``.

``event_for`` is pure (a decision and its outcome → the Event to record, or none); the
``EventRecorder`` does I/O (core ``v1`` Events through ``call.KubeApi``, the API the Role's
``events`` rule allows, and the one ``kubectl describe`` lists). Recording never blocks or fails
a scale: Events go through a small queue that one task drains, and a failure is logged once
per distinct problem.

Like client-go's ``EventCorrelator``, repeats are aggregated: the same reason and message within
``events.min_interval`` are counted but not sent; the next occurrence after the interval bumps
``count`` and ``lastTimestamp`` of the existing Event with a merge PATCH (or creates a new Event
when the old one has expired, as Events do after an hour).

The sending task backs off too: after a failed send (a refusal answers at once: 403, 422), the
next Event waits ``kubernetes.retry_initial`` to ``kubernetes.retry_max`` (jittered, growing),
reset by the first that is sent; the queue (100) holds what comes meanwhile, and what does not
fit is counted ``failed``. So Events refused one after another cost at most two requests a
second, however fast decisions come.

Reasons (stable strings, like the HorizontalPodAutoscaler's):

======================  ========  ===========================================================
``SuccessfulRescale``   Normal    the scale was changed; message ``New size: N; reason: ...``
``FailedRescale``       Warning   the patch was refused or failed (RBAC, API server down, ...)
``ScaleHeld``           Warning   not scaling on purpose: untrusted or stale Consul data, or
                                  the mass-change guard is waiting for confirmation
``MaxReplicasReached``  Warning   more servers are needed but the Deployment is at max_replicas
``ScalingFallback``     Warning   Consul's data has stayed unusable for ``policy.fallback.after``:
                                  the scale was changed to the fallback count (``New size: N;
                                  reason: ...``), or is held there (or above it, ``raise_only``)
======================  ========  ===========================================================
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import KubeApi, KubernetesError, NotFound, Operation, Subject
from bolina_scaler.config import EventsConfig
from bolina_scaler.core.decision import Decision, Direction, Reason
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.logs import ProblemLog

__all__ = ["COMPONENT", "EventRecorder", "EventSpec", "event_for"]

log = structlog.get_logger("bolina_scaler.actuator.events")

COMPONENT: Final = "bolina-scaler"
_CREATE = Operation(name="event_create", verb="create")
_PATCH = Operation(name="event_patch", verb="patch", expected=(NotFound,))
_MAX_MESSAGE: Final = 1024
_FORGET_AFTER: Final = 3600.0
"""The API server's default Event TTL: older aggregation state is useless."""
_HELD = {Reason.UNTRUSTED_DATA, Reason.STALE_DATA, Reason.MASS_CHANGE_GUARD}


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One Event to record: Kubernetes' ``type``, ``reason`` and ``message``."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def event_for(decision: Decision, *, outcome: Outcome, error: str | None = None) -> EventSpec | None:
    """The Event a decision deserves, given what was done with it (pure)."""
    clamps = "; ".join(str(clamp) for clamp in decision.clamps)
    why = f"{decision.reason}: {decision.message}" + (f" (clamped: {clamps})" if clamps else "")
    if outcome is Outcome.PATCHED:
        if decision.reason is Reason.FALLBACK:
            return EventSpec("Warning", "ScalingFallback", f"New size: {decision.desired}; reason: {why}")
        return EventSpec("Normal", "SuccessfulRescale", f"New size: {decision.desired}; reason: {why}")
    if outcome is Outcome.FAILED:
        return EventSpec(
            "Warning",
            "FailedRescale",
            f"failed to scale from {decision.current} to {decision.desired}: {error or 'unknown error'}",
        )
    if decision.direction is Direction.HOLD and decision.reason is Reason.FALLBACK:
        return EventSpec("Warning", "ScalingFallback", decision.message)
    if decision.direction is Direction.HOLD and decision.reason in _HELD:
        return EventSpec("Warning", "ScaleHeld", decision.message)
    if decision.reason is Reason.AT_MAX:
        return EventSpec("Warning", "MaxReplicasReached", f"{decision.message} ({decision.current})")
    return None


@dataclass(slots=True)
class _Sent:
    name: str | None
    count: int
    at: float


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records core/v1 Events on one Deployment. ``record()`` never blocks; ``run()`` sends."""

    def __init__(
        self,
        config: EventsConfig,
        *,
        api: KubeApi,
        instance: str,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.namespace = api.namespace
        self.deployment = api.config.deployment
        self.instance = instance
        self._api = api
        self._clock = clock
        self._wall = wall_clock
        self._queue: asyncio.Queue[tuple[EventSpec, str | None, _Sent | None]] = asyncio.Queue(maxsize=100)
        self._recent: dict[tuple[str, str], _Sent] = {}
        self._backoff = Backoff(api.config.retry_initial, api.config.retry_max, rng or random.Random())
        problems = ProblemLog(
            log,
            failing="events.failing",
            recovered="events.recovered",
            message="could not record a Kubernetes Event (scaling goes on)",
        )
        subject = Subject(resource="events", kind="event", namespace=self.namespace)
        self._events = api.resource(subject, f"/api/v1/namespaces/{self.namespace}/events", problems=problems)
        self.uid: str | None = None
        """The Deployment's uid (from the Scale): ``kubectl describe`` matches Events by it."""

    def record(self, event: EventSpec) -> None:
        """Queue ``event`` unless the same one was recorded within ``min_interval`` (then count it)."""
        now = self._clock()
        message = event.message[:_MAX_MESSAGE]
        key = (event.reason, message)
        self._recent = {k: v for k, v in self._recent.items() if now - v.at < _FORGET_AFTER}
        seen = self._recent.get(key)
        if seen is not None and now - seen.at < self.config.min_interval:
            seen.count += 1
            self._count(event.reason, "suppressed")
            return
        if seen is None:
            seen = _Sent(name=None, count=0, at=now)
            self._recent[key] = seen
        seen.count += 1
        seen.at = now
        try:
            self._queue.put_nowait((EventSpec(event.type, event.reason, message), self.uid, seen))
        except asyncio.QueueFull:
            self._count(event.reason, "failed")

    async def run(self) -> None:
        """Send queued Events forever; after a failed one, wait a backoff before the next."""
        while True:
            event, uid, seen = await self._queue.get()
            try:
                sent = await self._send(event, uid, seen)
            finally:
                self._queue.task_done()
            if sent:
                self._backoff.reset()
            else:
                await asyncio.sleep(self._backoff.next_delay())

    async def flush(self) -> None:
        """Wait for the queued Events to be sent (bound it with ``asyncio.timeout`` at shutdown)."""
        await self._queue.join()

    async def _send(self, event: EventSpec, uid: str | None, seen: _Sent | None) -> bool:
        """Create (or aggregate into) the Event; whether it was sent."""
        stamp = _timestamp(self._wall())
        try:
            if seen is not None and seen.name is not None:
                body = {"count": seen.count, "lastTimestamp": stamp, "message": event.message}
                name = seen.name
                try:
                    await self._events.item(name).patch(_PATCH, body=body, answer=schema.JSON)
                except NotFound:
                    seen.name = None  # expired: record it anew
                else:
                    self._count(event.reason, "aggregated")
                    return True
            name = f"{self.deployment}.{time.time_ns():x}"
            await self._events.post(_CREATE, body=self._body(name, event, uid, stamp), answer=schema.JSON)
        except KubernetesError:
            self._count(event.reason, "failed")
            return False
        if seen is not None:
            seen.name, seen.count = name, 1
        self._count(event.reason, "created")
        return True

    def _body(self, name: str, event: EventSpec, uid: str | None, stamp: str) -> dict[str, Any]:
        involved: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": self.deployment,
            "namespace": self.namespace,
        }
        if uid:
            involved["uid"] = uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": self.namespace},
            "involvedObject": involved,
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "action": "Scale",
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
        }

    def _count(self, reason: str, outcome: str) -> None:
        if self._api.metrics is not None:
            self._api.metrics.events.labels(reason=reason, outcome=outcome).inc()
