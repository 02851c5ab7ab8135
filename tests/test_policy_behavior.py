"""The HPA's behavior rules in the pure policy: ``select``, per-rule periods and the scale-up stabilization.

Plain values and hypothesis invariants, as in ``test_policy``; its strategies (situations, runs)
drive ``decide`` here with the new keys set.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from bolina_scaler.config import PolicyConfig, ScaleDownConfig, ScaleUpConfig, StepRule
from bolina_scaler.core.decision import Decision, Direction, Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import lowest_recommendation, note_recommendation
from bolina_scaler.core.policy import Memory, ScaleChange, decide, record_scale
from tests.builders import fleet
from tests.test_policy import WALL, at, decide_at, runs, situations


def _limits(step: int, percent: float, current: int) -> tuple[int, int]:
    """What the Pods rule and the Percent rule each allow from ``current`` with nothing used."""
    return step, math.ceil(current * percent / 100)


class TestSelect:
    def test_max_takes_the_rule_that_allows_more(self):
        """select: max (the default) is today's behaviour: max(4 pods, 100 %) of 10 is 10."""
        decision, _ = at(10, fleet(0, 10), scale_up=ScaleUpConfig(max_step=4, max_percent=100, period=15))
        assert decision.desired == 20

    def test_min_takes_the_rule_that_allows_less(self):
        """select: min: min(4 pods, 100 %) of 10 is 4, and the clamp says so."""
        up = ScaleUpConfig(max_step=4, max_percent=100, period=15, select="min")
        decision, _ = at(10, fleet(0, 10), scale_up=up)
        assert decision.desired == 14
        assert [str(c) for c in decision.clamps] == [
            "scale_up_step: wanted 20 replicas, limited to 14 (at most 4 up per 15s, 0 used)"
        ]

    def test_min_scale_down(self):
        """select: min on the way down: min(3 pods, 10 % of 20 = 2) removes 2."""
        down = ScaleDownConfig(max_step=3, max_percent=10, period=60, select="min")
        decision, _ = at(20, fleet(20), now=301.0, memory=Memory(last_replicas=20, above_since=0.0), scale_down=down)
        assert (decision.direction, decision.desired) == (Direction.DOWN, 18)

    def test_disabled_up_holds_and_says_why(self):
        """select: disabled never scales up, holds without a recheck, and says which key disables it."""
        decision, _ = at(10, fleet(0, 10), scale_up=ScaleUpConfig(select="disabled"))
        assert (decision.desired, decision.direction, decision.reason) == (10, Direction.HOLD, Reason.STEP_LIMITED)
        assert decision.recheck_at is None
        assert "scaling up is disabled (scale_up.select)" in decision.message

    def test_disabled_down_holds(self):
        """select: disabled on scale_down keeps every server once the window has run."""
        memory = Memory(last_replicas=20, above_since=0.0)
        decision, _ = at(20, fleet(20), now=301.0, memory=memory, scale_down=ScaleDownConfig(select="disabled"))
        assert (decision.desired, decision.direction) == (20, Direction.HOLD)
        assert "scaling down is disabled (scale_down.select)" in decision.message

    def test_disabled_leaves_the_bounds_in_force(self):
        """As in the HPA, the bounds apply whatever the behavior: below min_replicas still goes up."""
        decision, _ = at(0, fleet(), scale_up=ScaleUpConfig(select="disabled"))
        assert (decision.desired, decision.reason) == (2, Reason.COLD_START)

    @settings(max_examples=300, deadline=None)
    @given(
        situations(), st.integers(1, 6), st.sampled_from([0.0, 10.0, 50.0, 100.0, 250.0]), st.sampled_from([0, 1, 3])
    )
    def test_min_never_allows_more_than_either_rule(self, case, step, percent, used):
        """With select: min, one decision never moves more than either rule leaves after ``used`` replicas
        moved a second ago, in either direction."""
        config, current, snapshot, memory, now = case
        memory = Memory(
            last_replicas=current,
            above_since=memory.above_since,
            changes=(ScaleChange(now - 1, current - used, current), ScaleChange(now - 1, current + used, current)),
        )
        up = ScaleUpConfig(max_step=step, max_percent=percent, period=15, select="min")
        down = ScaleDownConfig(max_step=step, max_percent=percent, period=60, select="min")
        decision, _ = decide_at((config, current, snapshot, memory, now), scale_up=up, scale_down=down)
        if config.min_replicas <= current <= config.max_replicas:
            for limit in _limits(step, percent, current):
                assert decision.desired - current <= max(0, limit - used)
                assert current - decision.desired <= max(0, limit - used)

    @settings(max_examples=300, deadline=None)
    @given(situations())
    def test_disabled_never_moves_that_way(self, case):
        """Within the bounds, scale_up disabled never raises the count and scale_down disabled never lowers it."""
        config, current, *_ = case
        no_up, _ = decide_at(case, scale_up=ScaleUpConfig(select="disabled"))
        no_down, _ = decide_at(case, scale_down=ScaleDownConfig(select="disabled"))
        if config.min_replicas <= current <= config.max_replicas:
            assert no_up.desired <= current
            assert no_down.desired >= current

    @settings(max_examples=300, deadline=None)
    @given(situations())
    def test_the_short_form_is_its_two_rules(self, case):
        """max_step/max_percent/period decide exactly as the policies list of a Pods and a Percent rule."""
        config, current, snapshot, memory, now = case
        memory = Memory(last_replicas=current, changes=(ScaleChange(now - 5, current - 2, current),))
        short = ScaleUpConfig(max_step=3, max_percent=50, period=15)
        rules = (StepRule(type="Pods", value=3, period=15), StepRule(type="Percent", value=50, period=15))
        one, _ = decide_at((config, current, snapshot, memory, now), scale_up=short)
        two, _ = decide_at((config, current, snapshot, memory, now), scale_up=ScaleUpConfig(policies=rules))
        assert one == two


class TestPolicies:
    RULES = (StepRule(type="Pods", value=2, period=15), StepRule(type="Percent", value=50, period=60))

    def test_each_rule_counts_its_own_period(self):
        """4 added 20 s ago: outside the Pods rule's 15 s, inside the Percent rule's 60 s."""
        memory = Memory(last_replicas=10, changes=(ScaleChange(-20.0, 6, 10),))
        up_max = ScaleUpConfig(policies=self.RULES)
        up_min = ScaleUpConfig(policies=self.RULES, select="min")
        most, _ = at(10, fleet(0, 10), memory=memory, scale_up=up_max)
        least, _ = at(10, fleet(0, 10), memory=memory, scale_up=up_min)
        # Pods: 2 − 0 = 2; Percent: ceil(10 × 50 %) − 4 = 1.
        assert (most.desired, least.desired) == (12, 11)
        assert most.clamps[0].detail == "max of: 2 per 15s, 0 used; 5 per 60s, 4 used"

    def test_recheck_when_a_change_leaves_any_period(self):
        """Held by both rules, the policy asks again when the change leaves the shorter period."""
        memory = Memory(last_replicas=10, changes=(ScaleChange(-5.0, 5, 10),))
        decision, _ = at(10, fleet(0, 10), memory=memory, scale_up=ScaleUpConfig(policies=self.RULES))
        assert (decision.reason, decision.recheck_at) == (Reason.STEP_LIMITED, 10.0)

    def test_changes_are_kept_for_the_longest_period(self):
        """A change stays in memory as long as the longest rule counts it (90 s here), and no longer."""
        rules = (StepRule(type="Pods", value=2, period=15), StepRule(type="Percent", value=50, period=90))
        config = PolicyConfig(scale_up=ScaleUpConfig(policies=rules), startup_grace=30)
        decision, memory = decide(fleet=fleet(0, 4), current=4, config=config, memory=Memory(), now=0.0)
        memory = record_scale(memory, decision, now=0.0)
        _, kept = decide(fleet=fleet(0, 6), current=decision.desired, config=config, memory=memory, now=89.0)
        _, gone = decide(fleet=fleet(0, 6), current=decision.desired, config=config, memory=memory, now=90.0)
        assert (decision.desired, len(kept.changes), len(gone.changes)) == (6, 1, 0)


def _burst(window: float) -> list[Decision]:
    """A fleet that is fine at 0 s, short of servers from 10 s on, evaluated every 10 s up to 70 s."""
    config = PolicyConfig(scale_up=ScaleUpConfig(stabilization=window))
    memory, current, decisions = Memory(), 4, []
    for now in range(0, 80, 10):
        snapshot = fleet(4) if now == 0 else fleet(0, current)
        decision, memory = decide(fleet=snapshot, current=current, config=config, memory=memory, now=float(now))
        decisions.append(decision)
        memory = record_scale(memory, decision, now=float(now))
        current = decision.desired
    return decisions


class TestScaleUpStabilization:
    def test_zero_scales_up_at_once(self):
        """Without a window (the default) the first short evaluation scales up."""
        decisions = _burst(0.0)
        assert decisions[1].direction is Direction.UP

    def test_waits_while_a_lower_count_is_in_the_window(self):
        """With 60 s, the count recommended at 0 s (keep 4) holds the scale-up until it leaves the window;
        then the lowest count since (6, at 10 s) is the one scaled to; and that 6, still in the window,
        holds the next scale-up back too (as the HPA's window does)."""
        decisions = _burst(60.0)
        held = decisions[1:6]
        assert all((d.direction, d.reason, d.desired) == (Direction.HOLD, Reason.STABILIZING, 4) for d in held)
        assert held[0].recheck_at == 60.0
        assert [c.name for c in held[0].clamps] == ["scale_up_stabilization"]
        assert (decisions[6].direction, decisions[6].desired) == (Direction.UP, 6)
        assert (decisions[7].direction, decisions[7].reason, decisions[7].recheck_at) == (
            Direction.HOLD,
            Reason.STABILIZING,
            120.0,
        )

    def test_scales_up_only_to_the_lowest_recommendation(self):
        """A recommendation of 6 within the window limits a wish for 12 to 6."""
        memory = Memory(last_replicas=4, up_recommendations=((0.0, 6),))
        decision, _ = at(4, fleet(0, 4), now=10.0, memory=memory, scale_up=ScaleUpConfig(stabilization=30))
        assert (decision.direction, decision.desired) == (Direction.UP, 6)
        assert str(decision.clamps[0]).startswith("scale_up_stabilization: wanted 8 replicas, limited to 6")

    def test_untrusted_data_recommends_nothing(self):
        """An evaluation on untrusted data adds nothing to the window (the HPA records no recommendation
        when its metrics fail)."""
        config = PolicyConfig(scale_up=ScaleUpConfig(stabilization=30))
        _, memory = decide(fleet=fleet(4, problems=("x",)), current=4, config=config, memory=Memory(), now=0.0)
        assert memory.up_recommendations == ()

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.tuples(st.sampled_from([0.0, 1.0, 5.0, 29.0, 30.0, 31.0]), st.integers(0, 40)), max_size=60),
        st.sampled_from([1.0, 30.0, 300.0]),
    )
    def test_the_window_is_a_bounded_sliding_minimum(self, notes, window):
        """After any run of notes, the memory's lowest is the minimum of the counts (capped at max_replicas)
        noted within the window, and it keeps at most max_replicas + 1 of them."""
        config = PolicyConfig(max_replicas=20, scale_up=ScaleUpConfig(stabilization=window))
        memory, now, noted = Memory(), 0.0, []
        for wait, count in notes:
            now += wait
            memory = note_recommendation(memory, count, config, now)
            noted.append((now, min(count, 20)))
            inside = [value for t, value in noted if t > now - window]
            lowest = lowest_recommendation(memory, config, now)
            assert lowest is not None
            assert lowest[0] == min(inside)
            assert len(memory.up_recommendations) <= config.max_replicas + 1

    @settings(max_examples=200, deadline=None)
    @given(runs(), st.sampled_from([15.0, 60.0, 300.0]))
    def test_never_scales_up_above_the_window_minimum(self, run, window):
        """Over any run, a scale-up never goes above the lowest count recommended within the window (read
        from the decisions: what each one wanted, or the current count when it wanted no more)."""
        config, steps = run
        config = config.model_copy(update={"scale_up": ScaleUpConfig(stabilization=window)})
        recommended: list[tuple[float, int]] = []
        for decision, now in _evaluate(config, steps):
            count = _recommendation(decision, config)
            if count is not None:
                recommended.append((now, count))
            if decision.direction is Direction.UP and decision.reason not in (Reason.COLD_START, Reason.BELOW_MIN):
                lowest = min(value for t, value in recommended if t > now - window)
                assert decision.desired <= max(decision.current, lowest), decision

    # The run found is not shrunk (only that one exists matters): hypothesis warns that its repr is long.
    @pytest.mark.filterwarnings("ignore:Generating overly large repr")
    def test_the_runs_reach_a_stabilized_scale_up(self):
        """The strategy is not vacuous: some run scales up to less than it wanted because of the window."""

        def stabilized(run) -> bool:
            config, steps = run
            config = config.model_copy(update={"scale_up": ScaleUpConfig(stabilization=60.0)})
            return any(
                d.direction is Direction.UP and any(c.name == "scale_up_stabilization" for c in d.clamps)
                for d, _ in _evaluate(config, steps)
            )

        run = find(runs(), stabilized, settings=settings(max_examples=10_000, database=None, phases=[Phase.generate]))
        assert stabilized(run)


def _evaluate(config: PolicyConfig, steps):
    """Drive ``decide`` through a run of ``test_policy.runs``; yields (decision, now)."""
    memory, now, current = Memory(), 0.0, 3
    for servers, problems, wait, hand, applied in steps:
        now += wait
        current = current if hand is None else hand
        snapshot = FleetSnapshot.of(servers, index=5, observed_at=now, problems=problems)
        decision, memory = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now, wall_now=WALL)
        yield decision, now
        if applied:
            memory = record_scale(memory, decision, now=now)
            current = decision.desired


_NO_RECOMMENDATION = {
    Reason.COLD_START,
    Reason.BELOW_MIN,
    Reason.ABOVE_MAX,
    Reason.UNTRUSTED_DATA,
    Reason.STALE_DATA,
    Reason.MASS_CHANGE_GUARD,
    Reason.NO_SERVERS_REGISTERED,
}


def _recommendation(decision: Decision, config: PolicyConfig) -> int | None:
    """The count a decision recommended to the scale-up window, read from the decision alone: None for the
    rules before sizing; for the scale-up rule what it wanted (the first clamp's ``before``, capped at
    max_replicas), else the current count."""
    if decision.reason in _NO_RECOMMENDATION:
        return None
    names = [c.name for c in decision.clamps]
    up = decision.direction is Direction.UP or (
        decision.direction is Direction.HOLD
        and (decision.reason is Reason.AT_MAX or "scale_up_stabilization" in names or "scale_up_step" in names)
    )
    if not up:
        return decision.current
    if not decision.clamps:
        return decision.desired
    return min(decision.clamps[0].before, config.max_replicas)
