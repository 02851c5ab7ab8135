"""``policy.fallback``: the pure rule with plain values and hypothesis, its Event and metric, and
the real daemon going to the fallback count while the fake Consul fails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bolina_scaler.actuator.events import event_for
from bolina_scaler.config import ConfigError, FallbackConfig, ScaleDownConfig, ScaleUpConfig, parse_config
from bolina_scaler.core.decision import Direction, Reason
from bolina_scaler.core.evaluation import step
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause
from bolina_scaler.core.policy import Memory, ScaleChange, decide, record_scale
from bolina_scaler.core.scaler_status import status_of
from bolina_scaler.metrics import Metrics, StateReading
from bolina_scaler.testing.consul import Fault
from tests.builders import fleet
from tests.harness import NS, World, logged, running, until
from tests.test_http import fetch, http_config
from tests.test_policy import CONFIG
from tests.test_scaler_status import status_annotation

ON = CONFIG.model_copy(update={"fallback": FallbackConfig(replicas=8, after=60)})
"""min 2, max 20, scale_up max(4, 100 %) per 15 s, scale_down max(1, 10 %) per 60 s; fallback to 8 after 60 s."""

UNTRUSTED = fleet(1, 3, problems=("consul unreachable: connection refused",))
TRUSTED = fleet(2, 2)
"""Share 0.5: exactly the target, below scale_down_ratio: the normal policy keeps any count."""


def run(evaluations, *, current: int = 4, config=ON, apply: bool = True):
    """Drive ``decide`` through ``(now, snapshot)`` pairs as the daemon does (``record_scale`` after
    each change when ``apply``); returns the decisions."""
    memory, decisions = Memory(last_replicas=current), []
    for now, snapshot in evaluations:
        decision, memory = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        decisions.append(decision)
        if apply and decision.changes_scale:
            memory = record_scale(memory, decision, now=now)
            current = decision.desired
    return decisions


def with_fallback(**fields) -> object:
    return ON.model_copy(update={"fallback": FallbackConfig(**{"replicas": 8, "after": 60, **fields})})


class TestFallbackRule:
    def test_off_by_default_holds_however_long(self):
        """Shipped without a fallback count, unusable data holds at the current count for ever."""
        assert CONFIG.fallback.replicas is None
        *_, last = run([(0.0, UNTRUSTED), (86_400.0, UNTRUSTED)], config=CONFIG)
        assert (last.desired, last.direction, last.reason) == (4, Direction.HOLD, Reason.UNTRUSTED_DATA)
        assert last.recheck_at is None

    def test_holds_until_after_and_asks_to_be_woken_then(self):
        """Before ``after`` the trust rule holds, says what will happen, and asks for an evaluation at the end."""
        first, second = run([(10.0, UNTRUSTED), (69.0, UNTRUSTED)])
        for decision in (first, second):
            assert (decision.desired, decision.reason) == (4, Reason.UNTRUSTED_DATA)
            assert decision.recheck_at == 70.0
            assert "policy.fallback goes to 8 replicas after 60s" in decision.message
        assert first.message == second.message  # Events aggregate by message: no countdown in it

    def test_goes_to_the_fallback_count_after_continuous_unusable_data(self):
        """At ``after`` of unusable data without a break, the count goes to the fallback count."""
        *_, decision = run([(10.0, UNTRUSTED), (70.0, UNTRUSTED)])
        assert (decision.desired, decision.direction, decision.reason) == (8, Direction.UP, Reason.FALLBACK)
        assert "connection refused" in decision.message
        assert "policy.fallback to 8 replicas (raise_only)" in decision.message

    def test_stale_data_counts_as_unusable(self):
        """A trusted answer older than max_snapshot_age is unusable data too."""
        old = fleet(2, 2, observed_at=0.0)
        first, second = run([(901.0, old), (961.0, old)])
        assert first.reason is Reason.STALE_DATA
        assert (second.reason, second.desired) == (Reason.FALLBACK, 8)

    def test_a_single_trusted_answer_starts_the_wait_again(self):
        """One usable answer in between resets the clock: ``after`` counts again from the next unusable one."""
        decisions = run([(0.0, UNTRUSTED), (59.0, TRUSTED), (60.0, UNTRUSTED), (119.0, UNTRUSTED), (120.0, UNTRUSTED)])
        assert [d.reason for d in decisions] == [
            Reason.UNTRUSTED_DATA,
            Reason.WITHIN_TARGET,
            Reason.UNTRUSTED_DATA,
            Reason.UNTRUSTED_DATA,
            Reason.FALLBACK,
        ]

    def test_raise_only_never_lowers(self):
        """In ``raise_only`` a fleet above the fallback count keeps its count, and says so."""
        *_, decision = run([(0.0, fleet(1, 11, problems=("x",))), (60.0, fleet(1, 11, problems=("x",)))], current=12)
        assert (decision.desired, decision.direction, decision.reason) == (12, Direction.HOLD, Reason.FALLBACK)
        assert "keeping 12, not lowering" in decision.message

    def test_exact_lowers_within_the_scale_down_step(self):
        """In ``exact`` the count goes to the fallback count downwards too, by the scale-down step limit."""
        config = with_fallback(mode="exact")
        unusable = fleet(1, 11, problems=("x",))
        *_, decision = run([(0.0, unusable), (60.0, unusable)], current=12, config=config)
        assert (decision.desired, decision.direction, decision.reason) == (
            10,
            Direction.DOWN,
            Reason.FALLBACK,
        )  # max(1, 10 % of 12)
        assert [c.name for c in decision.clamps] == ["scale_down_step"]
        assert decision.recheck_at == 120.0  # the step's period: no Consul change will wake the evaluator

    def test_step_limit_applies_and_the_fallback_comes_back_for_the_rest(self):
        """From 2 to 16 by max(4, 100 %) per 15 s: 6, 12, 16, one scale_up period apart, each a fallback."""
        config = with_fallback(replicas=16)
        decisions = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED), (75.0, UNTRUSTED), (90.0, UNTRUSTED)], current=2,
                        config=config)  # fmt: skip
        assert [(d.current, d.desired) for d in decisions[1:]] == [(2, 6), (6, 12), (12, 16)]
        assert all(d.reason is Reason.FALLBACK for d in decisions[1:])
        assert [d.recheck_at for d in decisions[1:3]] == [75.0, 90.0]
        assert decisions[3].recheck_at == 180.0  # there: only the first grant's startup_grace is left to wait for

    def test_step_limit_without_room_holds_as_a_fallback(self):
        """A fallback that finds the step limit used up (4 up 10 s ago) holds, reason fallback, until room frees;
        with the change out of the period it goes."""
        memory = Memory(last_replicas=4, unusable_since=0.0, changes=(ScaleChange(0.0, 0, 4),))
        decision, _ = decide(fleet=UNTRUSTED, current=4, config=ON, memory=memory, now=65.0)
        assert (decision.desired, decision.direction, decision.reason) == (8, Direction.UP, Reason.FALLBACK)
        memory = Memory(last_replicas=4, unusable_since=0.0, changes=(ScaleChange(55.0, 0, 4),))
        decision, _ = decide(fleet=UNTRUSTED, current=4, config=ON, memory=memory, now=65.0)
        assert (decision.desired, decision.direction, decision.reason) == (4, Direction.HOLD, Reason.FALLBACK)
        assert [c.name for c in decision.clamps] == ["scale_up_step"]
        assert decision.recheck_at == 70.0

    def test_scale_up_stabilization_does_not_delay_it(self):
        """``after`` is the fallback's window: the scale-up stabilization (the lowest count recommended
        within scale_up.stabilization) does not hold it back on top."""
        config = ON.model_copy(update={"scale_up": ScaleUpConfig(stabilization=300)})
        memory = Memory(last_replicas=4, unusable_since=0.0, up_recommendations=((0.0, 4),))
        decision, _ = decide(fleet=UNTRUSTED, current=4, config=config, memory=memory, now=60.0)
        assert (decision.desired, decision.reason, decision.clamps) == (8, Reason.FALLBACK, ())

    def test_disabled_scale_up_holds_without_asking_again(self):
        """With scale_up.select disabled the fallback cannot raise: it holds, and sets no timer that
        could never free room."""
        config = ON.model_copy(update={"scale_up": ScaleUpConfig(select="disabled")})
        *_, decision = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED)], config=config)
        assert (decision.desired, decision.direction, decision.reason) == (4, Direction.HOLD, Reason.FALLBACK)
        assert decision.recheck_at is None

    def test_the_step_rules_shortest_period_bounds_the_next_try(self):
        """With step rules of several periods, a fallback cut short asks again at the latest when its
        own change leaves the shortest rule's period."""
        rules = [{"type": "Pods", "value": 2, "period": "10s"}, {"type": "Pods", "value": 3, "period": "1m"}]
        config = with_fallback(replicas=16).model_copy(update={"scale_up": ScaleUpConfig(policies=rules)})
        *_, decision = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED)], config=config)
        assert (decision.desired, decision.reason) == (7, Reason.FALLBACK)  # max(2, 3) with select: max
        assert decision.recheck_at == 70.0

    def test_scale_down_after_a_fallback_waits_the_whole_window(self):
        """When trusted data returns to a fleet the fallback raised, scale-down still waits the full
        stabilization window, counted from the first trusted answer."""
        idle = fleet(8, problems=())
        decisions = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED), (61.0, idle), (360.0, idle), (361.0, idle)])
        assert (decisions[1].desired, decisions[1].reason) == (8, Reason.FALLBACK)
        assert [d.reason for d in decisions[2:4]] == [Reason.STABILIZING, Reason.STABILIZING]
        assert decisions[2].recheck_at == 361.0
        assert (decisions[4].direction, decisions[4].reason) == (Direction.DOWN, Reason.ABOVE_SCALE_DOWN_RATIO)

    def test_bounds_come_first(self):
        """A Deployment at 0 goes to min_replicas first (cold start), as without a fallback."""
        *_, decision = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED)], current=0, apply=False)
        assert (decision.desired, decision.reason) == (2, Reason.COLD_START)

    def test_the_pause_wins(self):
        """Paused, the fallback is only the policy's view: the count stays where the pause holds it."""
        memory = Memory(last_replicas=4, unusable_since=0.0)
        done = step(fleet=UNTRUSTED, current=4, config=ON, memory=memory, now=60.0, wall_now=None,
                    pause=Pause("bolina-scaler/paused=true"))  # fmt: skip
        assert (done.policy_decision.reason, done.policy_decision.desired) == (Reason.FALLBACK, 8)
        assert (done.decision.reason, done.decision.desired) == (Reason.PAUSED, 4)
        assert "policy would scale 4 → 8 (fallback" in done.decision.message


class TestFallbackConfig:
    @pytest.mark.parametrize(
        ("fallback", "message"),
        [
            (
                {"replicas": 30},
                "policy.fallback.replicas: must lie within min_replicas (1) and max_replicas (20), got 30",
            ),
            (
                {"replicas": 0},
                "policy.fallback.replicas: must lie within min_replicas (1) and max_replicas (20), got 0",
            ),
            ({"replicas": 4, "mode": "static"}, "policy.fallback.mode"),
            ({"replicas": 4, "after": "-1s"}, "policy.fallback.after"),
            ({"replicas": 4, "after_seconds": 3}, "policy.fallback.after_seconds"),
        ],
    )
    def test_bad_values_name_the_key(self, fallback, message):
        """A fallback count outside the bounds, an unknown mode or a bad duration is one line naming the key."""
        with pytest.raises(ConfigError) as error:
            parse_config({"policy": {"fallback": fallback}})
        assert message in str(error.value)

    def test_defaults(self):
        """Off, 2 minutes, raise_only."""
        fallback = parse_config({}).policy.fallback
        assert (fallback.replicas, fallback.after, fallback.mode) == (None, 120.0, "raise_only")


class TestFallbackSignals:
    def test_event_on_the_patch_and_while_holding(self):
        """A fallback patch and a fallback hold are both ScalingFallback Warnings."""
        changed, held = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED), (61.0, UNTRUSTED)])[1:]
        event = event_for(changed, outcome=Outcome.PATCHED)
        assert event is not None
        assert (event.type, event.reason) == ("Warning", "ScalingFallback")
        assert event.message.startswith("New size: 8; reason: fallback: ")
        assert held.direction is Direction.HOLD
        hold = event_for(held, outcome=Outcome.UNCHANGED)
        assert hold is not None
        assert (hold.type, hold.reason) == ("Warning", "ScalingFallback")

    def test_status_annotation_says_fallback(self):
        """The bolina-scaler/status content says ``fallback`` for a fallback decision only (a paused one: no)."""
        waiting, falling_back = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED)], apply=False)
        assert status_of(falling_back, outcome=Outcome.PATCHED, pause=None, problems=[], leader="a").fallback
        assert not status_of(waiting, outcome=None, pause=None, problems=[], leader="a").fallback

    def test_gauge_is_one_only_while_the_fallback_decides(self):
        """bolina_scaler_fallback is 1 for a fallback decision and 0 for any other."""
        waiting, falling_back = run([(0.0, UNTRUSTED), (60.0, UNTRUSTED)], apply=False)
        metrics = Metrics()
        metrics.refresh(StateReading(decision=falling_back))
        assert metrics.registry.get_sample_value("bolina_scaler_fallback") == 1
        metrics.refresh(StateReading(decision=waiting))
        assert metrics.registry.get_sample_value("bolina_scaler_fallback") == 0
        metrics.refresh(StateReading())
        assert metrics.registry.get_sample_value("bolina_scaler_fallback") is None


@st.composite
def outages(draw: st.DrawFn):
    """A config with a fallback and a run of evaluations, each ``(seconds since the last, usable?)``."""
    min_r = draw(st.integers(0, 6))
    max_r = draw(st.integers(max(1, min_r), 30))
    fallback = FallbackConfig(
        replicas=draw(st.integers(min_r, max_r)),
        after=draw(st.sampled_from([0.0, 1.0, 30.0, 120.0])),
        mode=draw(st.sampled_from(["raise_only", "exact"])),
    )
    config = ON.model_copy(
        update={
            "min_replicas": min_r,
            "max_replicas": max_r,
            "fallback": fallback,
            "scale_up": ScaleUpConfig(max_step=draw(st.integers(1, 8)), max_percent=draw(st.sampled_from([0, 50, 100])),
                                      period=15),
            "scale_down": ScaleDownConfig(max_step=draw(st.integers(1, 3)), max_percent=10, period=60),
        }
    )  # fmt: skip
    steps = draw(st.lists(st.tuples(st.sampled_from([0.0, 1.0, 15.0, 29.0, 31.0, 90.0]), st.booleans()), max_size=25))
    return config, draw(st.integers(min_r, max_r)), steps


def drive(case):
    """Yields (decision, unusable since, now) per evaluation of the run, the since worked out apart from the policy."""
    config, current, steps = case
    memory, now, since = Memory(last_replicas=current), 0.0, None
    for wait, usable in steps:
        now += wait
        snapshot = FleetSnapshot.of(
            fleet(current // 2, current - current // 2).servers, index=5, observed_at=now,
            problems=() if usable else ("consul unreachable",),
        )  # fmt: skip
        since = None if usable else (now if since is None else since)
        decision, memory = decide(fleet=snapshot, current=current, config=config, memory=memory, now=now)
        yield decision, since, now
        if decision.changes_scale:
            memory = record_scale(memory, decision, now=now)
            current = decision.desired


class TestFallbackInvariants:
    @settings(max_examples=300, deadline=None)
    @given(outages())
    def test_only_after_after_of_continuous_unusable_data(self, case):
        """The reason is ``fallback`` exactly when the data has been unusable, without a break, for ``after``."""
        config, *_ = case
        for decision, since, now in drive(case):
            due = since is not None and now - since >= config.fallback.after
            assert (decision.reason is Reason.FALLBACK) == due, (decision, since, now)

    @settings(max_examples=300, deadline=None)
    @given(outages())
    def test_within_bounds_and_never_below_current_in_raise_only(self, case):
        """Every decision stays within [min, max]; on unusable data, raise_only never lowers the count,
        and exact moves only towards the fallback count."""
        config, *_ = case
        for decision, since, _ in drive(case):
            assert config.min_replicas <= decision.desired <= config.max_replicas
            if since is None:
                continue
            if config.fallback.mode == "raise_only":
                assert decision.desired >= decision.current
            else:
                target = config.fallback.replicas
                assert abs(target - decision.desired) <= abs(target - decision.current)

    @settings(max_examples=300, deadline=None)
    @given(outages())
    def test_a_fallback_short_of_its_count_always_asks_again(self, case):
        """While the fallback has not reached its count, every decision asks to be evaluated again
        (nothing else wakes the daemon while Consul is unusable)."""
        config, *_ = case
        for decision, since, _ in drive(case):
            if since is None:
                continue
            target = config.fallback.replicas
            wanted = max(target, decision.current) if config.fallback.mode == "raise_only" else target
            if decision.desired != wanted:
                assert decision.recheck_at is not None, decision


@pytest.mark.looptime
class TestDaemonFallback:
    async def test_consul_down_goes_to_the_fallback_count_then_trusted_data_decides(self, world: World):
        """Consul failing: hold for ``after``, then the fallback count (a Warning Event, the gauge at 1, the
        status annotation's ``fallback`` true); once Consul answers, the normal policy decides again and
        both say so."""
        world.serving(4)
        world.set_statuses("warning", 0, 1)  # share 0.5: the target, below scale_down_ratio: keep 4
        config = http_config(world)
        config = config.model_copy(
            update={
                "policy": config.policy.model_copy(update={"fallback": FallbackConfig(replicas=7, after=90)}),
                "status": config.status.model_copy(update={"enabled": True}),  # opt-in
            }
        )
        with capture_logs() as logs:
            async with running(config) as daemon:
                await until(lambda: daemon.state.evaluations >= 1 and daemon.http is not None)
                assert daemon.http is not None
                metrics = f"{daemon.http.url}/metrics"
                assert "bolina_scaler_fallback 0.0" in (await fetch(metrics))[1]
                await until(lambda: (status_annotation(world) or {}).get("fallback") is False, within=30)
                world.consul.inject(Fault.http_error(500), times=1_000_000)
                world.consul.touch("bolina")  # the parked query answers; every next one fails
                await until(lambda: _reasons(logs)[-1:] == ["untrusted_data"])
                failed_at = daemon.now()
                await until(lambda: world.replicas() == 7, within=200)
                assert 90 <= daemon.now() - failed_at < 91
                assert "bolina_scaler_fallback 1.0" in (await fetch(metrics))[1]
                await until(lambda: (status_annotation(world) or {}).get("fallback") is True, within=30)
                world.consul.clear_faults()
                for n in range(4, 7):
                    world.register(n, "passing")
                await until(lambda: _reasons(logs)[-1:] == ["within_target"], within=30)
                assert world.replicas() == 7
                assert "bolina_scaler_fallback 0.0" in (await fetch(metrics))[1]
        assert "fallback" in _reasons(logs)
        patched = [(e["before"], e["after"]) for e in logged(logs, "scale.patched") if e["reason"] == "fallback"]
        assert patched == [(4, 7)]
        (event,) = [e for e in world.kube.events(NS) if e["reason"] == "ScalingFallback"]
        assert event["type"] == "Warning"
        assert event["message"].startswith("New size: 7; reason: fallback: ")


def _reasons(logs: list[dict[str, object]]) -> list[object]:
    return [e["reason"] for e in logged(logs, "decision.evaluated")]
