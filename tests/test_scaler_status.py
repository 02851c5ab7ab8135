"""The bolina-scaler/status annotation: what it says (pure), how often it is written, and that the
leader, only the leader, keeps it current on the Deployment without fighting its own scale patches.

The pure part takes plain values; the daemon part runs on looptime against the Kubernetes fake,
which applies the merge patch to the Deployment's annotations and moves its resourceVersion.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bolina_scaler.config import Config
from bolina_scaler.core.decision import Clamp
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.scaler_status import MAX_STATUS_BYTES, STATUS_ANNOTATION, StatusContent, due, encode, status_of
from tests.harness import NS, World, running, until
from tests.test_http import decision


class TestContent:
    def test_what_it_says(self) -> None:
        """Desired, current, the reason, which clamp limited it, paused, fallback, ready, and a phrase."""
        content = status_of(
            decision(desired=12, current=4, clamps=(Clamp("max_replicas", 16, 12),)),
            outcome=Outcome.PATCHED,
            pause=None,
            problems=[],
            leader="scaler-a",
        )
        data = json.loads(encode(content, since=1_800_000_000, updated=1_800_000_030))
        assert data == {
            "current": 4,
            "desired": 12,
            "direction": "up",
            "fallback": False,
            "leader": "scaler-a",
            "limitedBy": ["max_replicas"],
            "outcome": "patched",
            "paused": False,
            "ready": True,
            "reason": "below_target",
            "since": "2027-01-15T08:00:00Z",
            "summary": "up 4→12: below_target (limited by max_replicas)",
            "updated": "2027-01-15T08:00:30Z",
        }

    def test_paused_and_not_ready_say_so(self) -> None:
        content = status_of(
            decision(desired=4, current=4),
            outcome=Outcome.UNCHANGED,
            pause=Pause(source="bolina-scaler/paused", replicas=None),
            problems=["stuck: a scale change it wants has not been made for 61s " + "x" * 500],
            leader=None,
        )
        assert (content.paused, content.ready) == (True, False)
        assert content.problem is not None
        assert len(content.problem) == 200
        assert content.summary == "hold: below_target, paused, not ready"

    @given(st.text(max_size=5000), st.text(max_size=5000))
    def test_the_annotation_stays_small(self, problem: str, leader: str) -> None:
        """Whatever the problem text and the leader's name, the value stays under MAX_STATUS_BYTES."""
        content = status_of(decision(), outcome=None, pause=None, problems=[problem] if problem else [], leader=leader)
        text = encode(content, since=0, updated=0)
        assert len(text.encode()) <= MAX_STATUS_BYTES
        assert json.loads(text)["desired"] == 6


def content(desired: int) -> StatusContent:
    return status_of(decision(desired=desired), outcome=None, pause=None, problems=[], leader="a")


class TestDue:
    @given(
        st.lists(st.tuples(st.integers(4, 6), st.floats(0, 100)), min_size=1, max_size=60),
        st.floats(1, 60),
        st.floats(1, 600),
    )
    def test_never_more_often_than_min_interval(
        self, steps: list[tuple[int, float]], min_interval: float, extra: float
    ) -> None:
        """Driven with any sequence of statuses and gaps: two writes are never closer than
        min_interval, an unchanged status is never written again before refresh, and a
        changed one is written within min_interval of the change."""
        refresh = min_interval + extra
        now, written, written_at, writes = 0.0, None, None, []
        for desired, gap in steps:
            now += gap
            status = content(desired)
            at = due(
                status, written=written, written_at=written_at, now=now, min_interval=min_interval, refresh=refresh
            )
            assert at >= now
            if written_at is not None:
                assert at >= written_at + (min_interval if status != written else refresh) - 1e-9
            if at <= now:
                writes.append(now)
                written, written_at = status, now
        assert all(b - a >= min_interval - 1e-9 for a, b in itertools.pairwise(writes))


def far_lease() -> dict[str, object]:
    far = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600, "renewTime": far, "acquireTime": far}


def with_status(world: World) -> Config:
    """The world's config with ``status.enabled: true`` (it is opt-in)."""
    config = world.config()
    return config.model_copy(update={"status": config.status.model_copy(update={"enabled": True})})


def status_writes(world: World) -> int:
    """PATCHes of the Deployment itself (not of its scale): the status writes."""
    return len(world.kube.annotation_patches)


def status_annotation(world: World) -> dict[str, object] | None:
    text = world.kube.deployment(NS, "bolina")["metadata"].get("annotations", {}).get(STATUS_ANNOTATION)
    return None if text is None else json.loads(text)


@pytest.mark.looptime
class TestTheDaemon:
    async def test_the_leader_writes_what_it_decided(self, world: World) -> None:
        """After a scale-up the annotation says desired 6, why, and that it was patched; the
        status write never costs the next scale patch a 409 of its own making."""
        world.serving(4)
        async with running(with_status(world)) as daemon:
            await until(lambda: status_annotation(world) is not None)
            world.set_statuses("critical", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
            await until(lambda: (status_annotation(world) or {}).get("desired") == 6, within=20)
            status = status_annotation(world)
            assert status is not None
            assert (status["reason"], status["outcome"], status["ready"]) == ("below_target", "patched", True)
            assert status["leader"] == daemon.state.identity
            # More changes: each patch goes through at the first try.
            world.register(4, "critical")
            world.register(5, "critical")
            world.set_statuses("critical", 0)
            await until(lambda: world.replicas() >= 8, within=30)
        assert [p.status for p in world.kube.patches] == [200] * len(world.kube.patches)

    async def test_writes_are_rate_limited(self, world: World) -> None:
        """A status that changes every 2 s is written at most every status.min_interval (15 s);
        an unchanged one again after status.refresh (5 min)."""
        world.serving(4)
        loop = asyncio.get_running_loop()
        async with running(with_status(world)) as daemon:
            await until(lambda: daemon.status is not None and daemon.status.writes >= 1)
            start = loop.time()
            for n in range(30):  # a flapping server: the status changes with every evaluation
                world.set_statuses("warning" if n % 2 else "passing", 1)
                await asyncio.sleep(2)
            writes = status_writes(world)
            assert writes <= 1 + (loop.time() - start) / 15 + 1
            assert daemon.status is not None
            before = daemon.status.writes
            await asyncio.sleep(310)
            assert daemon.status.writes == before + 1, "one refresh in 5 minutes of quiet"

    async def test_a_follower_never_writes(self, world: World) -> None:
        world.serving(4)
        world.kube.set_lease(NS, "bolina-scaler", far_lease())
        async with running(with_status(world)) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            world.set_statuses("critical", 1, 2, 3)
            await asyncio.sleep(60)
        assert status_annotation(world) is None

    async def test_a_forbidden_write_is_logged_once_and_costs_one_request_per_refresh(self, world: World) -> None:
        """A Role without `patch` on deployments: scaling goes on, one warning, writes back off to 5 min."""
        world.serving(4)
        world.kube.deny("patch", "deployments")
        async with running(with_status(world)) as daemon:
            world.set_statuses("critical", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
            await asyncio.sleep(1200)
            assert daemon.state.decision is not None
        tries = status_writes(world)
        assert 1 <= tries <= 12
        assert status_annotation(world) is None

    async def test_off_by_default_writes_nothing(self, world: World) -> None:
        """The shipped default (status.enabled: false): the shipped Role grants no patch on the Deployment."""
        world.serving(4)
        config = world.config()
        assert config.status.enabled is False
        async with running(config):
            world.set_statuses("critical", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
        assert status_annotation(world) is None
