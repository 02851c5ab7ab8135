"""Leader election on a Lease: the Lease loop against the Kubernetes fake, then two real daemons.

Runs on looptime's fake clock: lease durations pass in no real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import KubeApi
from bolina_scaler.config import Config, parse_config
from bolina_scaler.coordination.election import Leadership
from bolina_scaler.coordination.lease import micro_time
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.daemon import Daemon, open_daemon
from tests.harness import NS, World, until

pytestmark = pytest.mark.looptime

LEASE = "bolina-scaler"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def election(identity: str, **overrides: Any) -> Any:
    return parse_config({"leader_election": {"identity": identity, **overrides}}).leader_election


@contextlib.asynccontextmanager
async def candidate(world: World, identity: str) -> AsyncIterator[Leadership]:
    config = world.config()
    async with KubeApi(config.kubernetes) as api:
        loop = asyncio.get_running_loop()
        yield Leadership(election(identity), api=api, clock=loop.time)


class TestLeaseLoop:
    async def test_first_candidate_creates_the_lease(self, world: World):
        """With no Lease, the candidate creates one naming itself, with MicroTime timestamps."""
        async with candidate(world, "a") as a:
            assert await a.try_once() is True
            assert a.is_leader()
        spec = world.kube.lease(NS, LEASE)["spec"]  # type: ignore[index]
        assert spec["holderIdentity"] == a.identity
        assert spec["leaseDurationSeconds"] == 15
        assert spec["leaseTransitions"] == 0
        assert MICRO.match(spec["acquireTime"])
        assert MICRO.match(spec["renewTime"])

    async def test_renewal_keeps_acquire_time(self, world: World):
        """Renewing changes renewTime only; acquireTime and leaseTransitions stay."""
        async with candidate(world, "a") as a:
            await a.try_once()
            first = world.kube.lease(NS, LEASE)["spec"]  # type: ignore[index]
            await asyncio.sleep(2)
            await a.try_once()
        second = world.kube.lease(NS, LEASE)["spec"]  # type: ignore[index]
        assert second["acquireTime"] == first["acquireTime"]
        assert second["leaseTransitions"] == 0
        assert second["renewTime"] != first["renewTime"]

    async def test_live_lease_of_another_is_respected(self, world: World):
        """A Lease another holder keeps renewing is never taken."""
        world.kube.set_lease(NS, LEASE, {"holderIdentity": "other", "leaseDurationSeconds": 15})
        async with candidate(world, "a") as a:
            for _ in range(10):
                renewed = micro_time(datetime.now(UTC))
                world.kube.set_lease(NS, LEASE, {"holderIdentity": "other", "leaseDurationSeconds": 15,
                                                 "renewTime": renewed})  # fmt: skip
                assert await a.try_once() is False
                await asyncio.sleep(2)
            assert a.holder == "other"

    async def test_expired_lease_is_taken_over(self, world: World):
        """A Lease not renewed for leaseDurationSeconds (on OUR clock) is acquired; transitions +1."""
        world.kube.set_lease(NS, LEASE, {"holderIdentity": "other", "leaseDurationSeconds": 15,
                                         "leaseTransitions": 3})  # fmt: skip
        loop = asyncio.get_running_loop()
        async with candidate(world, "a") as a:
            assert await a.try_once() is False
            start = loop.time()
            for _ in range(20):
                if await a.try_once():
                    break
                await asyncio.sleep(2)
            assert 15 <= loop.time() - start <= 17
        spec = world.kube.lease(NS, LEASE)["spec"]  # type: ignore[index]
        assert (spec["holderIdentity"], spec["leaseTransitions"]) == (a.identity, 4)

    async def test_steps_down_before_the_lease_can_be_taken(self, world: World):
        """A leader that cannot renew stops leading after renew_deadline (10 s), before expiry (15 s)."""
        loop = asyncio.get_running_loop()
        async with candidate(world, "a") as a:
            await a.try_once()
            renewed = loop.time()
            world.kube.deny("update", "leases")
            world.kube.deny("get", "leases")
            while a.is_leader():
                await a.try_once()
                await asyncio.sleep(0.5)
            assert 9.5 <= loop.time() - renewed <= 10.5

    async def test_release_lets_the_other_take_over_at_once(self, world: World):
        """release() empties the holder (leaseDurationSeconds 1): the other acquires on its next try."""
        async with candidate(world, "a") as a, candidate(world, "b") as b:
            await a.try_once()
            assert await b.try_once() is False
            await a.release()
            assert not a.is_leader()
            spec = world.kube.lease(NS, LEASE)["spec"]  # type: ignore[index]
            assert spec.get("holderIdentity") is None
            assert spec["leaseDurationSeconds"] == 1
            assert await b.try_once() is True

    async def test_release_after_a_renewal_it_did_not_see(self, world: World):
        """A renewal cancelled by shutdown but applied by the API server moved the Lease's version:
        the release's 409 is followed by a read, and the Lease, still ours, is released."""
        async with candidate(world, "a") as a:
            await a.try_once()
            world.kube.delay_next(60, method="PUT", path_contains="/leases")
            sent = world.kube.next_request(method="PUT", path_contains="/leases")
            renewing = asyncio.create_task(a.try_once())
            renewal = await sent
            renewing.cancel()  # shutdown cancels the round...
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            world.kube.set_lease(NS, LEASE, renewal.body["spec"])  # ...but the API server applied it
            first = len(world.kube.requests)
            with capture_logs() as logs:
                await a.release()
            calls = [(r.method, r.status) for r in world.kube.requests[first:] if "/leases" in r.path and r.status]
        assert calls == [("PUT", 409), ("GET", 200), ("PUT", 200)]
        assert world.kube.lease(NS, LEASE)["spec"].get("holderIdentity") is None  # type: ignore[index]
        assert [e["event"] for e in logs] == ["leader.released"]

    async def test_release_of_a_lease_taken_meanwhile(self, world: World):
        """If the re-read shows another holder, there is nothing to release and nothing is written."""
        async with candidate(world, "a") as a:
            await a.try_once()
            world.kube.set_lease(NS, LEASE, {"holderIdentity": "b", "leaseDurationSeconds": 15,
                                             "renewTime": micro_time(datetime.now(UTC))})  # fmt: skip
            first = len(world.kube.requests)
            await a.release()
        calls = [(r.method, r.status) for r in world.kube.requests[first:] if "/leases" in r.path]
        assert calls == [("PUT", 409), ("GET", 200)]
        assert world.kube.lease(NS, LEASE)["spec"]["holderIdentity"] == "b"  # type: ignore[index]

    async def test_conflicting_update_is_lost_not_fatal(self, world: World):
        """Two candidates racing for a free Lease: exactly one wins (resourceVersion precondition)."""
        world.kube.set_lease(NS, LEASE, {})
        async with candidate(world, "a") as a, candidate(world, "b") as b:
            results = await asyncio.gather(a.try_once(), b.try_once())
        assert sorted(results) == [False, True]

    async def test_leader_renews_with_one_request(self, world: World):
        """A leader renews optimistically: one PUT per round on the Lease it last wrote, no GET."""
        async with candidate(world, "a") as a:
            await a.try_once()
            first = len(world.kube.requests)
            for _ in range(3):
                await asyncio.sleep(2)
                assert await a.try_once() is True
        renewals = [(r.method, r.status) for r in world.kube.requests[first:] if "/leases" in r.path]
        assert renewals == [("PUT", 200)] * 3
        assert world.kube.lease(NS, LEASE)["spec"]["leaseTransitions"] == 0  # type: ignore[index]

    async def test_optimistic_renew_falls_back_to_reading_the_lease(self, world: World):
        """The Lease changed under the leader: the PUT conflicts, the GET shows the new holder, it steps down."""
        async with candidate(world, "a") as a:
            await a.try_once()
            renewed = micro_time(datetime.now(UTC))
            world.kube.set_lease(NS, LEASE, {"holderIdentity": "other", "leaseDurationSeconds": 15,
                                             "renewTime": renewed})  # fmt: skip
            first = len(world.kube.requests)
            assert await a.try_once() is False
            assert not a.is_leader()
            assert a.holder == "other"
        calls = [(r.method, r.status) for r in world.kube.requests[first:] if "/leases" in r.path]
        assert calls == [("PUT", 409), ("GET", 200)]


# -- two daemons ---------------------------------------------------------------------------------


def ha_config(world: World, identity: str) -> Config:
    config = world.config()
    return config.model_copy(update={"leader_election": election(identity)})


@contextlib.asynccontextmanager
async def daemon(config: Config) -> AsyncIterator[tuple[Daemon, asyncio.Event, asyncio.Task[None]]]:
    stop = asyncio.Event()
    async with open_daemon(config) as d:
        task = asyncio.create_task(d.run(stop), name=f"daemon-{config.leader_election.identity}")
        try:
            yield d, stop, task
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


def scale_patches(world: World) -> list[Any]:
    return [p for p in world.kube.patches if p.path.endswith("/scale")]


class TestTwoDaemons:
    async def test_only_the_leader_patches(self, world: World):
        """Two replicas watch the same fleet; exactly one patch per decision, from the leader."""
        world.serving(4)
        async with daemon(ha_config(world, "a")) as (a, _, _), daemon(ha_config(world, "b")) as (b, _, _):
            await until(lambda: a.state.evaluations >= 1 and b.state.evaluations >= 1)
            await until(lambda: a.role.may_patch != b.role.may_patch)
            world.set_statuses("warning", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
            follower = b if a.role.may_patch else a
            await asyncio.sleep(5)
            assert follower.state.patches == 0
        patches = [p for p in scale_patches(world) if p.status == 200]
        assert [p.body["spec"]["replicas"] for p in patches] == [6]
        assert all(p.status in {200, 409} for p in scale_patches(world))

    async def test_killed_leader_hands_over_within_the_lease_duration(self, world: World):
        """The leader dies without releasing; the follower leads within 15 s and then does the patching."""
        world.serving(4)
        loop = asyncio.get_running_loop()
        async with daemon(ha_config(world, "a")) as (a, _, a_task):
            await until(lambda: a.role.may_patch)
            async with daemon(ha_config(world, "b")) as (b, _, _):
                await until(lambda: b.state.evaluations >= 1)
                assert not b.role.may_patch
                a_task.cancel()  # a crash: no release, the Lease must expire
                killed = loop.time()
                await until(lambda: b.role.may_patch, within=30)
                assert loop.time() - killed <= 15 + 2 * 1.2 + 0.5
                world.set_statuses("warning", 1, 2, 3)
                await until(lambda: world.replicas() == 6)
        assert world.kube.lease(NS, LEASE)["spec"]["leaseTransitions"] == 1  # type: ignore[index]

    async def test_graceful_stop_hands_over_at_once(self, world: World):
        """SIGTERM on the leader releases the Lease: the follower leads within one retry period."""
        world.register(1)
        world.kube.scale_by_hand(NS, "bolina", 2)
        loop = asyncio.get_running_loop()
        async with daemon(ha_config(world, "a")) as (a, a_stop, a_task):
            await until(lambda: a.role.may_patch)
            async with daemon(ha_config(world, "b")) as (b, _, _):
                await until(lambda: b.state.evaluations >= 1)
                a_stop.set()
                await a_task
                stopped = loop.time()
                await until(lambda: b.role.may_patch, within=10)
                assert loop.time() - stopped <= 2 * 1.2 + 0.5

    async def test_follower_explains_what_it_would_do(self, world: World):
        """A follower decides too (for /v1/decision) but never patches."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n, "warning" if n else "passing")
        world.kube.set_lease(NS, LEASE, {"holderIdentity": "someone-else", "leaseDurationSeconds": 15})
        async with daemon(ha_config(world, "b")) as (b, _, _):
            await until(lambda: b.state.outcome is Outcome.NOT_LEADER)
            assert world.replicas() == 4
            assert not scale_patches(world)
            assert b.state.holder == "someone-else"
