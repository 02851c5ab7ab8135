"""Every loop backs off (issue 20, #2): driven against hostile answers on a fake clock, counting requests.

The invariant, for every loop of the daemon and the ``report`` sidecar: while it is not working, no
path through it repeats faster than ``retry_initial`` (at most two requests, a GET and its watch,
or a non-blocking read and its blocking query, within any ``retry_initial``), the waits grow, and
each distinct problem is logged once and the recovery once.

* Property-based: the Deployment watch and the Consul watch over stub I/O (no sockets, so each
  example runs minutes of loop time at once) answering any sequence of hostile answers.
* Tables against the fakes (real HTTP, ``looptime``): 410 Gone every time, a watch closed at once,
  garbage, 503, mixes; a blocking query that does not block; Events refused; the sidecar's agent
  failing while its heartbeat is due; and the whole daemon while its Deployment watch is answered
  410 every time. Each stops early once a hot loop shows, so it fails fast on a loop that spins.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import looptime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import Forbidden, KubeApi, Malformed, NotFound, Unavailable
from bolina_scaler.actuator.deployment import DeploymentWatch
from bolina_scaler.actuator.events import EventRecorder, EventSpec
from bolina_scaler.config import parse_config
from bolina_scaler.core.model import ConsulIndex
from bolina_scaler.core.pause import PAUSED
from bolina_scaler.reporter.reporter import Reporter
from bolina_scaler.source import ConsulWatch
from bolina_scaler.source.answer import Failure, Response
from bolina_scaler.testing.consul import FakeConsul, Fault
from bolina_scaler.testing.kubernetes import FakeKubernetes
from tests.harness import KUBE_NS, NS, World, logged, running, until
from tests.test_reporting import CLASSIFIER, HostileAgent, MetricsServer, settings_for

RETRY_INITIAL = 0.5
CONFIG = parse_config({"kubernetes": {"namespace": "ns"}, "consul": {"wait": "5m"}})
HOSTILE_S = 120.0
"""Loop time each hostile script runs for."""
_CAP = int(4 * (HOSTILE_S + 60) / RETRY_INITIAL)
"""A stub that saw this many requests parks the loop for good: a hot loop fails the test, fast."""


def _loop_time(coro: Any) -> Any:
    """Run ``coro`` on a fresh looptime loop (time moves only when the loop would wait)."""
    loop = looptime.new_event_loop(start=0.0)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _two_per_retry_initial(times: list[float]) -> list[tuple[float, float, float]]:
    """Triples of consecutive request times closer than ``retry_initial`` (empty: the invariant holds)."""
    return [(a, b, c) for a, b, c in zip(times, times[1:], times[2:], strict=False) if c - a < RETRY_INITIAL - 1e-6]


def _once_per_episode(lines: list[dict[str, Any]], failing: str, recovered: str) -> list[str]:
    """Problems logged twice between two recoveries (empty: each distinct problem once)."""
    seen: set[str] = set()
    twice = []
    for line in lines:
        if line["event"] == recovered:
            seen.clear()
        elif line["event"] == failing:
            twice += [line["error"]] if line["error"] in seen else []
            seen.add(line["error"])
    return twice


# -- the Deployment watch over stub I/O -------------------------------------------------------------

_GETS = st.sampled_from(["ok", "ok", "unavailable", "garbage", "forbidden", "missing"])
_WATCHES = st.one_of(
    st.sampled_from(["gone", "close", "garbage", "error", "deleted", "unavailable", "broke", "event-then-gone"]),
    st.tuples(st.just("open"), st.sampled_from([0.0, 0.3, 0.99, 1.5, 40.0])),
)


class _StubStream:
    """A watch response: ``async with`` it, then ``content.iter_any()`` gives the lines."""

    def __init__(self, lines: list[bytes], hold: float, broke: bool) -> None:
        self.content = self
        self._lines, self._hold, self._broke = lines, hold, broke

    async def __aenter__(self) -> _StubStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def iter_any(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line
        await asyncio.sleep(self._hold)
        if self._broke:
            raise aiohttp.ClientPayloadError("cut")


class _StubKube:
    """What ``DeploymentWatch`` needs of a ``KubeApi``, answering from two scripts, round and round."""

    def __init__(self, gets: list[str], watches: list[Any]) -> None:
        self.namespace = "ns"
        self.config = CONFIG.kubernetes
        self.requests: list[float] = []
        self.healed = False
        self.annotations: dict[str, str] = {}
        self._gets, self._watches = gets, watches
        self._version = 100

    def resource(self, *_: Any, **__: Any) -> _StubKube:
        return self

    def item(self, _name: str) -> _StubKube:
        return self

    def _object(self) -> dict[str, Any]:
        self._version += 1
        return {"metadata": {"resourceVersion": str(self._version), "annotations": self.annotations}}

    async def _arrived(self) -> None:
        self.requests.append(asyncio.get_running_loop().time())
        if len(self.requests) > _CAP:
            await asyncio.Event().wait()

    async def get(self, _operation: Any, *, answer: Any, limit: int) -> Any:
        await self._arrived()
        how = "ok" if self.healed else self._gets[len(self.requests) % len(self._gets)]
        if how == "unavailable":
            raise Unavailable("unavailable: could not get deployment 'bolina', last: HTTP 503", status=503)
        if how == "garbage":
            raise Malformed("malformed answer: get deployment 'bolina' returned not JSON")
        if how == "forbidden":
            raise Forbidden("forbidden (HTTP 403): cannot get deployments 'bolina'", status=403)
        if how == "missing":
            raise NotFound("not found (HTTP 404): no deployment 'bolina'", status=404)
        return answer.decode(json.dumps(self._object()).encode())

    async def watch(self, _operation: Any, *, query: Any, request_timeout: Any) -> _StubStream:
        await self._arrived()
        how = ("open", 300.0) if self.healed else self._watches[len(self.requests) % len(self._watches)]
        status = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
        event = {"type": "MODIFIED", "object": self._object()}
        lines = {
            "gone": [status],
            "error": [{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd is sad"}}],
            "deleted": [{"type": "DELETED", "object": self._object()}],
            "event-then-gone": [event, status],
        }
        if how == "unavailable":
            raise Unavailable("unavailable: could not watch deployments, last: HTTP 503", status=503)
        if how == "garbage":
            return _StubStream([b"<html>502</html>\n"], 0.0, False)
        if isinstance(how, tuple):
            return _StubStream([json.dumps(event).encode() + b"\n"] if self.healed else [], how[1], False)
        return _StubStream([json.dumps(line).encode() + b"\n" for line in lines.get(how, [])], 0.0, how == "broke")


class TestDeploymentWatchAgainstAnyAnswers:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_GETS, min_size=1, max_size=5), st.lists(_WATCHES, min_size=1, max_size=8))
    def test_never_two_turns_within_retry_initial(self, gets: list[str], watches: list[Any]) -> None:
        """Any mix of GET and watch answers for two minutes: never more than a GET and its watch
        within retry_initial; each distinct problem logged once per episode; once the API server
        behaves, one recovery line and the pause annotation read."""
        kube = _StubKube(gets, watches)

        async def scenario() -> tuple[list[dict[str, Any]], DeploymentWatch]:
            watch = DeploymentWatch(api=kube)  # type: ignore[arg-type]  # the stub
            with capture_logs() as logs:
                task = asyncio.create_task(watch.run())
                await asyncio.sleep(HOSTILE_S)
                kube.healed, kube.annotations = True, {PAUSED: "true"}
                await asyncio.sleep(60)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return logs, watch

        logs, watch = _loop_time(scenario())
        hostile = [t for t in kube.requests if t < HOSTILE_S]
        assert _two_per_retry_initial(hostile) == []
        assert len(hostile) <= 2 * HOSTILE_S / RETRY_INITIAL + 2
        assert _once_per_episode(logs, "pause.read_failing", "pause.read_recovered") == []
        lines = [line["event"] for line in logs if line["event"].startswith("pause.read_")]
        assert not lines or lines[-1] == "pause.read_recovered", lines
        assert watch.pause is not None, "healed: the annotation is read"


# -- the Consul watch over stub I/O ---------------------------------------------------------------

_CONSUL = st.one_of(
    st.sampled_from(["unblocked", "older", "500", "garbage", "unreachable", "stale"]),
    st.tuples(st.just("parked"), st.sampled_from([0.0, 0.4, 1.2, 30.0])),
)


class _StubTransport:
    """``HealthTransport`` answering from a script, round and round (then, healed, as Consul does)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.requests: list[float] = []
        self.healed = False
        self.index = 100

    async def __aenter__(self) -> _StubTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def request_timeout(self, index: ConsulIndex | None) -> float:
        return 330.0

    def _answer(self, index: int, **headers: str) -> Response:
        return Response(200, {"X-Consul-Index": str(index), **headers}, b"[]")

    async def get(self, index: ConsulIndex | None) -> Response:
        self.requests.append(asyncio.get_running_loop().time())
        if len(self.requests) > _CAP:
            await asyncio.Event().wait()
        how = ("parked", 300.0) if self.healed else self.script[len(self.requests) % len(self.script)]
        if not index:
            return self._answer(self.index)  # a non-blocking read: whatever the script says, current
        if how == "older":
            return self._answer(max(1, index - 7))
        if how == "500":
            return Response(500, {}, b"rpc error: internal error")
        if how == "garbage":
            return self._answer(index, **{"Content-Type": "text/html"})._replace(body=b"<html>")
        if how == "unreachable":
            raise Failure("consul unreachable: ClientConnectorError")
        if how == "stale":
            return self._answer(index, **{"X-Consul-KnownLeader": "false"})
        if isinstance(how, tuple):
            await asyncio.sleep(how[1])
        return self._answer(index)  # "unblocked", or a wait that ran out: the same index


class TestConsulWatchAgainstAnyAnswers:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_CONSUL, min_size=1, max_size=8))
    def test_never_two_turns_within_retry_initial(self, script: list[Any]) -> None:
        """Any mix of hostile answers for two minutes: never more than a non-blocking read and its
        blocking query within retry_initial; each problem logged once per episode; recovered once
        when queries block again."""
        transport = _StubTransport(script)

        async def scenario() -> list[dict[str, Any]]:
            with capture_logs() as logs:
                watch = ConsulWatch(CONFIG.consul)
                watch._transport = transport  # type: ignore[assignment]  # the stub, before it connects
                async with watch:

                    async def drain() -> None:
                        async for _ in watch.snapshots():
                            pass

                    task = asyncio.create_task(drain())
                    await asyncio.sleep(HOSTILE_S)
                    transport.healed = True
                    await asyncio.sleep(60)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            return logs

        logs = _loop_time(scenario())
        hostile = [t for t in transport.requests if t < HOSTILE_S]
        assert _two_per_retry_initial(hostile) == []
        for area in ("consul", "consul.blocking"):
            assert _once_per_episode(logs, f"{area}.failing", f"{area}.recovered") == []
            lines = [line["event"] for line in logs if line["event"] in {f"{area}.failing", f"{area}.recovered"}]
            assert not lines or lines[-1] == f"{area}.recovered", lines


# -- the Deployment watch against the fake API server -------------------------------------------------


@contextlib.asynccontextmanager
async def deployment_watch(kube: FakeKubernetes, tmp_path: Any) -> AsyncIterator[DeploymentWatch]:
    config = parse_config({"kubernetes": {"namespace": KUBE_NS, "kubeconfig": str(kube.kubeconfig(tmp_path / "kc"))}})
    async with KubeApi(config.kubernetes) as api:
        watch = DeploymentWatch(api=api)
        task = asyncio.create_task(watch.run(), name="pause")
        try:
            await until(lambda: watch.known and bool(kube._watchers))
            yield watch
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def run_hostile(seconds: float, requests: Callable[[], list[float]]) -> list[float]:
    """Let the loop run ``seconds`` of loop time, or until it shows a hot loop; the request times."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end and len(requests()) < 4 * seconds / RETRY_INITIAL:  # noqa: ASYNC110 (polls a count)
        await asyncio.sleep(0.05)
    return requests()


def deployment_requests(kube: FakeKubernetes, since: float) -> Callable[[], list[float]]:
    return lambda: [
        a.at for a in kube.arrivals if "/deployments" in a.path and "/scale" not in a.path and a.at >= since
    ]


HOSTILE_WATCHES: dict[str, tuple[Any, float]] = {
    # how the watches answer, and how long the waits grow to within the minute
    "410 Gone every time": ("gone", 4.0),
    "closed at once": ("close", 4.0),
    "garbage": ("garbage", 4.0),
    "503": ("unavailable", 0.0),  # no answer: the outage probe, retry_initial to retry_max (1 s)
    "a mix": (["gone", "close", "garbage", "gone", "unavailable"], 4.0),
}


@pytest.mark.looptime
class TestDeploymentWatchAgainstTheFake:
    @pytest.mark.parametrize(("hostile", "grown"), list(HOSTILE_WATCHES.values()), ids=list(HOSTILE_WATCHES))
    async def test_backs_off_logs_once_and_recovers(
        self, kube: FakeKubernetes, tmp_path: Any, hostile: Any, grown: float
    ) -> None:
        """A minute of a hostile watch: at most 2 requests per retry_initial, the waits grow (to
        seconds; to retry_max without an answer), one line per distinct problem; healed, one
        recovery line and the pause is read."""
        with capture_logs() as logs:
            async with deployment_watch(kube, tmp_path) as watch:
                began = asyncio.get_running_loop().time()
                kube.break_watches(hostile)
                kube.cut_watches()
                times = await run_hostile(60.0, deployment_requests(kube, began))
                kube.break_watches(None)
                kube.annotate(KUBE_NS, "bolina", {PAUSED: "true"})
                await until(lambda: watch.pause is not None, within=60)
                await until(lambda: bool(logged(logs, "pause.read_recovered")), within=5)
        assert len(times) <= 2 * 60 / RETRY_INITIAL, f"{len(times)} requests in a minute"
        assert _two_per_retry_initial(times) == []
        gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 0.1]
        if grown:
            assert gaps[0] < 1.0, gaps
            assert max(gaps[-3:]) >= grown, f"the waits did not grow: {gaps}"
        else:  # one request a turn (the version is still good), every 0.5 to 1 s
            assert min(gaps) >= RETRY_INITIAL - 1e-6, gaps
            assert max(gaps) <= CONFIG.kubernetes.retry_max + 0.1, gaps
        assert len(times) <= 60 / RETRY_INITIAL, "at most 2 requests a second"
        failing = logged(logs, "pause.read_failing")
        kinds = 1 if isinstance(hostile, str) else len(set(hostile))
        assert 1 <= len(failing) <= kinds, [line["error"] for line in failing]
        assert len(logged(logs, "pause.read_recovered")) == 1

    async def test_a_single_410_after_a_watch_that_worked_is_one_relist(
        self, kube: FakeKubernetes, tmp_path: Any
    ) -> None:
        """The routine case: a watch ends (timeoutSeconds, 5 to 10 minutes), the next one from its
        resourceVersion is answered 410 (compacted meanwhile): one GET, retry_initial later (as
        client-go's reflector waits a backoff step), no problem logged, and the new watch works."""
        with capture_logs() as logs:
            async with deployment_watch(kube, tmp_path) as watch:
                kube.break_watches("gone", count=1)
                gone = kube.next_request(path_contains="/deployments")
                began = (await asyncio.wait_for(gone, 700)).at
                await asyncio.sleep(10)
                kube.annotate(KUBE_NS, "bolina", {PAUSED: "true"})
                await until(lambda: watch.pause is not None)
        gets = [a.at - began for a in kube.arrivals if a.path.endswith("/bolina") and a.at >= began]
        assert len(gets) == 1
        assert RETRY_INITIAL - 1e-6 <= gets[0] <= 2 * RETRY_INITIAL
        assert not [line for line in logs if line["log_level"] in {"warning", "error"}]


# -- the Consul watch against the fake agent ------------------------------------------------------

HOSTILE_ANSWERS: dict[str, list[Fault]] = {
    "blocking queries that do not block": [Fault.unblocked()],
    "500": [Fault.http_error(500)],
    "connection reset": [Fault.connection_reset()],
    "a mix": [Fault.unblocked(), Fault.http_error(500), Fault.unblocked(), Fault.connection_reset()],
}


@pytest.mark.looptime
class TestConsulWatchAgainstTheFake:
    @pytest.mark.parametrize("faults", list(HOSTILE_ANSWERS.values()), ids=list(HOSTILE_ANSWERS))
    async def test_backs_off_logs_once_and_recovers(self, faults: list[Fault]) -> None:
        """A minute of hostile answers: at most 2 queries per retry_initial (the token bucket let
        13 a second through), one line per kind of problem; healed, one recovery line each."""
        async with FakeConsul() as consul:
            consul.add_instance("bolina", instance_id="b1")
            times: list[float] = []
            with capture_logs() as logs:
                async with ConsulWatch(CONFIG.consul.model_copy(update={"address": consul.url})) as watch:

                    async def drain() -> None:
                        async for _ in watch.snapshots():
                            times.append(asyncio.get_running_loop().time())

                    task = asyncio.create_task(drain())
                    await consul.wait_parked("bolina")
                    began = asyncio.get_running_loop().time()
                    for _ in range(2000):
                        for fault in faults:
                            consul.inject(fault)
                    consul.touch("bolina")
                    queries = consul.request_counts["health.service"]
                    await run_hostile(60.0, lambda: [0.0] * (consul.request_counts["health.service"] - queries))
                    hostile = consul.request_counts["health.service"] - queries
                    consul._faults.clear()
                    await consul.wait_parked("bolina")
                    await asyncio.sleep(2)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        assert hostile <= 2 * 60 / RETRY_INITIAL, f"{hostile} queries in a minute"
        answered = [t for t in times if t > began]
        assert _two_per_retry_initial(answered) == []
        for area in ("consul", "consul.blocking"):
            assert len(logged(logs, f"{area}.failing")) <= len({f.kind for f in faults})
            assert len(logged(logs, f"{area}.recovered")) == (1 if logged(logs, f"{area}.failing") else 0)
        if any(f.kind == "unblocked" for f in faults):
            assert logged(logs, "consul.blocking_failing")


# -- Events and the report sidecar --------------------------------------------------------------------


@pytest.mark.looptime
class TestEventsBackOff:
    async def test_refused_events_are_sent_at_most_every_retry_initial(self, world: World) -> None:
        """RBAC refuses Events (an answer at once, so the shared probe never closes): 40 distinct
        Events queued are sent at most one per retry_initial, and the first after RBAC is back goes."""
        world.kube.deny("create", "events")
        config = world.config()
        async with KubeApi(config.kubernetes) as api:
            loop = asyncio.get_running_loop()
            rec = EventRecorder(config.events, api=api, instance="scaler-0", clock=loop.time)
            task = asyncio.create_task(rec.run(), name="events")
            began = loop.time()
            for n in range(40):
                rec.record(EventSpec("Warning", "ScaleHeld", f"holding at {n}"))
            posts = lambda: [a.at for a in world.kube.arrivals if a.method == "POST" and a.at >= began]  # noqa: E731
            times = await run_hostile(10.0, posts)
            world.kube.allow_all()
            await asyncio.sleep(5)
            rec.record(EventSpec("Normal", "SuccessfulRescale", "New size: 6"))
            await until(lambda: bool(world.kube.events(NS)))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert len(times) <= 10 / RETRY_INITIAL + 1, f"{len(times)} refused POSTs in 10 s"
        assert all(b - a >= RETRY_INITIAL - 1e-6 for a, b in itertools.pairwise(times))


@pytest.fixture
async def agent() -> AsyncIterator[HostileAgent]:
    async with HostileAgent() as fake:
        yield fake


@pytest.fixture
async def metrics() -> AsyncIterator[MetricsServer]:
    async with MetricsServer() as server:
        yield server


@pytest.mark.looptime
class TestReporterBacksOff:
    async def test_a_failing_agent_with_the_heartbeat_due(self, agent: HostileAgent, metrics: MetricsServer) -> None:
        """The agent answers 500 to every update while the heartbeat is due: the sidecar waited
        for nothing (~1,500 metrics reads and updates a second, a warning each); now a backoff
        from 1 s to --interval, one report.failing line, one report.recovered line."""
        settings = settings_for(agent, metrics, interval=5, ttl=2)
        stop = asyncio.Event()
        with capture_logs() as logs:
            async with Reporter(settings, CLASSIFIER) as reporter:
                await reporter.register()
                for _ in range(10_000):
                    agent.queue("update", status=500, body=b"rpc error: internal error")
                task = asyncio.create_task(reporter.run(stop), name="reporter")
                updates = agent.calls["update"]
                await run_hostile(60.0, lambda: [0.0] * (agent.calls["update"] - updates))
                failed = agent.calls["update"] - updates
                agent._answers.clear()
                await asyncio.sleep(10)
                stop.set()
                await task
        assert failed <= 60 / 1.0 + 1, f"{failed} failed updates in a minute"
        assert failed >= 60 / settings.interval - 1, "still retrying at least every interval"
        assert len(logged(logs, "report.failing")) == 1
        assert len(logged(logs, "report.recovered")) == 1

    async def test_registration_backs_off_and_logs_once(self, agent: HostileAgent, metrics: MetricsServer) -> None:
        """The agent refuses registration for a minute: a few tries, not one per interval, one line."""
        settings = settings_for(agent, metrics, interval=5)
        stop = asyncio.Event()
        for _ in range(10_000):
            agent.queue("register", status=500, body=b"rpc error: agent starting")
        with capture_logs() as logs:
            async with Reporter(settings, CLASSIFIER) as reporter:
                task = asyncio.create_task(reporter.run(stop), name="reporter")
                await run_hostile(60.0, lambda: [0.0] * agent.calls["register"])
                tries = agent.calls["register"]
                agent._answers.clear()
                await until(lambda: reporter.registered, within=10)
                stop.set()
                await task
        assert 60 / settings.interval - 1 <= tries <= 60 / 1.0 + 1
        assert len(logged(logs, "report.register_failing")) == 1
        assert len(logged(logs, "report.register_recovered")) == 1


# -- the daemon -------------------------------------------------------------------------------------


@pytest.mark.looptime
class TestDaemonWhileTheWatchMisbehaves:
    async def test_410_every_time_scales_logs_once_and_pauses_after(self, world: World) -> None:
        """The Deployment watch answered 410 every time for two minutes: the daemon still scales on
        Consul changes, sends a few watch requests a minute (was ~2,300 a second), says so once;
        healed, a pause annotation takes effect."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1 and daemon.state.pause_known)
                began = asyncio.get_running_loop().time()
                world.kube.break_watches("gone")
                world.kube.cut_watches()
                await asyncio.sleep(30)
                world.set_statuses("warning", 1, 2, 3)
                await until(lambda: world.replicas() == 6, within=30)
                times = await run_hostile(90.0, deployment_requests(world.kube, began))
                world.kube.break_watches(None)
                world.kube.annotate(NS, "bolina", {PAUSED: "true"})
                await until(lambda: daemon.state.decision is not None and daemon.state.decision.reason == "paused")
                await until(lambda: bool(logged(logs, "pause.read_recovered")), within=5)
        assert len(times) <= 2 * 120 / RETRY_INITIAL
        assert _two_per_retry_initial(times) == []
        assert len(logged(logs, "pause.read_failing")) == 1
        assert len(logged(logs, "pause.read_recovered")) == 1
        assert len(logged(logs, "pause.paused")) == 1
