"""Kubernetes Events: which decisions deserve one (pure), aggregation, and the daemon recording them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import KubeApi
from bolina_scaler.actuator.events import EventRecorder, EventSpec, event_for
from bolina_scaler.config import parse_config
from bolina_scaler.core.decision import Clamp, Decision, Direction, Reason
from bolina_scaler.core.outcome import Outcome
from tests.harness import NS, World, running, until
from tests.test_http import decision as make_decision


def decision(direction: Direction, reason: Reason, *, current: int = 4, desired: int = 4, **kw: Any) -> Decision:
    base = make_decision(current=current, desired=desired)
    return Decision(
        desired=desired,
        current=current,
        direction=direction,
        reason=reason,
        message=kw.get("message", "the message"),
        inputs=base.inputs,
        clamps=kw.get("clamps", ()),
    )


class TestEventFor:
    @pytest.mark.parametrize(
        ("direction", "reason", "outcome", "expected"),
        [
            (Direction.UP, Reason.BELOW_TARGET, Outcome.PATCHED, ("Normal", "SuccessfulRescale")),
            (Direction.DOWN, Reason.ABOVE_SCALE_DOWN_RATIO, Outcome.PATCHED, ("Normal", "SuccessfulRescale")),
            (Direction.UP, Reason.BELOW_TARGET, Outcome.FAILED, ("Warning", "FailedRescale")),
            (Direction.HOLD, Reason.UNTRUSTED_DATA, Outcome.UNCHANGED, ("Warning", "ScaleHeld")),
            (Direction.HOLD, Reason.STALE_DATA, Outcome.UNCHANGED, ("Warning", "ScaleHeld")),
            (Direction.HOLD, Reason.MASS_CHANGE_GUARD, Outcome.UNCHANGED, ("Warning", "ScaleHeld")),
            (Direction.HOLD, Reason.AT_MAX, Outcome.UNCHANGED, ("Warning", "MaxReplicasReached")),
            (Direction.UP, Reason.FALLBACK, Outcome.PATCHED, ("Warning", "ScalingFallback")),
            (Direction.HOLD, Reason.FALLBACK, Outcome.UNCHANGED, ("Warning", "ScalingFallback")),
            (Direction.UP, Reason.FALLBACK, Outcome.FAILED, ("Warning", "FailedRescale")),
            (Direction.HOLD, Reason.STEP_LIMITED, Outcome.UNCHANGED, None),
            (Direction.NONE, Reason.WITHIN_TARGET, Outcome.UNCHANGED, None),
            (Direction.HOLD, Reason.STABILIZING, Outcome.UNCHANGED, None),
        ],
    )
    def test_table(self, direction: Direction, reason: Reason, outcome: Outcome, expected: tuple[str, str] | None):
        """Scale changes and notable refusals get an Event; routine evaluations do not."""
        event = event_for(decision(direction, reason, desired=6), outcome=outcome, error="HTTP 403")
        assert (None if event is None else (event.type, event.reason)) == expected

    def test_rescale_message_reads_like_the_hpa(self):
        """SuccessfulRescale says the new size, the reason and every clamp."""
        d = decision(Direction.UP, Reason.BELOW_TARGET, desired=12, message="need 16",
                     clamps=(Clamp("max_replicas", 16, 12),))  # fmt: skip
        event = event_for(d, outcome=Outcome.PATCHED)
        assert event is not None
        assert (
            event.message
            == "New size: 12; reason: below_target: need 16 (clamped: max_replicas: wanted 16 replicas, limited to 12)"
        )


@contextlib.asynccontextmanager
async def recorder(world: World, *, min_interval: float = 60.0) -> AsyncIterator[EventRecorder]:
    config = world.config()
    events = parse_config({"events": {"min_interval": min_interval}}).events
    async with KubeApi(config.kubernetes) as api:
        rec = EventRecorder(events, api=api, instance="scaler-0", clock=asyncio.get_running_loop().time)
        rec.uid = world.kube.deployment(NS, "bolina")["metadata"]["uid"]
        task = asyncio.create_task(rec.run(), name="events")
        try:
            yield rec
            await asyncio.wait_for(rec.flush(), 5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


HELD = EventSpec("Warning", "ScaleHeld", "holding at 4: Consul data cannot be trusted")


@pytest.mark.looptime
class TestRecorder:
    async def test_core_event_on_the_deployment(self, world: World):
        """A core/v1 Event naming the Deployment (with its uid, as kubectl describe matches)."""
        async with recorder(world) as rec:
            rec.record(EventSpec("Normal", "SuccessfulRescale", "New size: 6; reason: below_target"))
        (event,) = world.kube.events(NS)
        deployment = world.kube.deployment(NS, "bolina")
        assert event["apiVersion"] == "v1"
        assert event["involvedObject"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bolina",
                                           "namespace": NS, "uid": deployment["metadata"]["uid"]}  # fmt: skip
        assert (event["type"], event["reason"], event["count"]) == ("Normal", "SuccessfulRescale", 1)
        assert event["source"] == {"component": "bolina-scaler"}
        assert event["firstTimestamp"] == event["lastTimestamp"]

    async def test_repeats_within_the_interval_are_one_event(self, world: World):
        """The same reason and message within min_interval: one Event; later, its count is bumped by PATCH."""
        async with recorder(world, min_interval=60) as rec:
            for _ in range(5):
                rec.record(HELD)
                await asyncio.sleep(1)
            await asyncio.wait_for(rec.flush(), 5)
            assert len(world.kube.events(NS)) == 1
            await asyncio.sleep(60)
            rec.record(HELD)
        (event,) = world.kube.events(NS)
        assert event["count"] == 6
        assert any(r.method == "PATCH" and "/events/" in r.path for r in world.kube.requests)

    async def test_different_messages_are_different_events(self, world: World):
        """A different message is a different Event."""
        async with recorder(world) as rec:
            rec.record(HELD)
            rec.record(EventSpec("Warning", "ScaleHeld", "holding at 4: mass change"))
        assert len(world.kube.events(NS)) == 2

    async def test_forbidden_never_raises(self, world: World):
        """Without RBAC for Events, recording fails quietly (one log line) and the recorder goes on."""
        world.kube.deny("create", "events")
        with capture_logs() as logs:
            async with recorder(world) as rec:
                rec.record(HELD)
                rec.record(EventSpec("Warning", "ScaleHeld", "holding at 4: mass change"))
                await asyncio.wait_for(rec.flush(), 5)
                assert world.kube.events(NS) == []
                world.kube.allow_all()
                rec.record(EventSpec("Normal", "SuccessfulRescale", "New size: 6; reason: below_target"))
        assert [e["reason"] for e in world.kube.events(NS)] == ["SuccessfulRescale"]
        failures = [line for line in logs if line["event"] == "events.failing"]
        assert len(failures) == 1, failures
        assert failures[0]["error"].startswith("forbidden (HTTP 403): the service account cannot create events")
        assert any(line["event"] == "events.recovered" for line in logs)


@pytest.mark.looptime
class TestDaemonEvents:
    async def test_scale_up_records_successful_rescale(self, world: World):
        """A scale-up leaves a SuccessfulRescale Event with the new size on the Deployment."""
        world.serving(4)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            world.set_statuses("warning", 1, 2, 3)
            await until(lambda: any(e["reason"] == "SuccessfulRescale" for e in world.kube.events(NS)))
        event = next(e for e in world.kube.events(NS) if e["reason"] == "SuccessfulRescale")
        assert event["message"].startswith("New size: 6; reason: below_target")
        assert event["involvedObject"]["uid"] == world.kube.deployment(NS, "bolina")["metadata"]["uid"]

    async def test_untrusted_data_is_one_scale_held_event(self, world: World):
        """Consul trouble over many evaluations: one ScaleHeld Event per distinct refusal, not one per evaluation."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.consul.known_leader = False
                for flip in range(6):
                    world.consul.set_status("bolina-1", "critical" if flip % 2 else "warning")
                    await asyncio.sleep(2)
                await until(lambda: any(e["reason"] == "ScaleHeld" for e in world.kube.events(NS)))
        held_evaluations = [e for e in logs if e["event"] == "decision.evaluated" and e["reason"] == "untrusted_data"]
        assert len(held_evaluations) >= 2
        held = [e for e in world.kube.events(NS) if e["reason"] == "ScaleHeld"]
        messages = [e["message"] for e in held]
        assert len(messages) == len(set(messages)), messages  # each distinct refusal once
        assert len(held) <= len({e["why"] for e in held_evaluations})
        assert all(e["type"] == "Warning" and "cannot be trusted" in e["message"] for e in held)
