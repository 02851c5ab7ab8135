"""The daemon: wires the Consul watch, the pure policy and the Kubernetes scale target together.

Does I/O only through the edges it is given. Named tasks in one ``asyncio.TaskGroup``:

    watch ──► latest snapshot ──► (wake) ──► evaluate ──► decide() ──► [leader?] ──► patch scale
                                   ▲                         │            │
                                   └──── recheck_at timer ◄──┘            └─► Event, metrics
    leader-election (Lease loop) ──► leader / follower ──► (wake: re-read the scale, evaluate)
    events (sends queued Kubernetes Events)            HTTP server (reads ``DaemonState``)

* ``watch`` follows Consul with blocking queries and only keeps the newest snapshot: bursts
  coalesce, the evaluator never works on a snapshot that is already outdated.
* ``evaluate`` wakes on a new snapshot or when the policy asked to be asked again
  (``Decision.recheck_at``: end of a stabilization window, of a startup grace, of a step
  period), decides, logs one line, and patches when the decision changes the scale.

The Deployment's scale is cached between evaluations and re-read when older than
``kubernetes.resync`` or after any error; a patch carries the cached ``resourceVersion`` as a
precondition, so a change someone made meanwhile turns into a 409, a fresh read and a fresh
decision instead of overwriting them.

Only the leader (``leadership.Leadership``; every replica is leader without leader election)
patches, annotates pods and records Events. Followers keep watching, evaluating (``/v1/decision``
says "follower: would ...") and serving ``/v1/servers``, so a takeover needs no warm-up; a new
leader re-reads the scale before its first patch, and the ``resourceVersion`` precondition makes
a second patch for the same decision fail with 409 even if two replicas ever believed they lead.
Before a scale-down the leader sets pod deletion costs (``deletion_cost``) so Kubernetes removes
Critical servers first.

Shutdown (SIGTERM/SIGINT → ``stop``): the watch is cancelled at once; a patch already sent is
given until ``shutdown_timeout`` to be acknowledged so its outcome is logged, never half-known;
then the Lease is released so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from bolina_scaler.config import Config
from bolina_scaler.decision import Decision, Direction
from bolina_scaler.deletion_cost import DeletionCostSteering
from bolina_scaler.events import EventRecorder, event_for
from bolina_scaler.fleet import FleetSnapshot
from bolina_scaler.httpapi import HttpServer, build_app
from bolina_scaler.leadership import Leadership, default_identity
from bolina_scaler.metrics import Metrics
from bolina_scaler.pacing import Backoff
from bolina_scaler.patching import Conflict, Forbidden, NotFound, Scale, ScaleError, ScaleTarget, Unavailable
from bolina_scaler.policy import decide, record_scale
from bolina_scaler.state import DaemonState
from bolina_scaler.watching import ConsulWatch

__all__ = ["Daemon", "DaemonState", "evaluation_fields"]

log = structlog.get_logger("bolina_scaler.daemon")

MAX_CONFLICT_RETRIES = 5
_T = TypeVar("_T")
_PATCH_OUTCOMES: dict[type[ScaleError], str] = {
    Forbidden: "forbidden",
    NotFound: "not_found",
    Unavailable: "unavailable",
}


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


class Daemon:
    """The scaler. ``await Daemon(config, watch=..., target=...).run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: Config,
        *,
        watch: ConsulWatch,
        target: ScaleTarget,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``target`` must be entered (``async with``): Leases, Events and pods share its API client."""
        self.config = config
        self.watch = watch
        self.target = target
        self.state = DaemonState()
        self.metrics = metrics if metrics is not None else Metrics()
        self.http: HttpServer | None = None
        """The running HTTP server (``http.url``), once ``run`` started it."""
        self._clock = clock
        watch.on_query = self.metrics.observe_consul_query
        kube, timeout = config.kubernetes, config.kubernetes.request_timeout
        election = config.leader_election
        self.leadership: Leadership | None = None
        if election.enabled:
            self.leadership = Leadership(
                election,
                api_client=target.api_client,
                namespace=target.namespace,
                request_timeout=timeout,
                clock=self.now,
                metrics=self.metrics,
                on_change=self._leadership_changed,
            )
            self.state.leader, self.state.identity = False, self.leadership.identity
        self.events: EventRecorder | None = None
        if config.events.enabled:
            self.events = EventRecorder(
                config.events,
                api_client=target.api_client,
                namespace=target.namespace,
                deployment=kube.deployment,
                instance=self.state.identity or election.identity or default_identity(),
                request_timeout=timeout,
                clock=self.now,
                metrics=self.metrics,
            )
        self.steering: DeletionCostSteering | None = None
        if config.policy.scale_down.deletion_cost.enabled:
            self.steering = DeletionCostSteering(
                api_client=target.api_client,
                namespace=target.namespace,
                request_timeout=timeout,
                clock=self.now,
                metrics=self.metrics,
            )
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
            identity=self.state.identity,
        )
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            watching = group.create_task(self._watch_loop(), name="watch")
            self.state.watch_task = watching
            evaluating = group.create_task(self._evaluate_loop(), name="evaluate")
            electing = self.leadership and group.create_task(self.leadership.run(), name="leader-election")
            recording = self.events and group.create_task(self.events.run(), name="events")
            stopping = group.create_task(stop.wait(), name="wait-for-stop")
            if self.config.http.enabled:
                app = build_app(state=self.state, config=self.config, metrics=self.metrics, clock=self.now)
                http = HttpServer(app, host=self.config.http.host, port=self.config.http.port)
                self.http = await stack.enter_async_context(http)
                log.info("http server listening", url=self.http.url)
            await asyncio.wait({watching, evaluating, stopping}, return_when=asyncio.FIRST_COMPLETED)
            # One budget for the whole shutdown (the pod's terminationGracePeriodSeconds is 10 s):
            # a patch in flight, then the Lease release and the Events get only what is left.
            deadline = self.now() + self.config.shutdown_timeout
            watching.cancel()
            await self._finish_pending_patch(deadline)
            evaluating.cancel()
            if electing and self.leadership is not None:
                electing.cancel()
                await asyncio.wait({electing})
                left = min(self.config.kubernetes.request_timeout, deadline - self.now())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.leadership.release(), max(0.0, left))
            if recording and self.events is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.events.flush(), max(0.0, min(1.0, deadline - self.now())))
                recording.cancel()
            stopping.cancel()
        log.info("stopped", evaluations=self.state.evaluations, patches=self.state.patches)

    def may_patch(self) -> bool:
        """Only the leader patches (everyone is leader without leader election)."""
        return self.leadership is None or self.leadership.is_leader()

    def _leadership_changed(self, leading: bool) -> None:
        self.state.leader = leading
        if self.leadership is not None:
            self.state.holder = self.leadership.holder
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            self.state.scale = None  # a new leader re-reads the scale before its first patch
            self._changed.set()

    async def _finish_pending_patch(self, deadline: float) -> None:
        task = self._patch_task
        if task is None or task.done():
            return
        log.info("waiting for the patch in flight before stopping")
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - self.now()))
        except TimeoutError:
            task.cancel()
            log.warning("the patch in flight was not answered within shutdown_timeout; stopping without its outcome")
        except (asyncio.CancelledError, ScaleError):
            pass

    # -- watch -----------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        async for snapshot in self.watch.snapshots():
            previous = self.state.snapshot
            if previous is None or previous.index != snapshot.index or previous.trust != snapshot.trust:
                self.state.snapshot_changed_at = self.now()
            self.state.snapshot = snapshot
            if snapshot.trusted:
                self.state.trusted_at = snapshot.observed_at
            self._changed.set()
            # Let the evaluator (woken by set()) decide and send its patch before this task
            # builds and sends the next blocking query (~1 ms of CPU): that much less latency.
            await asyncio.sleep(0)

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
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, one more
        # loop turn between the watch's set() and this task running.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

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
            state = self.state
            state.memory, state.decision, state.decided_at = memory, decision, now
            state.evaluations += 1
            self.metrics.observe_decision(decision)
            self._recheck(decision.recheck_at)
            leader = self.may_patch()
            fields = evaluation_fields(decision, now=now)
            if self.leadership is not None:
                state.holder = self.leadership.holder
                fields["role"] = "leader" if leader else "follower"
            log.info("evaluation", **fields)
            if not decision.changes_scale:
                state.outcome = "unchanged"
                self._record_event(decision, "unchanged")
                return decision
            if not leader:
                state.outcome = "follower"
                self.metrics.patches.labels(outcome="not_leader").inc()
                return decision
            if self.config.dry_run:
                state.outcome = "dry_run"
                self.metrics.patches.labels(outcome="dry_run").inc()
                log.info(
                    "dry run: not patching",
                    would_patch={"spec": {"replicas": decision.desired}},
                    resource_version=scale.resource_version,
                )
                return decision
            if decision.direction is Direction.DOWN and self.steering is not None:
                await self.steering.steer(
                    snapshot.servers, selector=scale.selector, remove=decision.current - decision.desired
                )
            if await self._apply(decision, scale):
                return decision
        log.warning("gave up after repeated conflicts; will re-read and decide again", attempts=MAX_CONFLICT_RETRIES)
        self._recheck(self.now() + self.config.kubernetes.retry_initial)
        return decision

    async def _apply(self, decision: Decision, scale: Scale) -> bool:
        """Patch; True when done (applied or failed for good), False when the decision must be re-made."""
        if not self.may_patch():  # leadership lost while deciding or annotating pods
            self.state.outcome = "follower"
            self.metrics.patches.labels(outcome="not_leader").inc()
            return True
        self._patch_task = asyncio.create_task(
            self._timed("scale_patch", self.target.patch(decision.desired, resource_version=scale.resource_version)),
            name="patch",
        )
        try:
            new_scale = await asyncio.shield(self._patch_task)
        except Conflict as exc:
            # Usually only the resourceVersion moved (the deployment controller writes status
            # after every change); a person's hand-scale is logged by the re-read that follows.
            log.debug("resourceVersion moved under the patch; re-reading and deciding again", error=str(exc))
            self.state.scale_read_at, self.state.outcome = None, "conflict"
            self.metrics.patches.labels(outcome="conflict").inc()
            return False
        except ScaleError as exc:
            self.state.outcome = "failed"
            self.metrics.patches.labels(outcome=_PATCH_OUTCOMES.get(type(exc), "error")).inc()
            self._record_event(decision, "failed", error=str(exc))
            self._kube_failed("patch", exc)
            return True
        finally:
            self._patch_task = None
        now = self.now()
        self.state.outcome = "patched"
        self.metrics.patches.labels(outcome="applied").inc()
        self._record_event(decision, "applied")
        self.state.memory = record_scale(self.state.memory, decision, now=now)
        self.state.scale, self.state.scale_read_at = new_scale, now
        self.state.patches += 1
        self.state.applied.append((now, decision))
        self.state.last_patch_error = None
        self._kube_recovered("patch")
        started = self._reacting_to
        if started is not None:
            self.metrics.reaction.observe(max(0.0, now - started))
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
            scale = await self._timed("scale_read", self.target.read())
        except ScaleError as exc:
            state.read_error = str(exc)
            self._kube_failed("read", exc)
            return None
        previous = state.scale
        state.scale, state.scale_read_at, state.read_error = scale, self.now(), None
        if self.events is not None:
            self.events.uid = scale.uid
        if previous is not None and previous.replicas != scale.replicas:
            log.info("replicas changed outside the scaler", before=previous.replicas, after=scale.replicas)
        self._kube_recovered("read")
        return scale

    async def _timed(self, operation: str, call: Awaitable[_T]) -> _T:
        with self.metrics.kube_call(operation, self.now):
            return await call

    def _record_event(self, decision: Decision, outcome: str, *, error: str | None = None) -> None:
        if self.events is None or self.config.dry_run or not self.may_patch():
            return  # followers stay silent: the leader records the one Event
        event = event_for(decision, outcome=outcome, error=error)
        if event is not None:
            self.events.record(event)

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
