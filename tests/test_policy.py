"""The pure scaling policy, tested with plain values: tables of cases and hypothesis invariants."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import msgspec
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from bolina_scaler.config import DemandConfig, MassChangeConfig, PolicyConfig, ScaleDownConfig, ScaleUpConfig
from bolina_scaler.core.decision import Direction, Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Server, Status
from bolina_scaler.core.policy import Memory, ScaleChange, decide, record_scale
from tests.builders import fleet, server

CONFIG = PolicyConfig(
    min_replicas=2,
    max_replicas=20,
    target_available_ratio=0.5,
    scale_down_ratio=0.8,
    scale_down_stabilization=300,
    startup_grace=120,
    max_snapshot_age=900,
    scale_up=ScaleUpConfig(max_step=4, max_percent=100, period=15),
    scale_down=ScaleDownConfig(max_step=1, max_percent=10, period=60),
    mass_change=MassChangeConfig(ratio=0.5, min_fleet=4, confirmation=30),
)


def at(current: int, snapshot: FleetSnapshot, *, now: float = 0.0, memory: Memory | None = None, **overrides: object):
    config = CONFIG.model_copy(update=overrides) if overrides else CONFIG
    mem = memory if memory is not None else Memory(last_replicas=current)
    return decide(fleet=snapshot, current=current, config=config, memory=mem, now=now)


class TestScaleUp:
    @pytest.mark.parametrize(
        ("current", "available", "warning", "critical", "desired"),
        [
            (4, 1, 3, 0, 6),  # 1/4 < 0.5: +2 → 3/6
            (4, 2, 2, 0, 4),  # exactly at target: nothing
            (4, 0, 4, 0, 8),  # 0/4: +4 → 4/8
            (10, 4, 3, 3, 12),  # 4/10: +2 → 6/12
            (3, 1, 1, 1, 4),  # 1/3: +1 → 2/4
            (19, 0, 19, 0, 20),  # clamped by max_replicas
        ],
    )
    def test_smallest_n_that_restores_the_target(self, current, available, warning, critical, desired):
        """Below target, the scaler adds the smallest number of servers that brings the share back."""
        decision, _ = at(current, fleet(available, warning, critical))
        assert decision.desired == desired

    def test_step_limit_clamps_and_is_recorded(self):
        """A large shortfall is limited to max(max_step, max_percent) per period, and the clamp is listed."""
        decision, _ = at(10, fleet(0, 10), scale_up=ScaleUpConfig(max_step=2, max_percent=10, period=15))
        assert decision.desired == 12
        assert [c.name for c in decision.clamps] == ["scale_up_step"]
        assert decision.clamps[0].before == 20

    def test_step_budget_is_shared_within_the_period(self):
        """Two scale-ups inside one period together stay within the step limit."""
        up = ScaleUpConfig(max_step=2, max_percent=0, period=15)
        first, memory = at(4, fleet(0, 4), scale_up=up)
        memory = record_scale(memory, first, now=0.0)
        second, _ = at(6, fleet(0, 6), now=5.0, memory=memory, scale_up=up)
        assert first.desired == 6
        assert second.direction is Direction.HOLD
        assert second.reason is Reason.STEP_LIMITED
        assert second.recheck_at == 15.0

    def test_at_max_holds_and_says_so(self):
        """At max_replicas with a shortfall, the decision is a HOLD with reason at_max."""
        decision, _ = at(20, fleet(0, 20))
        assert (decision.desired, decision.direction, decision.reason) == (20, Direction.HOLD, Reason.AT_MAX)

    def test_max_replicas_clamp_is_recorded(self):
        """When max_replicas cuts the raw answer, the clamp says from what to what."""
        decision, _ = at(18, fleet(2, 16))
        assert decision.desired == 20
        assert decision.clamps[0].name == "max_replicas"


class TestInFlight:
    def test_pending_servers_count_as_capacity(self):
        """Replicas requested but not yet registered count as Available during startup_grace: no runaway."""
        first, memory = at(4, fleet(1, 3), now=0.0)
        assert first.desired == 6
        memory = record_scale(memory, first, now=0.0)
        # The two new pods have not registered yet; the old servers are still Warning.
        again, _ = at(6, fleet(1, 3), now=10.0, memory=memory)
        assert again.inputs.pending == 2
        assert again.desired == 6
        assert again.direction is Direction.NONE

    def test_pending_expire_after_grace_and_the_log_says_so(self):
        """After startup_grace, unregistered replicas stop counting and a note explains it."""
        first, memory = at(4, fleet(1, 3), now=0.0)
        memory = record_scale(memory, first, now=0.0)
        later, _ = at(6, fleet(1, 3), now=121.0, memory=memory)
        assert later.inputs.pending == 0
        assert later.inputs.pending_expired == 2
        assert any("startup_grace" in note for note in later.notes)
        assert later.desired > 6

    def test_recheck_when_grace_ends(self):
        """While servers are starting, the policy asks to be re-evaluated when their grace ends."""
        first, memory = at(4, fleet(1, 3), now=0.0)
        memory = record_scale(memory, first, now=0.0)
        again, _ = at(6, fleet(1, 3), now=10.0, memory=memory)
        assert again.recheck_at == 120.0

    def test_pending_still_short_scales_further(self):
        """Counting starting servers as capacity, a remaining shortfall still scales up by what is missing."""
        first, memory = at(4, fleet(1, 3), now=0.0)
        memory = record_scale(memory, first, now=0.0)
        # The 4 registered servers all turn Critical while the 2 new ones start: (0+2)/(4+2) < 0.5.
        no_guard = MassChangeConfig(min_fleet=100)
        decision, _ = at(6, fleet(0, 0, 4), now=10.0, memory=memory, mass_change=no_guard)
        assert decision.inputs.pending == 2
        assert decision.desired == 8


class TestColdStartAndBounds:
    def test_cold_start_goes_to_min(self):
        """A Deployment at 0 replicas goes to min_replicas, even before any server registers."""
        decision, _ = at(0, fleet())
        assert (decision.desired, decision.reason) == (2, Reason.COLD_START)

    def test_bounds_apply_even_on_untrusted_data(self):
        """min/max come from the config, not from Consul, so they apply when Consul is not trusted."""
        decision, _ = at(0, fleet(problems=("consul unreachable",)))
        assert decision.desired == 2
        above, _ = at(25, fleet(25, problems=("consul unreachable",)))
        assert (above.desired, above.reason) == (20, Reason.ABOVE_MAX)

    def test_no_patch_when_desired_equals_current(self):
        """A fleet at target produces no change."""
        decision, _ = at(4, fleet(3, 1))
        assert not decision.changes_scale

    def test_nothing_registered_holds(self):
        """Replicas exist but nothing is registered and nothing is starting: hold, do not scale blindly."""
        decision, _ = at(3, fleet())
        assert decision.reason is Reason.NO_SERVERS_REGISTERED
        assert decision.desired == 3


class TestTrust:
    def test_untrusted_data_holds(self):
        """A snapshot marked untrusted never moves the replica count, however bad it looks."""
        decision, _ = at(4, fleet(0, 4, problems=("no known leader",)))
        assert (decision.direction, decision.reason, decision.desired) == (Direction.HOLD, Reason.UNTRUSTED_DATA, 4)
        assert "no known leader" in decision.message

    def test_stale_data_holds(self):
        """A snapshot older than max_snapshot_age is not acted on."""
        decision, _ = at(4, fleet(0, 4, observed_at=0.0), now=901.0)
        assert decision.reason is Reason.STALE_DATA


class TestScaleDown:
    def test_needs_the_stabilization_window(self):
        """A high share scales down only after it has lasted scale_down_stabilization seconds."""
        first, memory = at(10, fleet(10), now=0.0)
        assert (first.direction, first.reason, first.recheck_at) == (Direction.NONE, Reason.STABILIZING, 300.0)
        early, memory = at(10, fleet(10), now=299.0, memory=memory)
        assert early.reason is Reason.STABILIZING
        late, _ = at(10, fleet(10), now=300.0, memory=memory)
        assert (late.direction, late.desired) == (Direction.DOWN, 9)

    def test_a_dip_restarts_the_window(self):
        """One evaluation below scale_down_ratio restarts the stabilization window."""
        _, memory = at(10, fleet(10), now=0.0)
        _, memory = at(10, fleet(7, 3), now=200.0, memory=memory)
        decision, _ = at(10, fleet(10), now=400.0, memory=memory)
        assert decision.reason is Reason.STABILIZING

    def test_never_below_target_after_scale_down(self):
        """Scale-down never goes to a size whose predicted share (removed = Available) is below target."""
        big_step = ScaleDownConfig(max_step=100, max_percent=100, period=60)
        _, memory = at(10, fleet(8, 2), now=0.0, scale_down=big_step)
        decision, _ = at(10, fleet(8, 2), now=300.0, memory=memory, scale_down=big_step)
        removed = 10 - decision.desired
        assert (8 - removed) / (10 - removed) >= 0.5
        assert decision.desired == 4  # 4/6 would be kept; 3/5 too; (8-6)/(10-6)=0.5 → 6 removed

    def test_not_while_servers_are_starting(self):
        """Nothing is removed while requested servers have not registered yet, even with no window."""
        first, memory = at(10, fleet(5, 5), now=0.0, scale_down_stabilization=0)
        memory = record_scale(memory, first, now=0.0)
        assert first.desired == 10 or first.direction is Direction.NONE
        memory = record_scale(memory, replace(first, current=10, desired=12), now=1.0)
        decision, _ = at(12, fleet(10), now=50.0, memory=memory, scale_down_stabilization=0)
        assert decision.inputs.pending == 2
        assert decision.direction is Direction.NONE

    def test_replicas_that_never_registered_are_removed_after_grace(self):
        """Once their grace is over, replicas that never registered no longer block a scale-down."""
        memory = record_scale(Memory(last_replicas=10), replace(at(10, fleet(10))[0], current=10, desired=12), now=0.0)
        decision, _ = at(12, fleet(10), now=121.0, memory=memory, scale_down_stabilization=0)
        assert decision.inputs.pending_expired == 2
        assert decision.direction is Direction.DOWN

    def test_min_replicas_bound(self):
        """Scale-down stops at min_replicas."""
        _, memory = at(2, fleet(2), now=0.0)
        decision, _ = at(2, fleet(2), now=500.0, memory=memory)
        assert (decision.desired, decision.reason) == (2, Reason.AT_MIN)


class TestMassChangeGuard:
    def test_holds_then_confirms(self):
        """Half the fleet turning Critical at once holds for the confirmation window, then acts."""
        _, memory = at(8, fleet(8), now=0.0)
        held, memory = at(8, fleet(4, 0, 4), now=1.0, memory=memory)
        assert (held.direction, held.reason, held.recheck_at) == (Direction.HOLD, Reason.MASS_CHANGE_GUARD, 31.0)
        still, memory = at(8, fleet(4, 0, 4), now=20.0, memory=memory)
        assert still.reason is Reason.MASS_CHANGE_GUARD
        confirmed, _ = at(8, fleet(3, 0, 5), now=31.0, memory=memory)
        assert confirmed.direction is Direction.UP

    def test_a_reverted_blip_clears_the_guard(self):
        """If the fleet comes back within the window, nothing is done and the guard resets."""
        _, memory = at(8, fleet(8), now=0.0)
        _, memory = at(8, fleet(0, 0, 0), now=1.0, memory=memory)
        back, memory = at(8, fleet(8), now=5.0, memory=memory)
        assert back.reason is not Reason.MASS_CHANGE_GUARD
        assert memory.guard_since is None

    def test_servers_with_one_id_on_many_nodes_are_many(self):
        """Ten servers registered as 'bolina' on ten nodes are ten to the guard (Consul keeps IDs
        unique per agent only): six of them turning Critical at once is a mass change."""

        def same_id(available: int, critical: int) -> FleetSnapshot:
            statuses = [Status.AVAILABLE] * available + [Status.CRITICAL] * critical
            same = [
                msgspec.structs.replace(server(n, status), instance_id="bolina") for n, status in enumerate(statuses)
            ]
            return FleetSnapshot.of(same, index=10, observed_at=0.0)

        _, memory = at(10, same_id(10, 0), now=0.0)
        held, _ = at(10, same_id(4, 6), now=1.0, memory=memory)
        assert held.reason is Reason.MASS_CHANGE_GUARD

    def test_small_fleets_are_not_guarded(self):
        """Below min_fleet, a change is acted on at once."""
        _, memory = at(3, fleet(3), now=0.0)
        decision, _ = at(3, fleet(0, 0, 3), now=1.0, memory=memory)
        assert decision.direction is Direction.UP


class TestHandScaling:
    def test_starts_from_a_hand_made_change(self):
        """A person scaling by hand is respected: the scaler starts from the new value and says so."""
        memory = Memory(last_replicas=4)
        decision, memory = at(8, fleet(4), now=0.0, memory=memory)
        assert decision.inputs.external_change == 4
        assert any("someone else" in note for note in decision.notes)
        # The 4 extra pods are starting: counted as capacity, no scale-up, no scale-down either.
        assert decision.inputs.pending == 4
        assert not decision.changes_scale


class TestRecordScale:
    def test_unapplied_decisions_leave_no_trace(self):
        """A decision that changes nothing does not touch the memory."""
        decision, memory = at(4, fleet(2, 2))
        assert record_scale(memory, decision, now=0.0) is memory


# Hypothesis invariants ------------------------------------------------------------------------

statuses = st.lists(st.sampled_from([*Status, Status.AVAILABLE, Status.AVAILABLE]), max_size=40)
WALL = 1_700_000_000.0
"""The wall clock of the demand tests (unix seconds)."""
# A server's figures: none, or a load with a demand stamped fresh, stale (beyond max_age 600 s),
# or in the future (beyond FUTURE_TOLERANCE 60 s), or with no stamp.
_ages = st.sampled_from([0.0, 30.0, 599.0, 601.0, 5000.0, -59.0, -61.0, None])
figures = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.5, 0.7, 0.85, 1.0]),
        st.sampled_from([0.0, 0.3, 0.8, 1.0, 2.5, 9.0, 100.0]),
        _ages,
    ),
)


def with_figures(n: int, status: Status, fig: tuple[float, float, float | None] | None) -> Server:
    base = server(n, status)
    if fig is None:
        return base
    load, demand, age = fig
    return msgspec.structs.replace(base, load=load, demand=demand, demand_at=None if age is None else WALL - age)


def stale(fig: tuple[float, float, float | None] | None) -> bool:
    """Whether the policy must not use this demand: missing, unstamped, too old, or too far ahead."""
    return fig is None or fig[2] is None or not -60.0 <= fig[2] <= 600.0


@st.composite
def situations(draw: st.DrawFn):
    min_r = draw(st.integers(0, 10))
    max_r = draw(st.integers(max(1, min_r), 40))
    target = draw(st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 0.9]))
    down = draw(st.floats(min_value=target + 0.01, max_value=1.0))
    config = CONFIG.model_copy(
        update={
            "min_replicas": min_r,
            "max_replicas": max_r,
            "target_available_ratio": target,
            "scale_down_ratio": down,
        }
    )
    current = draw(st.integers(min_r, max_r))
    kinds = draw(statuses)
    if draw(st.booleans()):  # a fleet whose servers all say the same (most fleets, most of the time)
        figs = [draw(figures)] * len(kinds)
    else:
        figs = draw(st.lists(figures, min_size=len(kinds), max_size=len(kinds)))
    servers = [with_figures(i, status, fig) for i, (status, fig) in enumerate(zip(kinds, figs, strict=True))]
    problems = draw(st.sampled_from([(), (), (), ("x",)]))
    snapshot = FleetSnapshot.of(servers, index=5, observed_at=0.0, problems=problems)
    memory = Memory(
        last_replicas=draw(st.sampled_from([None, current, current])),
        above_since=draw(st.sampled_from([None, 0.0, 0.0])),
        demand_peaks=draw(st.sampled_from([(), ((0.0, 3.0),), ((0.0, 30.0),)])),
    )
    now = draw(st.one_of(st.floats(0, 1000), st.sampled_from([300.0, 600.0])))
    return config, current, snapshot, memory, now


def decide_at(case, **overrides):
    config, current, snapshot, memory, now = case
    if overrides:
        config = config.model_copy(update=overrides)
    return decide(fleet=snapshot, current=current, config=config, memory=memory, now=now, wall_now=WALL)


def essence(decision):
    """What a decision does (not how its message tells it)."""
    return decision.desired, decision.direction, decision.reason, decision.clamps, decision.recheck_at


class TestInvariants:
    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_result_within_bounds(self, case):
        """Whatever the fleet, the desired count stays within [min_replicas, max_replicas]."""
        config, current, snapshot, memory, now = case
        decision, _ = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        assert config.min_replicas <= decision.desired <= config.max_replicas
        decision, _ = decide_at(case)
        assert config.min_replicas <= decision.desired <= config.max_replicas

    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_steps_stay_within_the_step_limits(self, case):
        """From within the bounds, one decision never moves more than one period's step allows."""
        config, current, *_ = case
        decision, _ = decide_at(case)
        assert decision.desired - current <= config.scale_up.allowed(current)
        assert current - decision.desired <= config.scale_down.allowed(current)

    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_no_scale_up_on_untrusted_data(self, case):
        """An untrusted snapshot never scales up from within the bounds, whatever demand the servers claim."""
        _, current, snapshot, *_ = case
        decision, _ = decide_at(case)
        if not snapshot.trusted:
            assert decision.desired == current

    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_demand_that_cannot_be_trusted_is_not_used(self, case):
        """If any non-Critical server's demand is missing, unstamped, older than max_age or too far ahead,
        the decision is the one the policy takes without demand: stale demand changes nothing."""
        _, _, snapshot, *_ = case
        figs = [(s.load, s.demand, None if s.demand_at is None else WALL - s.demand_at) for s in snapshot.servers]
        serving_stale = any(
            stale(None if s.demand is None else fig)
            for s, fig in zip(snapshot.servers, figs, strict=True)
            if s.status is not Status.CRITICAL
        )
        with_demand, _ = decide_at(case)
        without, _ = decide_at(case, demand=DemandConfig(enabled=False))
        if serving_stale or not snapshot.servers:
            assert essence(with_demand) == essence(without)
            assert with_demand.inputs.demand is None

    def test_the_situations_reach_demand_sizing(self):
        """The strategy is not vacuous: it reaches decisions sized from (fresh) demand, up and down."""
        for reason in (Reason.DEMAND_ABOVE_CAPACITY, Reason.ABOVE_SCALE_DOWN_RATIO):
            case = find(
                situations(),
                lambda c, reason=reason: (d := decide_at(c)[0]).reason is reason and d.inputs.demand is not None,
                settings=settings(max_examples=10_000, database=None),
            )
            assert decide_at(case)[0].inputs.demand is not None

    @settings(max_examples=300, deadline=None)
    @given(situations())
    def test_stale_demand_weighs_nothing(self, case):
        """Removing every stale demand from the fleet (Critical servers' too) does not change the decision."""
        config, current, snapshot, memory, now = case
        fresh = []
        for s in snapshot.servers:
            age = None if s.demand_at is None else WALL - s.demand_at
            fig = None if s.demand is None else (s.load or 0.0, s.demand, age)
            fresh.append(s if not stale(fig) else msgspec.structs.replace(s, demand=None, demand_at=None))
        cleaned = FleetSnapshot(index=snapshot.index, servers=tuple(fresh), observed_at=0.0, trust=snapshot.trust)
        one, _ = decide_at(case)
        two, _ = decide_at((config, current, cleaned, memory, now))
        assert essence(one) == essence(two)

    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_never_scales_down_while_below_target(self, case):
        """When the Available share is below target, the desired count is never lower than the current one."""
        config, current, snapshot, memory, now = case
        decision, _ = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        ratio = snapshot.available_ratio
        if ratio is not None and ratio < config.target_available_ratio:
            assert decision.desired >= current

    @settings(max_examples=400, deadline=None)
    @given(situations())
    def test_untrusted_data_never_moves_within_bounds(self, case):
        """On untrusted data, a count already within bounds never changes (without ``policy.fallback``, as
        here: tests/test_fallback.py has its invariants)."""
        config, current, snapshot, memory, now = case
        decision, _ = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        if not snapshot.trusted:
            assert decision.desired == current

    @settings(max_examples=200, deadline=None)
    @given(situations())
    def test_deterministic(self, case):
        """Identical inputs give identical decisions and memories."""
        config, current, snapshot, memory, now = case
        one = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        two = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        assert one == two


# The stabilization window over runs of evaluations ------------------------------------------


@st.composite
def runs(draw: st.DrawFn):
    """A config and a run of evaluations: each a fleet, the seconds since the last one, the replica
    count (None: the one the scaler left; a number: someone else set it) and whether the daemon
    applied the decision (``record_scale``), as the daemon and the simulator drive ``decide``."""
    min_r = draw(st.integers(0, 4))
    config = CONFIG.model_copy(
        update={
            "min_replicas": min_r,
            "max_replicas": draw(st.integers(max(1, min_r), 30)),
            "target_available_ratio": draw(st.sampled_from([0.3, 0.5, 0.7])),
            "scale_down_stabilization": draw(st.sampled_from([0.0, 30.0, 300.0])),
            "scale_down_max_load": draw(st.sampled_from([None, 0.6])),
        }
    )
    steps = []
    for _ in range(draw(st.integers(1, 20))):
        counts = (draw(st.integers(0, 12)), draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        kinds = [Status.AVAILABLE] * counts[0] + [Status.WARNING] * counts[1] + [Status.CRITICAL] * counts[2]
        fig = draw(figures)
        servers = [with_figures(i, status, fig) for i, status in enumerate(kinds)]
        problems = draw(st.sampled_from([(), (), (), ("x",)]))
        wait = draw(st.sampled_from([0.0, 1.0, 15.0, 31.0, 61.0, 121.0, 301.0]))
        hand = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 32)))
        steps.append((servers, problems, wait, hand, draw(st.booleans())))
    return config, steps


def evaluations(run):
    """Drive ``decide`` through a run; yields (window before, decision, window after, now) per evaluation."""
    config, steps = run
    memory, now, current = Memory(), 0.0, 3
    for servers, problems, wait, hand, applied in steps:
        now += wait
        current = current if hand is None else hand
        snapshot = FleetSnapshot.of(servers, index=5, observed_at=now, problems=problems)
        before = memory.above_since
        decision, memory = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now, wall_now=WALL)
        yield before, decision, memory.above_since, now
        if applied:
            memory = record_scale(memory, decision, now=now)
            current = decision.desired


def in_the_window(decision, config) -> bool:
    """Whether the decision came from the scale-down window, read from the decision alone."""
    if decision.reason in (Reason.STABILIZING, Reason.ABOVE_SCALE_DOWN_RATIO):
        return True
    if decision.reason is Reason.STEP_LIMITED:
        return any(clamp.name == "scale_down_step" for clamp in decision.clamps)
    if decision.reason is Reason.WITHIN_TARGET:
        inputs = decision.inputs
        return (
            inputs.pending == 0
            and inputs.registered > 0
            and inputs.available >= inputs.registered * Fraction(str(config.scale_down_ratio))
        )
    return False


class TestStabilizationWindow:
    @settings(max_examples=300, deadline=None)
    @given(runs())
    def test_the_window_is_open_only_while_the_last_step_was_stabilizing(self, run):
        """The window is ``Memory.above_since``: since when the Available share has stayed at or above
        scale_down_ratio (None: closed). After every evaluation it is open exactly when the decision
        came from the scale-down window, which is:

        * ``STABILIZING`` while the window runs: above_since ≤ now < above_since + scale_down_stabilization,
          which is the decision's ``recheck_at``;
        * once it has run its length (now ≥ above_since + scale_down_stabilization), the scale-down's answer:
          ``ABOVE_SCALE_DOWN_RATIO``, ``STEP_LIMITED`` by the ``scale_down_step`` clamp, or ``WITHIN_TARGET``
          with nothing starting and the Available share at or above scale_down_ratio.

        Every other decision closes it. It opens at the evaluation's ``now`` and keeps its start only
        from an open window, when nobody else changed the replica count since.
        """
        config, _ = run
        length = config.scale_down_stabilization
        for before, decision, since, now in evaluations(run):
            assert (since is not None) == in_the_window(decision, config), decision
            if since is None:
                continue
            kept = before is not None and decision.inputs.external_change is None
            assert since == (before if kept else now)
            if decision.reason is Reason.STABILIZING:
                assert since <= now < since + length == decision.recheck_at
            else:
                assert now >= since + length

    @settings(max_examples=400, deadline=None)
    @given(situations(), st.sampled_from([0, 4, -1]))
    def test_every_other_rule_closes_an_open_window(self, case, moved):
        """From any memory (the window open since 0.0 in two cases of three; a step of ``moved`` replicas
        made a second ago, so that the step limits bite), one evaluation leaves the window open exactly
        when it decided in the scale-down window (see the test above)."""
        config, current, snapshot, memory, now = case
        if moved:
            memory = replace(memory, changes=(ScaleChange(now - 1.0, current - moved, current),))
        decision, memory = decide_at((config, current, snapshot, memory, now))
        assert (memory.above_since is not None) == in_the_window(decision, config), decision

    @pytest.mark.parametrize(
        "reached",
        [
            pytest.param(
                lambda before, d, since, now: d.reason is Reason.STABILIZING and since < now, id="stabilizing"
            ),
            pytest.param(
                lambda before, d, since, now: d.reason is Reason.ABOVE_SCALE_DOWN_RATIO and since < now, id="down"
            ),
            pytest.param(
                lambda before, d, since, now: d.reason is Reason.STEP_LIMITED and since is not None, id="limited"
            ),
            pytest.param(
                lambda before, d, since, now: d.reason is Reason.WITHIN_TARGET and since is not None, id="within"
            ),
            pytest.param(lambda before, d, since, now: before is not None and since is None, id="closed"),
            pytest.param(
                lambda before, d, since, now: before is not None and since == now > before and d.inputs.external_change,
                id="reopened-after-a-hand-change",
            ),
        ],
    )
    # The run found is not shrunk (only that one exists matters): hypothesis warns that its repr is long.
    @pytest.mark.filterwarnings("ignore:Generating overly large repr")
    def test_the_runs_reach_every_way_through_the_window(self, reached):
        """The strategy is not vacuous: its runs reach each of the window's decisions, and close and reopen it."""
        run = find(
            runs(),
            lambda r: any(reached(*evaluation) for evaluation in evaluations(r)),
            settings=settings(max_examples=10_000, database=None, phases=[Phase.generate]),
        )
        assert any(reached(*evaluation) for evaluation in evaluations(run))


def loaded(available: int, load: float, *, critical: int = 0) -> FleetSnapshot:
    servers = [server(i, Status.AVAILABLE, load=load) for i in range(available)]
    servers += [server(100 + i, Status.CRITICAL) for i in range(critical)]
    return FleetSnapshot.of(servers, index=3, observed_at=0.0)


class TestLoadAwareScaleDown:
    BIG_STEP = ScaleDownConfig(max_step=100, max_percent=100, period=60)

    def test_load_limits_how_many_go(self):
        """10 servers at load 0.3 may shrink to 5 (mean 0.6), not further, whatever the share says."""
        _, memory = at(10, loaded(10, 0.3), now=0.0, scale_down=self.BIG_STEP)
        decision, _ = at(10, loaded(10, 0.3), now=300.0, memory=memory, scale_down=self.BIG_STEP)
        assert decision.desired == 5
        assert decision.inputs.mean_load == pytest.approx(0.3)
        assert "mean load 0.30" in decision.message

    def test_busy_fleet_keeps_its_servers(self):
        """All Available but at mean load 0.58: removing one would exceed 0.6, so nothing goes."""
        _, memory = at(10, loaded(10, 0.58), now=0.0)
        decision, _ = at(10, loaded(10, 0.58), now=300.0, memory=memory)
        assert (decision.direction, decision.desired) == (Direction.NONE, 10)
        assert "scale_down_max_load" in decision.message

    def test_critical_servers_do_not_count_as_serving(self):
        """Load is averaged over the servers that serve: Critical ones are ignored (and may lack load)."""
        decision, _ = at(12, loaded(10, 0.3, critical=2), now=300.0, memory=Memory(last_replicas=12, above_since=0.0))
        assert decision.inputs.mean_load == pytest.approx(0.3)

    def test_unknown_load_falls_back_to_the_share(self):
        """One serving server without a load figure: the share rule alone decides."""
        servers = [server(i, Status.AVAILABLE, load=0.59) for i in range(9)] + [server(9, Status.AVAILABLE)]
        snapshot = FleetSnapshot.of(servers, index=3, observed_at=0.0)
        decision, _ = at(10, snapshot, now=300.0, memory=Memory(last_replicas=10, above_since=0.0))
        assert decision.inputs.mean_load is None
        assert decision.direction is Direction.DOWN

    def test_window_restarts_after_a_share_only_scale_down(self):
        """Without load figures, the stabilization window starts again after each scale-down."""
        memory = Memory(last_replicas=10, above_since=0.0)
        decision, memory = at(10, fleet(10), now=300.0, memory=memory)
        memory = record_scale(memory, decision, now=300.0)
        assert memory.above_since is None

    def test_window_kept_after_a_load_aware_scale_down(self):
        """With load figures, the prediction already accounts for the move: the window is kept."""
        memory = Memory(last_replicas=10, above_since=0.0)
        decision, memory = at(10, loaded(10, 0.3), now=300.0, memory=memory)
        assert decision.direction is Direction.DOWN
        assert record_scale(memory, decision, now=300.0).above_since == 0.0


class TestRestart:
    def test_a_fresh_process_counts_unregistered_replicas_as_starting(self):
        """After a restart (empty memory), replicas not registered yet are not ordered a second time."""
        decision, memory = decide(fleet=fleet(1, 3), current=6, config=CONFIG, memory=Memory(), now=100.0)
        assert decision.inputs.pending == 2
        assert decision.desired == 6
        assert any("first evaluation" in note for note in decision.notes)
        # ... and they stop counting after startup_grace, like any other request.
        later, _ = decide(fleet=fleet(1, 3), current=6, config=CONFIG, memory=memory, now=221.0)
        assert later.inputs.pending_expired == 2
        assert later.desired > 6


def demanding(*servers: tuple[Status, float, float], age: float = 10.0, index: int = 3) -> FleetSnapshot:
    """A fleet whose servers report (status, load, demand), stamped ``age`` seconds before WALL."""
    built = [
        msgspec.structs.replace(server(i, status), load=load, demand=demand, demand_at=WALL - age)
        for i, (status, load, demand) in enumerate(servers)
    ]
    return FleetSnapshot.of(built, index=index, observed_at=0.0)


def at_wall(current: int, snapshot: FleetSnapshot, *, now: float = 0.0, memory: Memory | None = None, **overrides):
    config = CONFIG.model_copy(update=overrides) if overrides else CONFIG
    mem = memory if memory is not None else Memory(last_replicas=current)
    return decide(fleet=snapshot, current=current, config=config, memory=mem, now=now, wall_now=WALL)


W = Status.WARNING
A = Status.AVAILABLE
C = Status.CRITICAL


class TestDemandSizing:
    def test_one_step_to_what_the_demand_needs(self):
        """4 full Warning servers (load 0.9) offered 2.5 each: held 3.6 + 0.25 × (10 − 1.1 × 3.6) = 5.11 servers'
        worth, 8 at target load 0.7, in one step (the share alone would have asked for 8 too, but by probing)."""
        decision, _ = at_wall(4, demanding(*[(W, 0.9, 2.5)] * 4))
        assert decision.inputs.demand == pytest.approx(5.11)
        assert (decision.desired, decision.direction, decision.reason) == (8, Direction.UP, Reason.BELOW_TARGET)
        assert "3.60 servers' worth connected, 10.00 offered" in decision.message
        assert "8 serving = 8 replicas for 4" in decision.message

    def test_does_not_saturate(self):
        """Share 0 says nothing about how many are missing; the demand does: more offered, more ordered."""
        little, _ = at_wall(4, demanding(*[(C, 1.0, 1.2)] * 4), scale_up=ScaleUpConfig(max_step=40, period=15))
        much, _ = at_wall(4, demanding(*[(C, 1.0, 9.0)] * 4), scale_up=ScaleUpConfig(max_step=40, period=15))
        assert little.desired == 6  # (4 + 0.25 × (4.8 - 4.4)) / 0.7 = 5.9
        assert much.desired == 17  # (4 + 0.25 × (36 - 4.4)) / 0.7 = 17.0

    def test_noise_is_not_anticipated(self):
        """Offered demand up to 10 % above the connected load is counting noise: sized for the load alone."""
        decision, _ = at_wall(10, demanding(*[(A, 0.6, 0.66)] * 10))
        assert decision.inputs.demand == pytest.approx(6.0)
        assert decision.direction is not Direction.UP

    def test_before_the_share_drops(self):
        """All Available but the demand needs more servers than there are: up, before any turns Warning."""
        decision, _ = at_wall(4, demanding(*[(A, 0.75, 0.8)] * 4))
        assert (decision.desired, decision.reason) == (5, Reason.DEMAND_ABOVE_CAPACITY)

    def test_starting_servers_count(self):
        """Replicas still starting are part of the count the demand is compared with: no second order."""
        snapshot = demanding(*[(W, 0.9, 1.0)] * 4)
        first, memory = at_wall(4, snapshot, target_available_ratio=0.3)
        memory = record_scale(memory, first, now=0.0)
        again, _ = at_wall(first.desired, snapshot, now=5.0, memory=memory, target_available_ratio=0.3)
        assert first.desired == 6
        assert again.inputs.pending == 2
        assert again.desired == 6

    def test_step_limit_and_max_replicas_clamp(self):
        """The step limit and max_replicas still apply, and the clamps say so."""
        decision, _ = at_wall(4, demanding(*[(C, 1.0, 20.0)] * 4))
        assert decision.desired == 8  # 33 wanted, 20 at most, +4 per 15 s
        assert [str(c) for c in decision.clamps] == [
            "max_replicas: wanted 33 replicas, limited to 20",
            "scale_up_step: wanted 20 replicas, limited to 8 (at most 4 up per 15s, 0 used)",
        ]
        decision, _ = at_wall(4, demanding(*[(C, 1.0, 20.0)] * 4), max_replicas=6)
        assert [c.name for c in decision.clamps] == ["max_replicas"]
        assert decision.desired == 6

    def test_out_of_service_servers_are_replaced(self):
        """A Critical server with no load (failing) is not capacity: one more replica for it."""
        decision, _ = at_wall(5, demanding(*[(A, 0.6, 0.6)] * 4, (C, 0.0, 0.0)))
        assert decision.inputs.out_of_service == 1
        assert decision.desired == math.ceil(2.4 / 0.7) + 1  # 5: nothing to add
        decision, _ = at_wall(4, demanding(*[(A, 0.6, 0.6)] * 3, (C, 0.0, 0.0)))
        assert decision.desired == 4  # 3 serving + 1 out of service
        assert "+ 1 not serving" in decision.message or decision.direction is Direction.NONE

    def test_a_failure_does_not_hide_the_load_it_moved(self):
        """Before a failure the fleet carried 3.2; the failed server's clients moved but the others' new load
        is not in the catalog yet (output-only change): the window's highest estimate still sizes the fleet."""
        before, memory = at_wall(5, demanding(*[(A, 0.64, 0.64)] * 5))
        assert before.direction is Direction.NONE
        after, _ = at_wall(5, demanding(*[(A, 0.64, 0.64)] * 4, (C, 0.0, 0.0)), now=2.0, memory=memory)
        assert (after.desired, after.reason) == (6, Reason.DEMAND_ABOVE_CAPACITY)
        assert "the window's highest 3.20" in after.message


class TestDemandFallback:
    @pytest.mark.parametrize(
        ("age", "why"),
        [(601.0, "older than max_age 600s"), (-61.0, "ahead of this clock"), (None, "report no demand")],
    )
    def test_untrusted_demand_falls_back_to_the_share(self, age, why):
        """Demand older than max_age, from the future, or missing on one server: the share-based probe, and a note."""
        servers = [(W, 0.9, 5.0)] * 4
        snapshot = demanding(*servers) if age is not None else demanding(*servers[:3])
        if age is not None:
            snapshot = demanding(*servers[:3], age=10.0)
            odd = msgspec.structs.replace(server(3, W), load=0.9, demand=5.0, demand_at=WALL - age)
            snapshot = FleetSnapshot.of([*snapshot.servers, odd], index=3, observed_at=0.0)
        else:
            snapshot = FleetSnapshot.of([*snapshot.servers, server(3, W)], index=3, observed_at=0.0)
        decision, _ = at_wall(4, snapshot)
        share_only, _ = at(4, fleet(0, 4))
        assert decision.inputs.demand is None
        assert (decision.desired, decision.reason) == (share_only.desired, share_only.reason)
        assert any(why in note for note in decision.notes), decision.notes

    def test_no_wall_clock_no_demand(self):
        """Without the wall-clock time the demand's age is unknown: not used."""
        decision, _ = at(4, demanding(*[(W, 0.9, 5.0)] * 4))
        assert decision.inputs.demand is None
        assert any("wall-clock" in note for note in decision.notes)

    def test_a_fleet_without_demand_has_no_note(self):
        """Servers that publish no demand at all: today's policy, silently."""
        decision, _ = at_wall(4, fleet(1, 3))
        assert decision.inputs.demand is None
        assert decision.notes == ()

    def test_disabled(self):
        """policy.demand.enabled: false ignores the demand, without a note on every evaluation."""
        decision, _ = at_wall(4, demanding(*[(W, 0.9, 5.0)] * 4), demand=DemandConfig(enabled=False))
        assert decision.inputs.demand is None
        assert decision.notes == ()

    def test_critical_servers_may_lack_demand(self):
        """A Critical server without demand (metrics unreadable) does not spoil the fleet's: out of service."""
        snapshot = demanding(*[(A, 0.5, 0.5)] * 3)
        snapshot = FleetSnapshot.of([*snapshot.servers, server(3, C)], index=3, observed_at=0.0)
        decision, _ = at_wall(4, snapshot)
        assert decision.inputs.demand == pytest.approx(1.5)
        assert decision.inputs.out_of_service == 1


class TestDemandScaleDown:
    BIG_STEP = ScaleDownConfig(max_step=100, max_percent=100, period=60)

    def test_down_to_what_the_window_carried(self):
        """After the window, down to the servers the window's highest estimate needs at target load."""
        memory = Memory(last_replicas=10, above_since=0.0)
        _, memory = at_wall(10, demanding(*[(A, 0.35, 0.3)] * 10), now=10.0, memory=memory, scale_down=self.BIG_STEP)
        decision, _ = at_wall(10, demanding(*[(A, 0.2, 0.2)] * 10), now=300.0, memory=memory, scale_down=self.BIG_STEP)
        assert decision.direction is Direction.DOWN
        assert decision.desired == math.ceil(3.5 / 0.7)  # the window's highest, 3.5, not the latest 2.0
        assert record_scale(memory, decision, now=300.0).above_since == 0.0  # the window is kept

    def test_rising_demand_keeps_its_servers(self):
        """Connected load low, offered demand high: the anticipated demand is not scaled away."""
        memory = Memory(last_replicas=10, above_since=0.0)
        decision, _ = at_wall(10, demanding(*[(A, 0.3, 2.0)] * 10), now=300.0, memory=memory)
        assert decision.direction is not Direction.DOWN

    def test_the_default_step_is_slow(self):
        """The scale-down step still applies."""
        memory = Memory(last_replicas=10, above_since=0.0)
        decision, _ = at_wall(10, demanding(*[(A, 0.1, 0.1)] * 10), now=300.0, memory=memory)
        assert decision.desired == 9
        assert [c.name for c in decision.clamps] == ["scale_down_step"]
