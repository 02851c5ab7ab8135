"""One leader per Lease even when two processes are given one name (issue 20, item 5).

Before: two replicas with the same ``leader_election.identity`` both led and both patched (each
took the Lease that named it, as its own). Now a configured identity gets a random suffix, and a
Lease written under our name by someone else is an identity conflict: we stop leading and come
back as a distinct candidate. Runs on looptime's fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import KubeApi
from bolina_scaler.config import parse_config
from bolina_scaler.coordination.election import Leadership, candidate_identity
from bolina_scaler.coordination.lease import micro_time
from tests.harness import NS, World, logged, until
from tests.test_leadership import daemon, ha_config, scale_patches

LEASE = "bolina-scaler"
SUFFIX = re.compile(r"_[0-9a-f]{8}$")


def election(identity: str | None, **overrides: Any) -> Any:
    return parse_config({"leader_election": {"identity": identity, **overrides}}).leader_election


@contextlib.asynccontextmanager
async def candidate(world: World, identity: str | None, changes: list[bool] | None = None) -> AsyncIterator[Leadership]:
    async with KubeApi(world.config().kubernetes) as api:
        loop = asyncio.get_running_loop()
        on_change = None if changes is None else changes.append
        yield Leadership(election(identity), api=api, clock=loop.time, on_change=on_change)


def foreign_renewal(world: World, holder: str) -> None:
    """Another process renews the Lease naming ``holder`` (a renewTime we never sent)."""
    world.kube.set_lease(NS, LEASE, {"holderIdentity": holder, "leaseDurationSeconds": 15,
                                     "renewTime": micro_time(datetime.now(UTC))})  # fmt: skip


class TestIdentity:
    @given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=128))
    def test_a_configured_identity_gets_a_random_suffix(self, configured: str):
        """Any configured identity becomes ``<identity>_<8 hex>``, different on every call."""
        first, second = candidate_identity(configured), candidate_identity(configured)
        assert first.startswith(configured + "_")
        assert SUFFIX.search(first)
        assert len(first) == len(configured) + 9
        assert first != second

    def test_pod_name_and_the_default_stay_as_they_are(self, monkeypatch: pytest.MonkeyPatch):
        """``$POD_NAME`` is unique per pod: used as it is; without it, the host name with a suffix."""
        monkeypatch.setenv("POD_NAME", "bolina-scaler-7d9f-abcde")
        assert candidate_identity(None) == "bolina-scaler-7d9f-abcde"
        monkeypatch.delenv("POD_NAME")
        assert SUFFIX.search(candidate_identity(None))


@pytest.mark.looptime
class TestSharedIdentity:
    async def test_two_candidates_given_one_identity_lead_one_at_a_time(self, world: World):
        """Two candidates configured with the same identity hold the Lease under distinct names;
        only the first leads (before: the second took the Lease naming it, and both led)."""
        async with candidate(world, "bolina") as a, candidate(world, "bolina") as b:
            assert a.identity != b.identity
            assert await a.try_once() is True
            for _ in range(5):
                assert await b.try_once() is False
                assert await a.try_once() is True
                await asyncio.sleep(2)
            assert b.holder == a.identity
        assert world.kube.lease(NS, LEASE)["spec"]["holderIdentity"] == a.identity  # type: ignore[index]

    async def test_a_write_under_our_name_that_we_did_not_make(self, world: World):
        """Another process renews the Lease under our identity: we stop leading, log an error naming
        the cause, take a fresh identity and wait for that Lease to expire before taking it."""
        changes: list[bool] = []
        loop = asyncio.get_running_loop()
        async with candidate(world, "bolina", changes) as a:
            assert await a.try_once() is True
            first = a.identity
            foreign_renewal(world, first)
            with capture_logs() as logs:
                assert await a.try_once() is False
            assert changes == [True, False]
            assert not a.is_leader()
            [conflict] = logged(logs, "leader.identity_conflict")
            assert conflict["log_level"] == "error"
            assert f"another process renews the Lease under our identity {first}" in conflict["cause"]
            assert "is leader_election.identity or POD_NAME shared?" in conflict["cause"]
            assert a.identity != first
            assert a.identity.startswith("bolina_")
            assert SUFFIX.search(a.identity)
            assert conflict["new_identity"] == a.identity
            # The other keeps renewing under the old name: we stay a follower.
            for _ in range(8):
                await asyncio.sleep(2)
                foreign_renewal(world, first)
                assert await a.try_once() is False
            # It stops: the Lease expires on our clock and we take it under our fresh name.
            stopped = loop.time()
            for _ in range(20):
                if await a.try_once():
                    break
                await asyncio.sleep(2)
            assert 15 <= loop.time() - stopped <= 17
        assert world.kube.lease(NS, LEASE)["spec"]["holderIdentity"] == a.identity  # type: ignore[index]
        assert changes == [True, False, True]

    async def test_a_renewal_whose_answer_was_lost_is_still_ours(self, world: World):
        """A renewal cancelled on our side but applied by the API server names us with a renewTime
        we sent: it is ours, not a conflict; the next round renews it."""
        async with candidate(world, "bolina") as a:
            assert await a.try_once() is True
            identity = a.identity
            world.kube.delay_next(3600, method="PUT", path_contains="/leases")
            sent = world.kube.next_request(method="PUT", path_contains="/leases")
            renewing = asyncio.create_task(a.try_once())
            renewal = await sent
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            world.kube.set_lease(NS, LEASE, renewal.body["spec"])  # applied all the same
            with capture_logs() as logs:
                assert await a.try_once() is True
            assert a.identity == identity
            assert not logged(logs, "leader.identity_conflict")
        assert world.kube.lease(NS, LEASE)["spec"]["holderIdentity"] == identity  # type: ignore[index]

    async def test_a_lease_left_under_our_pod_name(self, world: World, monkeypatch: pytest.MonkeyPatch):
        """At start, the Lease names our ``$POD_NAME`` with a renewTime we never sent (an earlier
        process of this pod, or a shared POD_NAME): a warning, a fresh identity, and it waits for
        that Lease to expire instead of taking it at once."""
        monkeypatch.setenv("POD_NAME", "bolina-scaler-0")
        foreign_renewal(world, "bolina-scaler-0")
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with candidate(world, None) as a:
            assert a.identity == "bolina-scaler-0"
            with capture_logs() as logs:
                assert await a.try_once() is False
            [conflict] = logged(logs, "leader.identity_conflict")
            assert conflict["log_level"] == "warning"
            assert "never wrote it" in conflict["cause"]
            assert a.identity.startswith("bolina-scaler-0_")
            assert SUFFIX.search(a.identity)
            for _ in range(20):
                if await a.try_once():
                    break
                await asyncio.sleep(2)
            assert 15 <= loop.time() - started <= 17


@pytest.mark.looptime
class TestTwoDaemonsOneIdentity:
    async def test_only_one_leads_and_patches(self, world: World):
        """Two daemons configured with the same identity: one leads, the other follows and never
        patches (before: both led, and both patched the scale)."""
        world.serving(4)
        async with daemon(ha_config(world, "bolina")) as (a, _, _), daemon(ha_config(world, "bolina")) as (b, _, _):
            await until(lambda: a.state.evaluations >= 1 and b.state.evaluations >= 1)
            await until(lambda: a.role.may_patch != b.role.may_patch)
            await asyncio.sleep(10)  # several renewals: still one leader
            assert a.role.may_patch != b.role.may_patch
            world.set_statuses("warning", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
            follower = b if a.role.may_patch else a
            await asyncio.sleep(5)
            assert follower.state.patches == 0
            assert a.state.identity != b.state.identity
        patches = [p for p in scale_patches(world) if p.status == 200]
        assert [p.body["spec"]["replicas"] for p in patches] == [6]
