"""One evaluation: the scale as it is, the policy's decision, what was done with it, one log line.

Does I/O only through the parts it is given (the scale target, deletion-cost steering, the Event
recorder). Each evaluation ends in one ``Outcome`` that the state (``/v1/decision``), the
``patches_total`` metric, the log line and the Kubernetes Event all take from ``_conclude``::

    scale (cached, re-read after kubernetes.resync or any error) ──► decide() (pure) ──► log line
       │ unreadable: no decision, retry after backoff      [paused: hold, or the held count]
       ▼                                                                    ▼
    no change ──► UNCHANGED      dry_run ──► DRY_RUN      follower ──► NOT_LEADER
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
``kubernetes.retry_initial`` and ``kubernetes.retry_max`` that doubles round after round (new
Consul data does not cut it short), so a conflict storm costs a few requests and log lines a
minute, not twenty a second. Any other outcome ends the storm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bolina_scaler.actuator.call import Conflict, KubeApi, KubernetesError, Unavailable
from bolina_scaler.actuator.deletion_cost import DeletionCostSteering
from bolina_scaler.actuator.events import EventRecorder, event_for
from bolina_scaler.actuator.scale import Scale, ScaleTarget
from bolina_scaler.config import Config
from bolina_scaler.core.decision import Decision, Direction
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import Memory, record_scale
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.core.pause import Pause, paused_decision
from bolina_scaler.core.policy import decide
from bolina_scaler.daemon.state import DaemonState
from bolina_scaler.logs import ProblemLog
from bolina_scaler.metrics import Metrics

__all__ = ["MAX_CONFLICT_RETRIES", "Evaluation", "Evaluator", "evaluation_fields"]

log = structlog.get_logger("bolina_scaler.daemon")

MAX_CONFLICT_RETRIES = 5
CONFLICT_BACKOFF_MAX = 30.0
_TIMER_SLACK = 1e-3
"""A storm of conflicts is another writer fighting over the scale, not an outage: its backoff grows
to 30 s (kubernetes.retry_max, 1 s shipped, bounds the probe of a server that does not answer)."""


def evaluation_fields(decision: Decision, *, now: float) -> dict[str, Any]:
    """The fields of the one log line written per evaluation (and of ``plan``'s report)."""
    inputs = decision.inputs
    fields: dict[str, Any] = {
        "consul_index": inputs.consul_index,
        "trusted": inputs.trusted,
        "registered": inputs.registered,
        "available": inputs.available,
        "warning": inputs.warning,
        "critical": inputs.critical,
        "pending": inputs.pending,
        "current": decision.current,
        "desired": decision.desired,
        "direction": str(decision.direction),
        "reason": str(decision.reason),
        "why": decision.message,
        "clamps": [str(clamp) for clamp in decision.clamps],
    }
    if inputs.trust_problems:
        fields["trust_problems"] = list(inputs.trust_problems)
    if inputs.pending_expired:
        fields["pending_expired"] = inputs.pending_expired
    if inputs.external_change is not None:
        fields["external_change_from"] = inputs.external_change
    if decision.notes:
        fields["notes"] = list(decision.notes)
    if decision.recheck_at is not None:
        fields["recheck_in_s"] = round(max(0.0, decision.recheck_at - now), 3)
    return fields


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
        kube: KubeApi,
        state: DaemonState,
        metrics: Metrics,
        clock: Callable[[], float],
        may_patch: Callable[[], bool],
        role: Callable[[], str | None],
        events: EventRecorder | None = None,
        steering: DeletionCostSteering | None = None,
        pause: Callable[[], Pause | None] = lambda: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``may_patch``: whether this replica may patch now; ``role``: ``leader``/``follower``/``shadow``
        for the log line (None without leader election); ``pause``: the pause annotation in force;
        ``wall_clock``: unix time, to judge the age of the demand servers stamp with their own clocks."""
        self.config = config
        self.state = state
        self.memory = Memory()
        self.recheck_at: float | None = None
        """When the next evaluation is due even if nothing changes (the earliest asked for)."""
        self.patch_task: asyncio.Task[Scale] | None = None
        """The patch in flight, which shutdown lets finish."""
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._may_patch = may_patch
        self._role = role
        self._events = events
        self._steering = steering
        self._pause = pause
        self._backoff = Backoff(config.kubernetes.retry_initial, config.kubernetes.retry_max)
        self._retry_at: float | None = None
        """After a failed request, no new one before this time (loop time)."""
        self._conflicts = Backoff(
            config.kubernetes.retry_initial, max(config.kubernetes.retry_max, CONFLICT_BACKOFF_MAX)
        )
        """Grows with every round of MAX_CONFLICT_RETRIES conflicts in a row; reset by any other outcome."""
        self._quiet_until: float | None = None
        """No evaluation before this (loop time): the conflict backoff is running."""
        self.problems = ProblemLog(
            log,
            failing="kubernetes.failing",
            recovered="kubernetes.recovered",
            message="a Kubernetes request failed; holding the scale and still watching",
        )
        """Each distinct read or patch failure once (``ScaleTarget`` reports to it)."""
        self._target = ScaleTarget(kube, problems=self.problems)
        self._forgotten = 0
        """How many times the scale was forgotten: a read that was in flight meanwhile is used once, not kept."""

    def forget_scale(self) -> None:
        """Re-read the scale before the next decision (a new leader, a failed request, the
        Deployment deleted), even when it is forgotten while a read is in flight."""
        self.state.scale = None
        self._forgotten += 1

    async def evaluate(self, snapshot: FleetSnapshot, *, reacting_to: float | None = None) -> Evaluation | None:
        """One evaluation; None when the scale could not be read. ``reacting_to``: when the
        Consul change this evaluation answers arrived (None: a timer woke it)."""
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
            decision = self._decide(snapshot, scale)
            evaluation = await self._act(decision, scale, snapshot, reacting_to)
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
        state = self.state
        fresh = (
            state.scale is not None
            and state.scale_read_at is not None
            and self._clock() - state.scale_read_at < self.config.kubernetes.resync
        )
        if fresh:
            return state.scale
        if self._retry_at is not None and self._before(self._retry_at):
            self._recheck(self._retry_at)  # backing off after a failure: a Consul change does not
            return None  # shorten the wait, the timer ends it
        forgotten = self._forgotten
        try:
            scale = await self._target.read()
        except KubernetesError as exc:
            state.read_error = str(exc)
            self._failed(exc)
            return None
        previous = state.scale
        # Forgotten while the answer was on its way (e.g. the Deployment deleted): used once, not kept.
        kept = scale if self._forgotten == forgotten else None
        state.scale, state.scale_read_at, state.read_error = kept, self._clock(), None
        if self._events is not None:
            self._events.uid = scale.uid
        if previous is not None and previous.replicas != scale.replicas:
            log.info("scale.changed_outside", before=previous.replicas, after=scale.replicas)
        self._recovered()
        return scale

    def _decide(self, snapshot: FleetSnapshot, scale: Scale) -> Decision:
        now = self._clock()
        decision, self.memory = decide(
            fleet=snapshot,
            current=scale.replicas,
            config=self.config.policy,
            memory=self.memory,
            now=now,
            wall_now=self._wall_clock(),
        )
        state = self.state
        pause = self._pause()
        state.policy_decision = decision if pause is not None else None
        if pause is not None:  # the policy still decides and explains; the pause says what is done
            decision = paused_decision(decision, pause)
        state.decision, state.decided_at = decision, now
        state.evaluations += 1
        self._metrics.observe_decision(decision)
        self._recheck(decision.recheck_at)
        fields = evaluation_fields(decision, now=now)
        role = self._role()
        if role is not None:
            fields["role"] = role
        log.info("decision.evaluated", **fields)
        return decision

    async def _act(
        self, decision: Decision, scale: Scale, snapshot: FleetSnapshot, reacting_to: float | None
    ) -> Evaluation:
        if not decision.changes_scale:
            return self._conclude(Evaluation(decision, Outcome.UNCHANGED))
        if self.config.dry_run:
            log.info(
                "scale.dry_run",
                message="dry run: would scale",
                before=decision.current,
                after=decision.desired,
                reason=str(decision.reason),
                would_patch={"spec": {"replicas": decision.desired}},
                resource_version=scale.resource_version,
            )
            return self._conclude(Evaluation(decision, Outcome.DRY_RUN))
        if not self._may_patch():
            return self._conclude(Evaluation(decision, Outcome.NOT_LEADER))
        if decision.direction is Direction.DOWN and self._steering is not None:
            await self._steering.steer(
                snapshot.servers, selector=scale.selector, remove=decision.current - decision.desired
            )
            if not self._may_patch():  # leadership lost while annotating pods
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
            self.state.scale_read_at = None
            return Evaluation(decision, Outcome.CONFLICT)
        except KubernetesError as exc:
            self.state.patch_error = str(exc)
            self._failed(exc)
            return Evaluation(decision, Outcome.FAILED, error=str(exc))
        finally:
            self.patch_task = None
        now = self._clock()
        self.memory = record_scale(self.memory, decision, now=now)
        state = self.state
        state.scale, state.scale_read_at, state.patch_error = new_scale, now, None
        state.patches += 1
        state.applied.append((now, decision))
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
        """Record the outcome once, in the words every reader uses: state, metric, Event."""
        self.state.outcome = evaluation.outcome
        if evaluation.outcome is not Outcome.UNCHANGED:
            self._metrics.patches.labels(outcome=evaluation.outcome).inc()
        if self._events is not None and not self.config.dry_run and self._may_patch():
            # Followers stay silent: the leader records the one Event.
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
            delay = max(delay, exc.retry_after)
        self._retry_at = self._clock() + delay
        self._recheck(self._retry_at)

    def _recovered(self) -> None:
        self._retry_at = None
        if not self.problems.failing:
            self._backoff.reset()
