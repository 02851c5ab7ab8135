"""The daemon: wires the Consul watch, the evaluator and the Kubernetes parts, and runs them as tasks.

Does I/O only through the parts it builds. Named tasks in one ``asyncio.TaskGroup``::

    watch ──► Mailbox (newest snapshot) ──► (wake) ──► evaluate ──► Evaluator ──► [leader?] ──► patch
                                  ▲                       │
                                  └── recheck_at timer ◄──┘
    leader-election (Lease loop) ──► leader / follower ──► (wake: re-read the scale, evaluate)
    events (sends queued Kubernetes Events)           HTTP server (reads ``DaemonState``)

* ``watch`` follows Consul with blocking queries and only keeps the newest snapshot.
* ``evaluate`` wakes on a new snapshot or when the policy asked to be asked again
  (``Decision.recheck_at``: end of a stabilization window, of a startup grace, of a step
  period, of a backoff after a failed request).

Only the leader (``coordination.Leadership``; every replica is leader without leader election)
patches, annotates pods and records Events. Followers keep watching, evaluating (``/v1/decision``
says "follower: would ...") and serving ``/v1/servers``, so a takeover needs no warm-up; a new
leader re-reads the scale before its first patch, and the ``resourceVersion`` precondition makes
a second patch for the same decision fail with 409 even if two replicas ever believed they lead.

Shutdown (SIGTERM/SIGINT/SIGHUP → ``stop``): the watch is cancelled at once; a patch already sent is
given until ``shutdown_timeout`` to be acknowledged so its outcome is logged, never half-known;
then the Lease is released so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from bolina_scaler.actuator.call import KubeApi, KubernetesError
from bolina_scaler.actuator.deletion_cost import DeletionCostSteering
from bolina_scaler.actuator.events import EventRecorder
from bolina_scaler.config import Config
from bolina_scaler.coordination.election import Leadership, default_identity
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.daemon.evaluator import Evaluation, Evaluator
from bolina_scaler.daemon.http_api import HttpServer, build_app
from bolina_scaler.daemon.mailbox import Mailbox
from bolina_scaler.daemon.state import DaemonState
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
    ) -> None:
        """``watch`` and ``kube`` must be entered (``async with``); ``open_daemon`` does both."""
        self.config = config
        self.watch = watch
        self.state = DaemonState()
        self.metrics = metrics if metrics is not None else kube.metrics or Metrics()
        self.http: HttpServer | None = None
        """The running HTTP server (``http.url``), once ``run`` started it."""
        self._clock = clock
        self._mailbox = Mailbox()
        election = config.leader_election
        self.leadership: Leadership | None = None
        if election.enabled:
            self.leadership = Leadership(election, api=kube, clock=self.now, on_change=self._leadership_changed)
            self.state.leader, self.state.identity = False, self.leadership.identity
        self.events: EventRecorder | None = None
        if config.events.enabled:
            identity = self.state.identity or election.identity or default_identity()
            self.events = EventRecorder(config.events, api=kube, instance=identity, clock=self.now)
        steering = DeletionCostSteering(api=kube) if config.policy.scale_down.deletion_cost.enabled else None
        self.evaluator = Evaluator(
            config,
            kube=kube,
            state=self.state,
            metrics=self.metrics,
            clock=self.now,
            may_patch=self.may_patch,
            role=self._role,
            events=self.events,
            steering=steering,
        )

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def may_patch(self) -> bool:
        """Only the leader patches (everyone is leader without leader election)."""
        return self.leadership is None or self.leadership.is_leader()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then stop within ``shutdown_timeout``."""
        log.info(
            "starting",
            service=self.config.consul.service,
            consul=self.config.consul.address,
            deployment=self.config.kubernetes.deployment,
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

    async def evaluate(self, snapshot: FleetSnapshot) -> Evaluation | None:
        """One evaluation now, outside the loop (tests and ``plan``-like callers)."""
        return await self.evaluator.evaluate(snapshot)

    def _role(self) -> str | None:
        if self.leadership is None:
            return None
        self.state.holder = self.leadership.holder
        return "leader" if self.may_patch() else "follower"

    def _leadership_changed(self, leading: bool) -> None:
        self.state.leader = leading
        if self.leadership is not None:
            self.state.holder = self.leadership.holder
        self.metrics.leader.set(1 if leading else 0)
        if leading:
            self.evaluator.forget_scale()  # a new leader re-reads the scale before its first patch
            self._mailbox.poke()

    async def _finish_pending_patch(self, deadline: float) -> None:
        task = self.evaluator.patch_task
        if task is None or task.done():
            return
        log.info("waiting for the patch in flight before stopping")
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - self.now()))
        except TimeoutError:
            task.cancel()
            log.warning("the patch in flight was not answered within shutdown_timeout; stopping without its outcome")
        except (asyncio.CancelledError, KubernetesError):
            pass

    async def _watch_loop(self) -> None:
        async for snapshot in self.watch.snapshots():
            self._mailbox.put(snapshot, now=self.now())
            self.state.snapshot = snapshot
            if snapshot.trusted:
                self.state.trusted_at = snapshot.observed_at
            # Let the evaluator (woken by put) decide and send its patch before this task
            # builds and sends the next blocking query: that much less latency.
            await asyncio.sleep(0)

    async def _evaluate_loop(self, *, _iterations: int | None = None) -> None:
        while _iterations is None or _iterations > 0:
            due = self.evaluator.recheck_at
            await self._mailbox.wait(within=None if due is None else max(0.0, due - self.now()))
            snapshot, reacting_to = self._mailbox.take()
            if snapshot is None:
                continue
            await self.evaluator.evaluate(snapshot, reacting_to=reacting_to)
            if _iterations is not None:
                _iterations -= 1
