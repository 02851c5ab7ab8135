"""Leader election keeps its own deadlines, whatever the Lease requests do (issue 20, item 1).

A Lease request may hang until ``kubernetes.request_timeout`` (here 30 s, longer than
``renew_deadline``) or wait in the gate ``KubeApi`` shares with the scale, the Events and the pods.
The leader must step down at ``renewed_at + renew_deadline`` all the same (the log line, the
callback, the metric), and a candidate must try again. Runs on looptime's fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import KubeApi
from bolina_scaler.config import parse_config
from bolina_scaler.coordination.election import Leadership
from tests.harness import World, logged, until
from tests.test_leadership import daemon

pytestmark = pytest.mark.looptime

HANGS = 3600.0
"""A request the fake holds this long has hung (far beyond every deadline of the test)."""
SLACK = 0.05


class Candidate:
    """A ``Leadership`` running its loop, with every ``on_change`` call and its loop time."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self.changes: list[tuple[bool, float]] = []


@contextlib.asynccontextmanager
async def running(world: World, **election: Any) -> AsyncIterator[Candidate]:
    config = world.config()
    kubernetes = config.kubernetes.model_copy(update={"request_timeout": 30.0})
    settings = parse_config({"leader_election": {"identity": "a", **election}}).leader_election
    loop = asyncio.get_running_loop()
    async with KubeApi(kubernetes) as api:
        box: list[Candidate] = []
        leadership = Leadership(
            settings, api=api, clock=loop.time, on_change=lambda leading: box[0].changes.append((leading, loop.time()))
        )
        candidate = Candidate(leadership)
        box.append(candidate)
        task = asyncio.create_task(leadership.run(), name="leader-election")
        try:
            yield candidate
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def lease_writes(world: World) -> list[float]:
    """Arrival times of the Lease POSTs and PUTs (acquisitions and renewals)."""
    return [a.at for a in world.kube.arrivals if a.method in {"POST", "PUT"} and "/leases" in a.path]


class TestLeaderDeadline:
    async def test_hung_renewal_steps_down_at_the_deadline_then_reacquires(self, world: World):
        """The renewal PUT hangs: stepped down at renewed_at + renew_deadline (not at request_timeout),
        on_change(False); the candidate keeps trying and leads again once the API server answers."""
        loop = asyncio.get_running_loop()
        with capture_logs() as logs:
            async with running(world) as a:
                await until(a.leadership.is_leader)
                await asyncio.sleep(3)  # a renewal or two: the loop is in its steady rhythm
                world.kube.delay_next(HANGS, count=3, method="PUT", path_contains="/leases")
                hung = world.kube.next_request(method="PUT", path_contains="/leases")
                hung_at = (await hung).at
                renewed_at = hung_at - 2.0  # the last renewal that was answered began one retry_period before
                await until(lambda: not a.leadership.is_leader())
                await asyncio.sleep(0)
                assert [leading for leading, _ in a.changes] == [True, False]
                stepped_at = a.changes[1][1]
                assert renewed_at + 10 - SLACK <= stepped_at <= renewed_at + 10 + SLACK
                # Three rounds hang (the leader's, then two as a candidate, each ended by renew_deadline);
                # the fourth PUT is answered and leads again, well before request_timeout × 3.
                await until(a.leadership.is_leader, within=60)
                back_at = loop.time()
        assert [leading for leading, _ in a.changes] == [True, False, True]
        assert back_at - hung_at <= 10 * 3 + 3 * 2.4 + 1
        assert len(lease_writes(world)) >= 4
        [down] = logged(logs, "leader.stepped_down")
        assert "renew_deadline 10s" in down["why"]

    async def test_hung_read_does_not_stop_the_candidate(self, world: World):
        """A candidate's GET hangs: its round ends after renew_deadline and the next round acquires."""
        world.kube.delay_next(HANGS, method="GET", path_contains="/leases")
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with running(world) as a:
            await until(a.leadership.is_leader, within=60)
            acquired = loop.time()
        assert acquired - started <= 10 + 2 * 1.2 + SLACK
        gets = [x.at for x in world.kube.arrivals if x.method == "GET" and "/leases" in x.path]
        assert len(gets) == 2

    async def test_failing_renewals_step_down_at_the_deadline_not_at_the_next_round(self, world: World):
        """Renewals refused at once (403): the step-down comes at renewed_at + renew_deadline (9 s),
        between two rounds (at 8 s and 10 s), not when the next round starts."""
        async with running(world, renew_deadline="9s") as a:
            await until(a.leadership.is_leader)
            await asyncio.sleep(0)
            renewed_at = lease_writes(world)[-1]
            world.kube.deny("update", "leases")
            world.kube.deny("get", "leases")
            await until(lambda: len(a.changes) == 2, within=30)
        stepped_at = a.changes[1][1]
        assert renewed_at + 9 - SLACK <= stepped_at <= renewed_at + 9 + SLACK


class TestLogging:
    async def test_the_recovery_is_logged_once_when_the_lease_answers_again(self, world: World):
        """A renewal hangs (its round times out), then the API server refuses every Lease request
        (503) for a minute, then answers: no `leader.lease_recovered` while it fails (a round that
        ends by a refusal is not a recovery), and exactly one once a Lease request works. Before,
        the first round ended by a refusal logged a recovery in the middle of the outage, and the
        real one was never logged (the integration test_apiserver_outages looks for it)."""
        with capture_logs() as logs:
            async with running(world) as a:
                await until(a.leadership.is_leader)
                await asyncio.sleep(3)
                world.kube.delay_next(HANGS, count=1, method="PUT", path_contains="/leases")
                world.kube.inject_error(503, count=10_000, path_contains="/leases")
                await world.kube.next_request(method="PUT", path_contains="/leases")
                await asyncio.sleep(60)
                assert logged(logs, "leader.lease_failing")
                assert not logged(logs, "leader.lease_recovered")
                world.kube.clear_faults()
                await until(a.leadership.is_leader, within=30)
                await asyncio.sleep(10)
        assert len(logged(logs, "leader.lease_recovered")) == 1


class TestShutdown:
    @pytest.mark.parametrize("fault", ["hangs", "parked"])
    async def test_release_stays_within_shutdown_timeout(self, world: World, fault: str):
        """At SIGTERM the release PUT hangs, or waits in the gate the renewals closed (503,
        Retry-After 60 s): the daemon stops within shutdown_timeout (8 s, request_timeout 30 s).
        (The gate parks the release for at most kubernetes.retry_after_max.)"""
        world.serving(4)
        loop = asyncio.get_running_loop()
        config = world.config()
        config = config.model_copy(
            update={
                "leader_election": parse_config({"leader_election": {"identity": "a"}}).leader_election,
                "kubernetes": config.kubernetes.model_copy(update={"request_timeout": 30.0}),
            }
        )
        assert config.shutdown_timeout == 8
        async with daemon(config) as (d, stop, task):
            await until(lambda: d.role.may_patch)
            if fault == "hangs":
                world.kube.delay_next(HANGS, count=100, method="PUT", path_contains="/leases")
            else:
                world.kube.inject_error(503, retry_after=60, count=100, method="PUT", path_contains="/leases")
                refused = world.kube.request_count(method="PUT", path_contains="/leases")
                await until(lambda: world.kube.request_count(method="PUT", path_contains="/leases") > refused)
            stop.set()
            stopping = loop.time()
            await asyncio.wait_for(task, 30)
            took = loop.time() - stopping
            # The release was tried and given what was left of the budget, no more; a parked one
            # waits at most kubernetes.retry_after_max (5 s) before its probe, and stops sooner.
            assert took <= 8 + SLACK
            if fault == "hangs":
                assert took >= 8 - SLACK
