"""The daemon: wires the Consul watch, the evaluator and the Kubernetes parts, and runs them as tasks.

Does I/O only through the parts it builds. Named tasks in one ``asyncio.TaskGroup``::

    watch ──► Mailbox (newest snapshot) ──► (wake) ──► evaluate ──► Evaluator ──► [leader?] ──► patch
                                  ▲                       │
                                  └── recheck_at timer ◄──┘
    leader-election (Lease loop) ──► leader / follower ──► (wake: re-read the scale, evaluate)
    events (sends queued Kubernetes Events)           HTTP server (reads ``DaemonState``)
    status (the bolina-scaler/status annotation, poked after every evaluation)

* ``watch`` follows Consul with blocking queries and only keeps the newest snapshot.
* ``evaluate`` wakes on a new snapshot or when the policy asked to be asked again
  (``Decision.recheck_at``: end of a stabilization window, of a startup grace, of a step
  period, of a backoff after a failed request).
* ``pause`` follows the Deployment's pause annotations (``actuator.deployment``): a change wakes
  the evaluator at once; the first evaluation waits for the first read of them.
* ``status`` writes what the leader decided onto the Deployment (``status_writer``), rate-limited;
  the resourceVersion its write moves is adopted by the evaluator.

Only the leader (``coordination.Leadership``; every replica is leader without leader election)
patches, annotates pods and records Events. Followers keep watching, evaluating (``/v1/decision``
says "follower: would ...") and serving ``/v1/servers``, so a takeover needs no warm-up; a new
leader re-reads the scale before its first patch, and the ``resourceVersion`` precondition makes
a second patch for the same decision fail with 409 even if two replicas ever believed they lead.
A dry-run daemon is a *shadow*: it never joins the election (the Lease is never read or
written), never patches, annotates pods or records Events, and logs "dry run: would scale" where
a leader would scale, so it can run beside the real scaler.

Shutdown (SIGTERM/SIGINT/SIGHUP → ``stop``): the watch is cancelled at once; a patch already sent is
given until ``shutdown_timeout`` to be acknowledged so its outcome is logged, never half-known;
then the Lease is released so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import structlog

from bolina_scaler.actuator.call import KubeApi, KubernetesError
from bolina_scaler.actuator.deletion_cost import DeletionCostSteering
from bolina_scaler.actuator.deployment import DeploymentWatch
from bolina_scaler.actuator.events import EventRecorder, EventSpec
from bolina_scaler.actuator.scale import ScaleTarget
from bolina_scaler.actuator.status_annotation import StatusAnnotation, Written
from bolina_scaler.config import Config
from bolina_scaler.coordination.election import Leadership, default_identity
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.role import Role
from bolina_scaler.core.scaler_status import StatusContent, status_of
from bolina_scaler.daemon.evaluator import Evaluation, Evaluator, scale_problems
from bolina_scaler.daemon.http_api import HttpServer, build_app, readiness_problems
from bolina_scaler.daemon.mailbox import Mailbox
from bolina_scaler.daemon.state import DaemonState
from bolina_scaler.daemon.status_writer import StatusWriter
from bolina_scaler.metrics import Metrics
from bolina_scaler.source import ConsulWatch

__all__ = ["Daemon", "open_daemon"]

log = structlog.get_logger("bolina_scaler.daemon")


@contextlib.asynccontextmanager
async def open_daemon(config: Config) -> AsyncIterator[Daemon]:
    """Connect to Consul and Kubernetes as ``config`` says, with one ``Metrics`` for all parts."""
    metrics = Metrics()
    async with (
        ConsulWatch(config.consul, metrics=metrics) as watch,
        KubeApi(config.kubernetes, metrics=metrics) as kube,
    ):
        yield Daemon(config, watch=watch, kube=kube, metrics=metrics)


class Daemon:
    """The scaler. ``await Daemon(config, watch=..., kube=...).run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: Config,
        *,
        watch: ConsulWatch,
        kube: KubeApi,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``watch`` and ``kube`` must be entered (``async with``); ``open_daemon`` does both."""
        self.config = config
        self.watch = watch
        self.kube = kube
        self.metrics = metrics if metrics is not None else kube.metrics or Metrics()
        policy, election, shadow = config.policy, config.leader_election, config.dry_run
        self.metrics.set_policy(
            min_replicas=policy.min_replicas,
            max_replicas=policy.max_replicas,
            target_available_ratio=policy.target_available_ratio,
        )
        self.http: HttpServer | None = None
        """The running HTTP server (``http.url``), once ``run`` started it."""
        self.paused_since: float | None = None
        """When the pause in force began (loop time), as this replica saw it."""
        self._clock = clock
        self._wall_clock = wall_clock
        self._mailbox = Mailbox()
        self._watching: asyncio.Task[None] | None = None
        self.leadership: Leadership | None = None
        if election.enabled and not shadow:
            self.leadership = Leadership(election, api=kube, clock=self.now, on_change=self._leadership_changed)
        self.events: EventRecorder | None = None
        if config.events.enabled and not shadow:
            identity = self.leadership.identity if self.leadership else election.identity or default_identity()
            self.events = EventRecorder(config.events, api=kube, instance=identity, clock=self.now)
        steering = None
        if policy.scale_down.deletion_cost.enabled and not shadow:
            steering = DeletionCostSteering(api=kube)
        self.deployment = DeploymentWatch(api=kube, on_change=self._pause_changed, on_missing=self._reread_scale)
        problems = scale_problems()
        self.evaluator = Evaluator(
            config,
            target=ScaleTarget(kube, problems=problems),
            problems=problems,
            metrics=self.metrics,
            clock=self.now,
            role=lambda: self.role,
            pause=lambda: self.deployment.pause,
            events=self.events,
            steering=steering,
            wall_clock=wall_clock,
        )
        self.status: StatusWriter | None = None
        if config.status.enabled and not shadow:
            self.status = StatusWriter(
                config.status,
                annotation=StatusAnnotation(kube),
                content=self._status_content,
                clock=self.now,
                wall_clock=wall_clock,
                on_written=self._status_written,
            )

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def role(self) -> Role:
        """Leader, follower or shadow: the one place this replica's role is worked out."""
        leading = self.leadership is None or self.leadership.is_leader()
        return Role.of(shadow=self.config.dry_run, leading=leading)

    @property
    def state(self) -> DaemonState:
        """What the daemon knows now, read from the parts that own each fact."""
        mailbox, evaluator, deployment, leadership = self._mailbox, self.evaluator, self.deployment, self.leadership
        trusted_at = mailbox.trusted_at
        watching = self._watching
        return DaemonState(
            snapshot=mailbox.snapshot,
            trusted_at=trusted_at,
            trusted_wall_at=None if trusted_at is None else self._wall_clock() - max(0.0, self.now() - trusted_at),
            scale=evaluator.scale,
            scale_read_at=evaluator.scale_read_at,
            read_error=evaluator.read_error,
            decision=evaluator.decision,
            decided_at=evaluator.decided_at,
            outcome=evaluator.outcome,
            policy_decision=evaluator.policy_decision,
            pause=deployment.pause,
            pause_known=deployment.known,
            pause_error=deployment.read_error,
            paused_since=self.paused_since,
            patches=evaluator.patches,
            applied=evaluator.applied,
            evaluations=evaluator.evaluations,
            role=self.role,
            identity=None if leadership is None else leadership.identity,
            holder=None if leadership is None else leadership.holder,
            watching=watching is not None and not watching.done(),
            evaluating_since=evaluator.evaluating_since,
            unapplied_since=evaluator.unapplied_since,
            kube_succeeded_at=self.kube.succeeded_at,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop within ``shutdown_timeout``."""
        log.info(
            "daemon.starting",
            service=self.config.consul.service,
            consul=self.config.consul.address,
            deployment=self.config.kubernetes.deployment,
            dry_run=self.config.dry_run,
            identity=None if self.leadership is None else self.leadership.identity,
        )
        if self.config.dry_run:
            log.info(
                "daemon.shadow_mode",
                message="dry run: not joining leader election, never patching",
                lease=self.config.leader_election.lease_name,
            )
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            watching = self._watching = group.create_task(self._watch_loop(), name="watch")
            evaluating = group.create_task(self._evaluate_loop(), name="evaluate")
            pausing = group.create_task(self.deployment.run(), name="pause")
            electing = self.leadership and group.create_task(self.leadership.run(), name="leader-election")
            recording = self.events and group.create_task(self.events.run(), name="events")
            reporting = self.status and group.create_task(self.status.run(), name="status")
            stopping = group.create_task(stop.wait(), name="wait-for-stop")
            if self.config.http.enabled:
                app = build_app(state=lambda: self.state, config=self.config, metrics=self.metrics, clock=self.now)
                http = HttpServer(app, host=self.config.http.host, port=self.config.http.port)
                self.http = await stack.enter_async_context(http)
                log.info("http.listening", url=self.http.url)
            await asyncio.wait({watching, evaluating, stopping}, return_when=asyncio.FIRST_COMPLETED)
            # One budget for the whole shutdown (the pod's terminationGracePeriodSeconds is 10 s):
            # a patch in flight, then the Lease release and the Events get only what is left.
            deadline = self.now() + self.config.shutdown_timeout
            watching.cancel()
            await self._finish_pending_patch(deadline)
            evaluating.cancel()
            pausing.cancel()
            if reporting:
                reporting.cancel()
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
        log.info("daemon.stopped", evaluations=self.evaluator.evaluations, patches=self.evaluator.patches)

    async def evaluate(self, snapshot: FleetSnapshot) -> Evaluation | None:
        """One evaluation now, outside the loop (tests and ``plan``-like callers)."""
        return await self.evaluator.evaluate(snapshot)

    def _leadership_changed(self, leading: bool) -> None:
        if leading:
            self._reread_scale()  # a new leader re-reads the scale before its first patch
        if self.status is not None:
            self.status.poke()

    def _status_content(self) -> StatusContent | None:
        """What ``bolina-scaler/status`` should say now; None unless we lead and have decided."""
        if not self.role.may_patch or self.evaluator.patch_task is not None:
            return None  # never beside a scale patch: the write would cost it a 409
        state = self.state
        if state.decision is None:
            return None
        return status_of(
            state.decision,
            outcome=state.outcome,
            pause=state.pause,
            problems=readiness_problems(state, self.config, self.now()),
            leader=state.identity,
        )

    def _status_written(self, written: Written) -> None:
        """Our annotation moved the Deployment's resourceVersion: the evaluator's cached scale adopts it."""
        if written.replicas is not None:
            self.evaluator.adopt_version(written.resource_version, replicas=written.replicas)

    def _pause_changed(self, before: Pause | None, pause: Pause | None, first: bool) -> None:
        """The Deployment's pause annotations were read and differ from before (or were read at last)."""
        if pause == before and not first:
            return
        if pause is not None and pause.problem:
            log.warning("pause.unreadable", message="pause annotation unreadable; paused anyway", problem=pause.problem)
        if pause is None:
            self.paused_since = None
            if before is not None:
                log.info("pause.resumed", was=before.source)
                self._record(EventSpec("Normal", "ScalingResumed", f"Scaling resumed: {before.source} removed"))
        else:
            if before is None:
                self.paused_since = self.now()
            log.info("pause.paused", annotation=pause.source, held_replicas=pause.replicas)
            if not first or before is not None:
                self._record(EventSpec("Normal", "ScalingPaused", f"Scaling {pause.describe()}"))
        # The annotation moved the Deployment's resourceVersion: re-read the scale (else the next
        # patch meets a 409 first), and decide again now: hold, or go to the held count.
        self._reread_scale()

    def _reread_scale(self) -> None:
        """Forget the cached scale and evaluate now, reading it first: after a takeover, a pause
        annotation, or the Deployment deleted (then the 404 holds the scale and turns /readyz red
        at once, not after kubernetes.resync)."""
        self.evaluator.forget_scale()
        self._mailbox.poke()

    def _record(self, event: EventSpec) -> None:
        """One Event for a pause or a resume, from the leader (followers and shadows stay silent)."""
        if self.events is not None and self.role.may_record:
            self.events.record(event)

    async def _finish_pending_patch(self, deadline: float) -> None:
        task = self.evaluator.patch_task
        if task is None or task.done():
            return
        log.info("daemon.draining", message="waiting for the patch in flight before stopping")
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - self.now()))
        except TimeoutError:
            task.cancel()
            log.warning(
                "daemon.drain_timed_out",
                message="the patch in flight was not answered within shutdown_timeout; stopping without its outcome",
            )
        except (asyncio.CancelledError, KubernetesError):
            pass

    async def _watch_loop(self) -> None:
        async for snapshot in self.watch.snapshots():
            self._mailbox.put(snapshot, now=self.now())
            # Let the evaluator (woken by put) decide and send its patch before this task
            # builds and sends the next blocking query: that much less latency.
            await asyncio.sleep(0)

    async def _evaluate_loop(self, *, _iterations: int | None = None) -> None:
        # Never decide before the pause annotations were looked at: a restart must not scale a
        # paused Deployment. The first look ends after one request (request_timeout), read or not.
        await self.deployment.first_look.wait()
        while _iterations is None or _iterations > 0:
            due = self.evaluator.recheck_at
            await self._mailbox.wait(within=None if due is None else max(0.0, due - self.now()))
            snapshot, reacting_to = self._mailbox.take()
            if snapshot is None:
                continue
            await self.evaluator.evaluate(snapshot, reacting_to=reacting_to)
            if self.status is not None:
                self.status.poke()
            if _iterations is not None:
                _iterations -= 1
