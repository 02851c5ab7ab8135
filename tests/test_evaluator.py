"""The evaluator on its own: every arrow of its diagram (``daemon/evaluator.py``), without HTTP.

The scale is ``testing.scale.FakeScaleTarget`` (in memory, 409 on a stale resourceVersion), the
clock a plain number the test moves, and the role and the pause plain values: each case says
what goes in and which outcome, which requests and which timer come out.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import Conflict, Forbidden, KubernetesError, Unavailable
from bolina_scaler.config import Config, parse_config
from bolina_scaler.core.decision import Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Server
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.role import Role
from bolina_scaler.daemon.evaluator import CONFLICT_BACKOFF_MAX, MAX_CONFLICT_RETRIES, Evaluator
from bolina_scaler.metrics import Metrics
from bolina_scaler.testing.scale import FakeScaleTarget
from tests.builders import fleet

RETRY_INITIAL, RETRY_MAX, RESYNC = 0.5, 1.0, 30.0
BELOW = fleet(1, 3)
"""1 of 4 Available, target 0.5: the policy wants 6 of the 4 there are."""
WITHIN = fleet(3, 1)
"""3 of 4 Available: above the target 0.5, below scale_down_ratio 0.8 (demand off): nothing to do."""


HELD_AT_3 = Pause("bolina-scaler/paused-replicas=3", replicas=3)


def config(**overrides: Any) -> Config:
    return parse_config(
        {
            "kubernetes": {"retry_initial": RETRY_INITIAL, "retry_max": RETRY_MAX, "resync": RESYNC},
            "policy": {
                "min_replicas": 1,
                "max_replicas": 20,
                "target_available_ratio": 0.5,
                "scale_down_ratio": 0.8,
                "scale_down_stabilization": "10s",
                "demand": {"enabled": False},
            },
            **overrides,
        }
    )


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Steering:
    """Records each steer; ``then`` runs inside it (e.g. leadership lost meanwhile)."""

    calls: list[int] = field(default_factory=list)
    then: Any = None

    async def steer(self, servers: Sequence[Server], *, selector: str | None, remove: int) -> int:
        self.calls.append(remove)
        if self.then is not None:
            self.then()
        return remove


@dataclass
class Bench:
    """An evaluator wired to fakes whose inputs a test changes between evaluations."""

    target: FakeScaleTarget
    clock: Clock
    role: Role = Role.LEADER
    pause: Pause | None = None
    steering: Steering | None = None
    metrics: Metrics = field(default_factory=Metrics)
    evaluator: Evaluator = field(init=False)

    def __post_init__(self) -> None:
        self.evaluator = Evaluator(
            config(dry_run=self.role is Role.SHADOW),
            target=self.target,
            metrics=self.metrics,
            clock=self.clock,
            role=lambda: self.role,
            pause=lambda: self.pause,
            steering=self.steering,
            wall_clock=self.clock,
        )

    async def evaluate(self, snapshot: FleetSnapshot) -> Any:
        return await self.evaluator.evaluate(dataclasses.replace(snapshot, observed_at=self.clock.now))


def bench(replicas: int = 4, **kwargs: Any) -> Bench:
    return Bench(target=FakeScaleTarget(replicas), clock=Clock(), **kwargs)


def patched_to(b: Bench) -> list[int]:
    return [replicas for replicas, _ in b.target.patches]


class TestOutcomes:
    @pytest.mark.parametrize(
        ("role", "pause", "snapshot", "outcome", "sent", "reason"),
        [
            (Role.LEADER, None, WITHIN, Outcome.UNCHANGED, [], Reason.WITHIN_TARGET),
            (Role.LEADER, None, BELOW, Outcome.PATCHED, [6], Reason.BELOW_TARGET),
            (Role.FOLLOWER, None, BELOW, Outcome.NOT_LEADER, [], Reason.BELOW_TARGET),
            (Role.SHADOW, None, BELOW, Outcome.DRY_RUN, [], Reason.BELOW_TARGET),
            (Role.LEADER, Pause("bolina-scaler/paused=true"), BELOW, Outcome.UNCHANGED, [], Reason.PAUSED),
            (Role.LEADER, HELD_AT_3, BELOW, Outcome.PATCHED, [3], Reason.PAUSED),
            (Role.FOLLOWER, HELD_AT_3, BELOW, Outcome.NOT_LEADER, [], Reason.PAUSED),
        ],
    )  # fmt: skip
    async def test_each_outcome(
        self,
        role: Role,
        pause: Pause | None,
        snapshot: FleetSnapshot,
        outcome: Outcome,
        sent: list[int],
        reason: Reason,
    ):
        """The role and the pause decide what is sent; the outcome says it in one word, everywhere."""
        b = bench(role=role, pause=pause)
        evaluation = await b.evaluate(snapshot)
        assert (evaluation.outcome, patched_to(b), evaluation.decision.reason) == (outcome, sent, reason)
        assert b.evaluator.outcome is outcome
        assert b.evaluator.patches == (1 if outcome is Outcome.PATCHED else 0)
        if pause is not None:
            assert b.evaluator.policy_decision is not None
            assert b.evaluator.policy_decision.desired == 6, "the policy's own wish is kept beside the pause"
        else:
            assert b.evaluator.policy_decision is None

    async def test_a_patch_is_remembered_by_the_policy_and_counted(self):
        """PATCHED: the new scale is cached, the step is applied and recorded in the memory."""
        b = bench()
        await b.evaluate(BELOW)
        assert b.evaluator.scale is not None
        assert (b.evaluator.scale.replicas, b.evaluator.scale.resource_version) == (6, "2")
        assert [decision.desired for _, decision in b.evaluator.applied] == [6]
        assert b.evaluator.memory.last_replicas == 6
        assert b.metrics.registry.get_sample_value("bolina_scaler_patches_total", {"outcome": "patched"}) == 1

    async def test_the_patch_carries_the_resource_version_it_decided_on(self):
        """The precondition is the version read: a change made meanwhile is never overwritten."""
        b = bench()
        await b.evaluate(BELOW)
        assert b.target.patches == [(6, "1")]


class TestTheCachedScale:
    async def test_read_once_then_cached_until_resync(self):
        """Within kubernetes.resync the cached scale serves; after it, the scale is read again."""
        b = bench()
        await b.evaluate(WITHIN)
        b.clock.now += RESYNC - 1
        await b.evaluate(WITHIN)
        assert b.target.reads == 1
        b.clock.now += 2
        await b.evaluate(WITHIN)
        assert b.target.reads == 2

    async def test_a_change_made_outside_is_read_logged_and_followed(self):
        """A re-read that finds another count logs it, and the policy starts from it."""
        b = bench()
        await b.evaluate(WITHIN)
        b.target.scale_outside(7)
        b.clock.now += RESYNC
        with capture_logs() as logs:
            evaluation = await b.evaluate(WITHIN)
        assert [(e["before"], e["after"]) for e in logs if e["event"] == "scale.changed_outside"] == [(4, 7)]
        assert evaluation.decision.current == 7

    async def test_forgotten_while_its_read_is_in_flight(self):
        """A scale forgotten while its read is on the way serves that evaluation once and is not kept."""
        b = bench()
        b.target.read_gate = asyncio.Event()
        evaluating = asyncio.create_task(b.evaluate(WITHIN))
        await asyncio.sleep(0)
        assert b.target.reads == 1, "the read is in flight"
        b.evaluator.forget_scale()  # what the Deployment's DELETED or a new leadership does meanwhile
        b.target.read_gate.set()
        evaluation = await evaluating
        assert evaluation.decision.current == 4
        assert b.evaluator.scale is None, "an answer read before the forget is not kept"
        await b.evaluate(WITHIN)
        assert (b.target.reads, b.evaluator.scale is not None) == (2, True)


class TestFailures:
    @pytest.mark.parametrize(
        ("error", "wait"),
        [
            (Unavailable("unavailable (HTTP 503)", status=503), RETRY_INITIAL),
            (Unavailable("unavailable (HTTP 429)", status=429, retry_after=4.0), 4.0),
            # Whatever reaches the evaluator, it waits at most kubernetes.retry_after_max (5 s).
            (Unavailable("unavailable (HTTP 429)", status=429, retry_after=7.0), 5.0),
            (Unavailable("unavailable (HTTP 503)", status=503, retry_after=1e9), 5.0),
            (Unavailable("unavailable (HTTP 503)", status=503, retry_after=0.1), RETRY_INITIAL),
            (Forbidden("forbidden (HTTP 403)", status=403), RETRY_INITIAL),
        ],
    )
    async def test_an_unreadable_scale_holds_and_retries_after_a_backoff(self, error: KubernetesError, wait: float):
        """No decision; the read is tried again after the backoff, or after Retry-After when it is
        longer (at most kubernetes.retry_after_max); a Consul change meanwhile does not shorten the wait."""
        b = bench()
        b.target.fail("read", error)
        assert await b.evaluate(BELOW) is None
        assert (b.evaluator.read_error, b.evaluator.decision) == (str(error), None)
        assert b.evaluator.recheck_at == pytest.approx(b.clock.now + wait)
        b.clock.now += wait - 0.01
        assert await b.evaluate(BELOW) is None
        assert b.target.reads == 1, "new data inside the backoff sends no request"
        b.clock.now += 0.01
        evaluation = await b.evaluate(BELOW)
        assert (evaluation.outcome, b.evaluator.read_error, b.target.reads) == (Outcome.PATCHED, None, 2)

    async def test_a_backoff_grows_while_reads_fail_and_resets_after_an_answer(self):
        """Failures in a row wait longer each time (up to retry_max); an answer starts again from retry_initial."""
        b = bench()
        waits = []
        for _ in range(4):
            b.target.fail("read", Unavailable("unavailable (HTTP 503)", status=503))
            assert await b.evaluate(WITHIN) is None
            assert b.evaluator.recheck_at is not None
            waits.append(b.evaluator.recheck_at - b.clock.now)
            b.clock.now = b.evaluator.recheck_at
        assert waits[0] == pytest.approx(RETRY_INITIAL)
        assert all(RETRY_INITIAL <= w <= RETRY_MAX for w in waits)
        assert max(waits[1:]) > RETRY_INITIAL, "the ceiling doubled"
        await b.evaluate(WITHIN)
        b.target.fail("read", Unavailable("unavailable (HTTP 503)", status=503))
        b.evaluator.forget_scale()
        await b.evaluate(WITHIN)
        assert b.evaluator.recheck_at == pytest.approx(b.clock.now + RETRY_INITIAL)

    async def test_a_failed_patch_holds_and_reads_again_after_a_backoff(self):
        """FAILED: the error is kept on the evaluation, the scale forgotten, and read again after the backoff."""
        b = bench()
        b.target.fail("patch", Forbidden("forbidden (HTTP 403): patch deployments/scale", status=403))
        evaluation = await b.evaluate(BELOW)
        assert (evaluation.outcome, evaluation.error) == (
            Outcome.FAILED,
            "forbidden (HTTP 403): patch deployments/scale",
        )
        assert b.evaluator.scale is None
        assert b.evaluator.recheck_at == pytest.approx(b.clock.now + RETRY_INITIAL)
        b.clock.now += RETRY_INITIAL
        evaluation = await b.evaluate(BELOW)
        assert (evaluation.outcome, b.target.reads, patched_to(b)) == (Outcome.PATCHED, 2, [6, 6])


def conflicts(n: int) -> list[KubernetesError]:
    return [Conflict("conflict (HTTP 409)", status=409) for _ in range(n)]


class TestConflicts:
    @pytest.mark.parametrize("n", [1, 2, MAX_CONFLICT_RETRIES - 1])
    async def test_a_conflict_is_read_again_and_decided_again(self, n: int):
        """CONFLICT: re-read, decide again, patch again, within the same evaluation."""
        b = bench()
        b.target.fail("patch", *conflicts(n))
        evaluation = await b.evaluate(BELOW)
        assert evaluation.outcome is Outcome.PATCHED
        assert (b.target.reads, len(b.target.patches), b.evaluator.evaluations) == (n + 1, n + 1, n + 1)

    async def test_a_stale_version_is_a_conflict_and_the_new_count_wins(self):
        """Someone scaled between the read and the patch: the patch is refused, the next decision starts from theirs."""
        b = bench()
        await b.evaluate(WITHIN)
        b.target.scale_outside(5)
        evaluation = await b.evaluate(BELOW)
        assert b.target.patches[0] == (6, "1"), "decided on the cached 4, sent with its version"
        assert evaluation.outcome is Outcome.PATCHED
        assert evaluation.decision.current == 5, "then read again and decided from 5"

    async def test_a_conflict_storm_backs_off_and_the_backoff_grows_round_after_round(self):
        """MAX_CONFLICT_RETRIES conflicts end the evaluation; no evaluation (new data included)
        until a backoff that grows with each round; any other outcome resets it."""
        b = bench()
        waits = []
        for _ in range(4):
            b.target.fail("patch", *conflicts(MAX_CONFLICT_RETRIES))
            evaluation = await b.evaluate(BELOW)
            assert evaluation.outcome is Outcome.CONFLICT
            quiet_until = b.evaluator.recheck_at
            assert quiet_until is not None
            waits.append(quiet_until - b.clock.now)
            sent = len(b.target.patches)
            b.clock.now = quiet_until - 0.01
            assert await b.evaluate(BELOW) is None
            assert len(b.target.patches) == sent, "quiet: nothing sent"
            b.clock.now = quiet_until
        ceilings = [min(CONFLICT_BACKOFF_MAX, RETRY_INITIAL * 2**n) for n in range(4)]
        assert all(max(RETRY_INITIAL, c / 2) <= w <= c for w, c in zip(waits, ceilings, strict=True))
        assert waits[3] > waits[0]
        await b.evaluate(BELOW)  # patched: the storm is over
        b.target.fail("patch", *conflicts(MAX_CONFLICT_RETRIES))
        b.target.scale_outside(4)  # so that a change is wanted again
        b.evaluator.forget_scale()
        await b.evaluate(BELOW)
        assert b.evaluator.recheck_at == pytest.approx(b.clock.now + RETRY_INITIAL)


class TestScaleDown:
    async def test_pods_are_steered_before_the_patch(self):
        """A scale-down marks the pods to remove first, then patches."""
        b = bench(8, steering=Steering())
        await b.evaluate(fleet(8))
        b.clock.now += 11  # past scale_down_stabilization
        evaluation = await b.evaluate(fleet(8))
        assert evaluation.outcome is Outcome.PATCHED
        assert b.steering is not None
        assert b.steering.calls == [8 - evaluation.decision.desired]
        assert patched_to(b) == [evaluation.decision.desired]

    async def test_leadership_lost_while_steering_sends_no_patch(self):
        """NOT_LEADER: the Lease was lost while the pods were annotated; the patch is not sent."""
        steering = Steering()
        b = bench(8, steering=steering)
        steering.then = lambda: setattr(b, "role", Role.FOLLOWER)
        await b.evaluate(fleet(8))
        b.clock.now += 11
        evaluation = await b.evaluate(fleet(8))
        assert evaluation.outcome is Outcome.NOT_LEADER
        assert steering.calls
        assert b.target.patches == []
