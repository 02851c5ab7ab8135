"""One evaluation: the scale as it is, the evaluation step, what was done with it, one log line.

Does I/O only through the parts it is given (a ``ScaleEndpoint``, ``PodSteering``, the Event
recorder). The decision itself is ``core.evaluation.step`` (pure: decide, apply the pause,
say what would be sent). Each evaluation ends in one ``Outcome`` that the evaluator's own facts
(``/v1/decision``), the ``patches_total`` metric, the log line and the Kubernetes Event all take
from ``_conclude``::

    scale (cached, re-read after kubernetes.resync or any error) ──► step() (pure) ──► log line
       │ unreadable: no decision, retry after backoff            [paused: hold, or the held count]
       ▼                                                                    ▼
    no change ──► UNCHANGED      shadow ──► DRY_RUN      follower ──► NOT_LEADER
    a change, leader ──► [scale-down: steer pod deletion costs] ──► patch with resourceVersion
          ├─ ok ────────► PATCHED   (record_scale: step limits, in-flight ledger)
          ├─ 409 ───────► CONFLICT  (re-read, decide again; at most MAX_CONFLICT_RETRIES times,
          │                          then no evaluation until a backoff that grows with every
          │                          round of conflicts has passed)
          └─ error ─────► FAILED    (hold; re-read after a jittered backoff)

The Deployment's scale is cached between evaluations; a patch carries the cached
``resourceVersion`` as a precondition, so a change someone made meanwhile turns into a 409, a
fresh read and a fresh decision instead of overwriting them. Something that keeps writing the
Deployment (another autoscaler, a loop in a script) turns every patch into a 409: after each
round of ``MAX_CONFLICT_RETRIES`` the evaluator waits a jittered backoff between
``kubernetes.retry_initial`` and ``CONFLICT_BACKOFF_MAX`` that doubles round after round (new
Consul data does not cut it short), so a conflict storm costs a few requests and log lines a
minute, not twenty a second. Any other outcome ends the storm.

The evaluator owns what it learns: the scale it read, the last decision and outcome, its
counters. They are read-only attributes; the daemon's ``DaemonState`` view reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from bolina_scaler.actuator.call import Conflict, KubernetesError, Unavailable
from bolina_scaler.actuator.events import EventRecorder, event_for
from bolina_scaler.actuator.scale import Scale
from bolina_scaler.config import Config
from bolina_scaler.core.decision import Decision, Direction
from bolina_scaler.core.evaluation import Step, log_fields, step
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import Memory, record_scale
from bolina_scaler.core.model import Server
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.role import Role
from bolina_scaler.logs import ProblemLog
from bolina_scaler.metrics import Metrics

__all__ = [
    "CONFLICT_BACKOFF_MAX",
    "MAX_CONFLICT_RETRIES",
    "Evaluation",
    "Evaluator",
    "PodSteering",
    "ScaleEndpoint",
    "scale_problems",
]

log = structlog.get_logger("bolina_scaler.daemon")

MAX_CONFLICT_RETRIES = 5
"""Patches tried in one evaluation, each after a fresh read, before the conflict backoff starts."""
CONFLICT_BACKOFF_MAX = 30.0
"""A storm of conflicts is another writer fighting over the scale, not an outage: its backoff grows
to 30 s (kubernetes.retry_max, 1 s shipped, bounds the probe of a server that does not answer)."""
_TIMER_SLACK = 1e-3
APPLIED_KEPT = 100
"""Scale changes remembered for the demo's table and the tests (``Evaluator.applied``)."""


class ScaleEndpoint(Protocol):
    """What the evaluator needs of the Deployment's scale subresource (``actuator.scale.ScaleTarget``;
    ``testing.scale.FakeScaleTarget`` in the tests)."""

    async def read(self) -> Scale: ...

    async def patch(self, replicas: int, *, resource_version: str | None) -> Scale: ...


class PodSteering(Protocol):
    """What the evaluator needs before a scale-down: mark the pods to remove first
    (``actuator.deletion_cost.DeletionCostSteering``)."""

    async def steer(self, servers: Sequence[Server], *, selector: str | None, remove: int) -> object: ...


def scale_problems() -> ProblemLog:
    """The problem log the scale's reads and patches report to: each distinct failure once."""
    return ProblemLog(
        log,
        failing="kubernetes.failing",
        recovered="kubernetes.recovered",
        message="a Kubernetes request failed; holding the scale and still watching",
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A decision and what was done with it."""

    decision: Decision
    outcome: Outcome
    error: str | None = None
    """Why the patch failed (``Outcome.FAILED``)."""


class Evaluator:
    """Evaluates a snapshot against the Deployment's scale; keeps the policy's memory between calls."""

    def __init__(
        self,
        config: Config,
        *,
        target: ScaleEndpoint,
        metrics: Metrics,
        clock: Callable[[], float],
        role: Callable[[], Role] = lambda: Role.LEADER,
        pause: Callable[[], Pause | None] = lambda: None,
        events: EventRecorder | None = None,
        steering: PodSteering | None = None,
        problems: ProblemLog | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``role``: this replica's role now; ``pause``: the pause annotation in force; ``problems``:
        the log ``target`` reports its failures to (``scale_problems()``); ``wall_clock``: unix
        time, to judge the age of the demand servers stamp with their own clocks."""
        self.config = config
        self.memory = Memory()
        """The policy's memory, passed from one step to the next."""
        self.recheck_at: float | None = None
        """When the next evaluation is due even if nothing changes (the earliest asked for)."""
        self.patch_task: asyncio.Task[Scale] | None = None
        """The patch in flight, which shutdown lets finish."""
        self.problems = problems if problems is not None else scale_problems()
        """Each distinct read or patch failure once (``target`` reports to it)."""
        self._target = target
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._role = role
        self._pause = pause
        self._events = events
        self._steering = steering
        self._backoff = Backoff(config.kubernetes.retry_initial, config.kubernetes.retry_max)
        self._retry_at: float | None = None
        """After a failed request, no new one before this time (loop time)."""
        self._conflicts = Backoff(
            config.kubernetes.retry_initial, max(config.kubernetes.retry_max, CONFLICT_BACKOFF_MAX)
        )
        """Grows with every round of MAX_CONFLICT_RETRIES conflicts in a row; reset by any other outcome."""
        self._quiet_until: float | None = None
        """No evaluation before this (loop time): the conflict backoff is running."""
        self._forgotten = 0
        """How many times the scale was forgotten: a read that was in flight meanwhile is used once, not kept."""
        # What it learnt (read-only from outside: the properties below).
        self._scale: Scale | None = None
        self._scale_read_at: float | None = None
        self._read_error: str | None = None
        self._step: Step | None = None
        self._decided_at: float | None = None
        self._outcome: Outcome | None = None
        self._evaluations = 0
        self._patches = 0
        self._applied: deque[tuple[float, Decision]] = deque(maxlen=APPLIED_KEPT)
        self._evaluating_since: float | None = None
        self._unapplied_since: float | None = None

    # -- what it knows ---------------------------------------------------------------------------

    @property
    def scale(self) -> Scale | None:
        """The Deployment's scale as last read or patched (None: not read yet, or forgotten)."""
        return self._scale

    @property
    def scale_read_at(self) -> float | None:
        """When the scale was last read or patched (loop time); None: never, or a conflict made it stale."""
        return self._scale_read_at

    @property
    def read_error(self) -> str | None:
        """Why the last read of the scale failed; None once a read succeeded."""
        return self._read_error

    @property
    def decision(self) -> Decision | None:
        """What the last evaluation decided to do (while paused: the pause's decision)."""
        return None if self._step is None else self._step.decision

    @property
    def policy_decision(self) -> Decision | None:
        """While paused: what the policy itself decided (``decision`` is what was done instead)."""
        return None if self._step is None or not self._step.paused else self._step.policy_decision

    @property
    def decided_at(self) -> float | None:
        return self._decided_at

    @property
    def outcome(self) -> Outcome | None:
        """What the last evaluation did with its decision."""
        return self._outcome

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def patches(self) -> int:
        """Patches of the scale that succeeded."""
        return self._patches

    @property
    def evaluating_since(self) -> float | None:
        """When the evaluation in progress began (loop time); None between evaluations."""
        return self._evaluating_since

    @property
    def unapplied_since(self) -> float | None:
        """Since when a scale change this replica decided to make has failed or met conflicts,
        evaluation after evaluation (loop time); None once a change is made, or none is wanted,
        or it is not ours to make (a follower, a dry run)."""
        return self._unapplied_since

    @property
    def applied(self) -> tuple[tuple[float, Decision], ...]:
        """The last scale changes made (loop time, decision), oldest first."""
        return tuple(self._applied)

    # -- what it does ----------------------------------------------------------------------------

    def adopt_version(self, resource_version: str, *, replicas: int) -> None:
        """Our own write to the Deployment (the status annotation) moved its resourceVersion: keep
        the cached scale with the new version while ``spec.replicas`` is still what we read, so the
        next patch does not meet a 409 of our own making. Anything else: re-read first."""
        scale = self._scale
        if scale is None or self.patch_task is not None:
            return
        if scale.replicas == replicas:
            self._scale = replace(scale, resource_version=resource_version)
        else:
            self.forget_scale()

    def forget_scale(self) -> None:
        """Re-read the scale before the next decision (a new leader, a failed request, the
        Deployment deleted), even when it is forgotten while a read is in flight."""
        self._scale = None
        self._forgotten += 1

    async def evaluate(self, snapshot: FleetSnapshot, *, reacting_to: float | None = None) -> Evaluation | None:
        """One evaluation; None when the scale could not be read. ``reacting_to``: when the
        Consul change this evaluation answers arrived (None: a timer woke it)."""
        self._evaluating_since = self._clock()
        try:
            return await self._evaluate(snapshot, reacting_to)
        finally:
            self._evaluating_since = None

    async def _evaluate(self, snapshot: FleetSnapshot, reacting_to: float | None) -> Evaluation | None:
        self.recheck_at = None
        quiet_until = self._quiet_until
        if quiet_until is not None and self._before(quiet_until):
            self._recheck(quiet_until)  # a conflict storm: new data waits for the backoff too
            return None
        evaluation: Evaluation | None = None
        for _attempt in range(MAX_CONFLICT_RETRIES):
            scale = await self._current_scale()
            if scale is None:
                return None
            decided = self._step_once(snapshot, scale)
            evaluation = await self._act(decided, scale, snapshot, reacting_to)
            if evaluation.outcome is not Outcome.CONFLICT:
                self._conflicts.reset()
                self._quiet_until = None
                return evaluation
        delay = self._conflicts.next_delay()
        self._quiet_until = self._clock() + delay
        log.warning(
            "scale.conflicts_exhausted",
            message="gave up after repeated conflicts; will re-read and decide again",
            attempts=MAX_CONFLICT_RETRIES,
            rounds=self._conflicts.attempts,
            retry_in_s=round(delay, 3),
        )
        self._recheck(self._quiet_until)
        return evaluation

    # -- the steps -----------------------------------------------------------------------------

    async def _current_scale(self) -> Scale | None:
        read_at = self._scale_read_at
        if self._scale is not None and read_at is not None and self._clock() - read_at < self.config.kubernetes.resync:
            return self._scale
        if self._retry_at is not None and self._before(self._retry_at):
            self._recheck(self._retry_at)  # backing off after a failure: a Consul change does not
            return None  # shorten the wait, the timer ends it
        forgotten = self._forgotten
        try:
            scale = await self._target.read()
        except KubernetesError as exc:
            self._read_error = str(exc)
            self._failed(exc)
            return None
        previous = self._scale
        # Forgotten while the answer was on its way (e.g. the Deployment deleted): used once, not kept.
        self._scale = scale if self._forgotten == forgotten else None
        self._scale_read_at, self._read_error = self._clock(), None
        if self._events is not None:
            self._events.uid = scale.uid
        if previous is not None and previous.replicas != scale.replicas:
            log.info("scale.changed_outside", before=previous.replicas, after=scale.replicas)
        self._recovered()
        return scale

    def _step_once(self, snapshot: FleetSnapshot, scale: Scale) -> Step:
        now = self._clock()
        decided = step(
            fleet=snapshot,
            current=scale.replicas,
            config=self.config.policy,
            memory=self.memory,
            now=now,
            wall_now=self._wall_clock(),
            pause=self._pause(),
            role=self._role(),
        )
        self.memory, self._step, self._decided_at = decided.memory, decided, now
        self._evaluations += 1
        self._metrics.observe_decision(decided.decision)
        self._recheck(decided.decision.recheck_at)
        log.info("decision.evaluated", **log_fields(decided.decision, now=now), role=str(decided.role))
        return decided

    async def _act(self, decided: Step, scale: Scale, snapshot: FleetSnapshot, reacting_to: float | None) -> Evaluation:
        decision = decided.decision
        if decided.outcome is Outcome.DRY_RUN:
            log.info(
                "scale.dry_run",
                message="dry run: would scale",
                before=decision.current,
                after=decision.desired,
                reason=str(decision.reason),
                would_patch={"spec": {"replicas": decision.desired}},
                resource_version=scale.resource_version,
            )
        if decided.outcome is not None:
            return self._conclude(Evaluation(decision, decided.outcome))
        if decision.direction is Direction.DOWN and self._steering is not None:
            await self._steering.steer(
                snapshot.servers, selector=scale.selector, remove=decision.current - decision.desired
            )
            if not self._role().may_patch:  # leadership lost while annotating pods
                return self._conclude(Evaluation(decision, Outcome.NOT_LEADER))
        return self._conclude(await self._patch(decision, scale, reacting_to))

    async def _patch(self, decision: Decision, scale: Scale, reacting_to: float | None) -> Evaluation:
        self.patch_task = asyncio.create_task(
            self._target.patch(decision.desired, resource_version=scale.resource_version), name="patch"
        )
        try:
            new_scale = await asyncio.shield(self.patch_task)
        except Conflict as exc:
            # Usually only the resourceVersion moved (the deployment controller writes status
            # after every change); a person's hand-scale is logged by the re-read that follows.
            log.debug(
                "scale.conflict",
                message="resourceVersion moved under the patch; re-reading and deciding again",
                error=str(exc),
            )
            self._scale_read_at = None
            return Evaluation(decision, Outcome.CONFLICT)
        except KubernetesError as exc:
            self._failed(exc)
            return Evaluation(decision, Outcome.FAILED, error=str(exc))
        finally:
            self.patch_task = None
        now = self._clock()
        self.memory = record_scale(self.memory, decision, now=now)
        self._scale, self._scale_read_at = new_scale, now
        self._patches += 1
        self._applied.append((now, decision))
        self._recovered()
        if reacting_to is not None:
            self._metrics.reaction.observe(max(0.0, now - reacting_to))
        log.info(
            "scale.patched",
            before=decision.current,
            after=new_scale.replicas,
            reason=str(decision.reason),
            reaction_ms=None if reacting_to is None else round((now - reacting_to) * 1000, 1),
        )
        return Evaluation(decision, Outcome.PATCHED)

    def _conclude(self, evaluation: Evaluation) -> Evaluation:
        """Record the outcome once, in the words every reader uses: the evaluator's facts, metric, Event."""
        self._outcome = evaluation.outcome
        if evaluation.outcome in {Outcome.FAILED, Outcome.CONFLICT} and evaluation.decision.changes_scale:
            if self._unapplied_since is None:
                self._unapplied_since = self._decided_at if self._decided_at is not None else self._clock()
        else:
            self._unapplied_since = None
        if evaluation.outcome is not Outcome.UNCHANGED:
            self._metrics.patches.labels(outcome=evaluation.outcome).inc()
        if self._events is not None and self._role().may_record:
            # Followers and shadows stay silent: the leader records the one Event.
            event = event_for(evaluation.decision, outcome=evaluation.outcome, error=evaluation.error)
            if event is not None:
                self._events.record(event)
        return evaluation

    # -- timers and failures ---------------------------------------------------------------------

    def _before(self, moment: float) -> bool:
        """Whether ``moment`` is still ahead, by more than a millisecond. A timer set for it may
        fire a rounding error early: at exactly ``moment`` the wait is over, or the evaluator
        would set the same timer again and again without the clock moving."""
        return moment - self._clock() > _TIMER_SLACK

    def _recheck(self, at: float | None) -> None:
        if at is not None and (self.recheck_at is None or at < self.recheck_at):
            self.recheck_at = at

    def _failed(self, exc: KubernetesError) -> None:
        """A read or patch failed (``problems`` has logged it): hold, re-read after a backoff (or
        after the API server's ``Retry-After``, when it asked for longer)."""
        self.forget_scale()
        delay = self._backoff.next_delay()
        if isinstance(exc, Unavailable) and exc.retry_after is not None:
            # Capped by KubeApi already; capped again here, so no other path can park the evaluator.
            delay = max(delay, min(exc.retry_after, self.config.kubernetes.retry_after_max))
        self._retry_at = self._clock() + delay
        self._recheck(self._retry_at)

    def _recovered(self) -> None:
        self._retry_at = None
        if not self.problems.failing:
            self._backoff.reset()
