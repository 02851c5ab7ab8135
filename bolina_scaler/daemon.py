"""The daemon: wires the Consul watch, the pure policy and the Kubernetes scale target together.

Does I/O only through the edges it is given. Two named tasks in one ``asyncio.TaskGroup``:

    watch ──► latest snapshot ──► (wake) ──► evaluate ──► decide() ──► patch scale
                                   ▲                         │
                                   └──── recheck_at timer ◄──┘

* ``watch`` follows Consul with blocking queries and only keeps the newest snapshot: bursts
  coalesce, the evaluator never works on a snapshot that is already outdated.
* ``evaluate`` wakes on a new snapshot or when the policy asked to be asked again
  (``Decision.recheck_at``: end of a stabilization window, of a startup grace, of a step
  period), decides, logs one line, and patches when the decision changes the scale.

The Deployment's scale is cached between evaluations and re-read when older than
``kubernetes.resync`` or after any error; a patch carries the cached ``resourceVersion`` as a
precondition, so a change someone made meanwhile turns into a 409, a fresh read and a fresh
decision instead of overwriting them.

Shutdown (SIGTERM/SIGINT → ``stop``): the watch is cancelled at once; a patch already sent is
given until ``shutdown_timeout`` to be acknowledged so its outcome is logged, never half-known.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bolina_scaler.config import Config
from bolina_scaler.decision import Decision
from bolina_scaler.fleet import FleetSnapshot
from bolina_scaler.pacing import Backoff
from bolina_scaler.patching import Conflict, Forbidden, NotFound, Scale, ScaleError, ScaleTarget
from bolina_scaler.policy import Memory, decide, record_scale
from bolina_scaler.watching import ConsulWatch

__all__ = ["Daemon", "DaemonState", "evaluation_fields"]

log = structlog.get_logger("bolina_scaler.daemon")

MAX_CONFLICT_RETRIES = 3


@dataclass(slots=True)
class DaemonState:
    """What the daemon knows right now; read by the HTTP server and tests, written by the daemon."""

    snapshot: FleetSnapshot | None = None
    snapshot_changed_at: float | None = None
    """Loop time at which the newest snapshot arrived (start of the reaction-latency clock)."""
    scale: Scale | None = None
    scale_read_at: float | None = None
    decision: Decision | None = None
    decided_at: float | None = None
    memory: Memory = field(default_factory=Memory)
    patches: int = 0
    last_patch_error: str | None = None
    evaluations: int = 0


def evaluation_fields(decision: Decision, *, now: float) -> dict[str, Any]:
    """The fields of the one log line written per evaluation."""
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
        "clamps": [f"{c.name}: {c.before}→{c.after}{f' ({c.detail})' if c.detail else ''}" for c in decision.clamps],
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


class Daemon:
    """The scaler. ``await Daemon(config, watch=..., target=...).run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: Config,
        *,
        watch: ConsulWatch,
        target: ScaleTarget,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.watch = watch
        self.target = target
        self.state = DaemonState()
        self._clock = clock
        self._changed = asyncio.Event()
        self._recheck_at: float | None = None
        self._kube_backoff = Backoff(config.kubernetes.retry_initial, config.kubernetes.retry_max)
        self._failing: dict[str, str] = {}
        """The last error line per operation ("read", "patch"): each distinct problem is logged once."""
        self._patch_task: asyncio.Task[Scale] | None = None
        self._reacting_to: float | None = None
        """When the Consul change this evaluation reacts to arrived (None: woken by a timer)."""
        self._consumed_change: float | None = None

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop within ``shutdown_timeout``."""
        log.info(
            "starting",
            service=self.config.consul.service,
            consul=self.config.consul.address,
            deployment=self.config.kubernetes.deployment,
            namespace=self.target.namespace,
            dry_run=self.config.dry_run,
        )
        async with asyncio.TaskGroup() as group:
            watching = group.create_task(self._watch_loop(), name="watch")
            evaluating = group.create_task(self._evaluate_loop(), name="evaluate")
            stopping = group.create_task(stop.wait(), name="wait-for-stop")
            await asyncio.wait({watching, evaluating, stopping}, return_when=asyncio.FIRST_COMPLETED)
            watching.cancel()
            await self._finish_pending_patch()
            evaluating.cancel()
            stopping.cancel()
        log.info("stopped", evaluations=self.state.evaluations, patches=self.state.patches)

    async def _finish_pending_patch(self) -> None:
        task = self._patch_task
        if task is None or task.done():
            return
        log.info("waiting for the patch in flight before stopping")
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, ScaleError):
            await asyncio.wait_for(asyncio.shield(task), timeout=self.config.shutdown_timeout)

    # -- watch -----------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        async for snapshot in self.watch.snapshots():
            previous = self.state.snapshot
            if previous is None or previous.index != snapshot.index or previous.trust != snapshot.trust:
                self.state.snapshot_changed_at = self.now()
            self.state.snapshot = snapshot
            self._changed.set()

    # -- evaluate --------------------------------------------------------------------------

    async def _evaluate_loop(self, *, _iterations: int | None = None) -> None:
        while _iterations is None or _iterations > 0:
            await self._wait_for_work()
            self._changed.clear()
            snapshot = self.state.snapshot
            if snapshot is None:
                continue
            self._recheck_at = None
            changed_at = self.state.snapshot_changed_at
            self._reacting_to = changed_at if changed_at != self._consumed_change else None
            self._consumed_change = changed_at
            await self.evaluate(snapshot)
            if _iterations is not None:
                _iterations -= 1

    async def _wait_for_work(self) -> None:
        if self._changed.is_set():
            return
        timeout = None if self._recheck_at is None else max(0.0, self._recheck_at - self.now())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _recheck(self, at: float | None) -> None:
        if at is not None and (self._recheck_at is None or at < self._recheck_at):
            self._recheck_at = at

    async def evaluate(self, snapshot: FleetSnapshot) -> Decision | None:
        """One evaluation: (re)read the scale if needed, decide, log, patch. Returns the decision."""
        decision: Decision | None = None
        for _attempt in range(MAX_CONFLICT_RETRIES):
            scale = await self._current_scale()
            if scale is None:
                return None
            now = self.now()
            decision, memory = decide(
                fleet=snapshot,
                current=scale.replicas,
                config=self.config.policy,
                memory=self.state.memory,
                now=now,
            )
            self.state.memory = memory
            self.state.decision = decision
            self.state.decided_at = now
            self.state.evaluations += 1
            self._recheck(decision.recheck_at)
            log.info("evaluation", **evaluation_fields(decision, now=now))
            if not decision.changes_scale:
                return decision
            if self.config.dry_run:
                log.info(
                    "dry run: not patching",
                    would_patch={"spec": {"replicas": decision.desired}},
                    resource_version=scale.resource_version,
                )
                return decision
            if await self._apply(decision, scale):
                return decision
        log.warning("gave up after repeated conflicts; will re-read and decide again", attempts=MAX_CONFLICT_RETRIES)
        self._recheck(self.now() + self.config.kubernetes.retry_initial)
        return decision

    async def _apply(self, decision: Decision, scale: Scale) -> bool:
        """Patch; True when done (applied or failed for good), False when the decision must be re-made."""
        self._patch_task = asyncio.create_task(
            self.target.patch(decision.desired, resource_version=scale.resource_version), name="patch"
        )
        try:
            new_scale = await asyncio.shield(self._patch_task)
        except Conflict as exc:
            log.info("scale changed under us; re-reading and deciding again", error=str(exc))
            self.state.scale = None
            return False
        except ScaleError as exc:
            self._kube_failed("patch", exc)
            return True
        finally:
            self._patch_task = None
        now = self.now()
        self.state.memory = record_scale(self.state.memory, decision, now=now)
        self.state.scale, self.state.scale_read_at = new_scale, now
        self.state.patches += 1
        self.state.last_patch_error = None
        self._kube_recovered("patch")
        started = self._reacting_to
        log.info(
            "scaled",
            before=decision.current,
            after=new_scale.replicas,
            reason=str(decision.reason),
            reaction_ms=None if started is None else round((now - started) * 1000, 1),
        )
        return True

    async def _current_scale(self) -> Scale | None:
        state = self.state
        fresh = (
            state.scale is not None
            and state.scale_read_at is not None
            and self.now() - state.scale_read_at < self.config.kubernetes.resync
        )
        if fresh:
            return state.scale
        try:
            scale = await self.target.read()
        except ScaleError as exc:
            self._kube_failed("read", exc)
            return None
        previous = state.scale
        state.scale, state.scale_read_at = scale, self.now()
        if previous is not None and previous.replicas != scale.replicas:
            log.info("replicas changed outside the scaler", before=previous.replicas, after=scale.replicas)
        self._kube_recovered("read")
        return scale

    def _kube_failed(self, operation: str, exc: ScaleError) -> None:
        """One clear line per distinct problem (not one per evaluation), then retry with backoff."""
        line = str(exc)
        self.state.last_patch_error = line
        self.state.scale = None
        if self._failing.get(operation) != line:
            level = "error" if isinstance(exc, Forbidden | NotFound) else "warning"
            getattr(log, level)(
                "kubernetes request failed; holding and still watching", operation=operation, error=line
            )
            self._failing[operation] = line
        self._recheck(self.now() + self._kube_backoff.next_delay())

    def _kube_recovered(self, operation: str) -> None:
        if self._failing.pop(operation, None) is not None:
            log.info("kubernetes requests work again", operation=operation)
        if not self._failing:
            self._kube_backoff.reset()
