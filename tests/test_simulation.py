"""The fleet simulator, the baselines and the ``simulate`` command."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from bolina_scaler.cli import main
from bolina_scaler.config import Duration
from bolina_scaler.core.model import Status
from bolina_scaler.reporter.availability import Stage
from bolina_scaler.reporter.settings import ReporterSettings
from bolina_scaler.simulator import (
    FleetParams,
    HpaParams,
    HpaScaler,
    NaiveScaler,
    OracleScaler,
    PolicyScaler,
    SimServer,
    SimulatedFleet,
    Trace,
    builtin_trace,
    compare,
    run,
    simulation_policy,
)
from bolina_scaler.simulator.baselines import hpa_recommendation
from bolina_scaler.simulator.runner import without_demand
from bolina_scaler.simulator.simulated_fleet import SHIPPED_CHECK_UPDATE_INTERVAL
from bolina_scaler.simulator.tables import PlotUnavailable, markdown_table, plot, text_table
from bolina_scaler.simulator.targets import check_targets
from bolina_scaler.simulator.traces import BUILTIN_TRACES, load_trace, trace_from_csv

STEADY = Trace(name="steady", duration=1800.0, points=((0.0, 2.0),))
ROOT = Path(__file__).resolve().parent.parent


def _fingerprint(fleet: SimulatedFleet) -> tuple[object, ...]:
    return (
        fleet.index,
        fleet.stats.arrived,
        fleet.stats.completed,
        fleet.stats.rejected,
        tuple((s.pod, s.status, s.count) for s in fleet.servers),
    )


class TestFleet:
    def test_deterministic_per_seed(self):
        """Same trace, seed and decisions: the same world, to the last client."""
        runs = []
        for _ in range(2):
            fleet = SimulatedFleet(builtin_trace("flash"), seed=7, replicas=3)
            for t in range(0, 900):
                if t == 300:
                    fleet.apply_replicas(6, float(t))
                fleet.step(float(t))
            runs.append(_fingerprint(fleet))
        assert runs[0] == runs[1]
        other = SimulatedFleet(builtin_trace("flash"), seed=8, replicas=3)
        other.step(899.0)
        assert _fingerprint(other) != runs[0]

    def test_clients_are_conserved(self):
        """Every arrival is exactly one of: connected, completed, rejected — through scale-downs and failures."""
        trace = Trace(name="t", duration=3600.0, points=((0.0, 3.0), (600.0, 8.0)), failures=(900.0, 1000.0))
        fleet = SimulatedFleet(trace, seed=1, replicas=5)
        for t in range(0, 3600, 10):
            if t in (400, 1200):
                fleet.apply_replicas(12 if t == 400 else 3, float(t))
            fleet.step(float(t))
            stats = fleet.stats
            assert stats.arrived == fleet.active_clients + stats.completed + stats.rejected
            on_servers = [cid for s in fleet.servers for cid in s.clients]
            assert len(on_servers) == len(set(on_servers)) == fleet.active_clients
            assert all(s.count == len(s.clients) for s in fleet.servers)
        assert fleet.stats.reconnected > 0
        assert fleet.stats.rejected > 0

    def test_pods_register_after_startup_delay(self):
        """A scale-up creates pods at once; they appear in Consul only after their start-up delay."""
        fleet = SimulatedFleet(STEADY, seed=0, replicas=2)
        fleet.apply_replicas(5, 10.0)
        assert fleet.pods == 5
        assert fleet.step(10.0).registered == 2
        delays = sorted(s.ready_at - 10.0 for s in fleet.servers[2:])
        assert all(d > 5 for d in delays)
        assert fleet.step(10.0 + delays[-1] + 1).registered == 5

    def test_routing_follows_ranked_order(self):
        """New clients go to the top of FleetSnapshot.ranked() (live load): never to Warning while one is Available."""
        fleet = SimulatedFleet(STEADY, seed=3, replicas=4)
        for t in range(0, 600):
            fleet.step(float(t))
            before = {s.pod: s.count for s in fleet.servers}
            snapshot = fleet.snapshot(float(t))
            best = min(
                (s for s in fleet.servers if s.registered),
                key=lambda s: (s.status.rank, s.count, s.server_id),
            )
            fleet.step(float(t) + 1)
            gained = [s for s in fleet.servers if s.count > before.get(s.pod, 0)]
            if gained and snapshot.available and fleet.index == snapshot.index:
                assert all(s.status is Status.AVAILABLE for s in gained)
                assert best in gained

    def test_scale_down_prefers_unregistered_then_critical_then_warning(self):
        """Pods go as pod-deletion-cost would have it: starting ones, then Critical, Warning, least loaded."""
        fleet = SimulatedFleet(STEADY, seed=0, replicas=4)
        fleet.step(300.0)
        stages = [Status.AVAILABLE, Status.CRITICAL, Status.WARNING, Status.AVAILABLE]
        for server, status in zip(fleet.servers, stages, strict=True):
            server.stage = Stage(status, 0.0)
        fleet.apply_replicas(6, 300.0)  # two starting pods
        fleet.apply_replicas(4, 300.0)
        assert [s.n for s in fleet.servers] == [0, 1, 2, 3]
        fleet.apply_replicas(2, 300.0)
        assert {s.n for s in fleet.servers} == {0, 3}

    def test_status_changes_reach_consul_at_once_output_only_after_the_interval(self):
        """As a Consul agent does: a status change is in the catalog (a new index) at once; a new load alone
        only after check_update_interval × U[0.5, 1.5); in between the scaler sees the old load."""
        params = FleetParams(check_update_interval=30.0)
        light = Trace(name="light", duration=1800.0, points=((0.0, 0.2),))  # 60 clients on 2 servers
        fleet = SimulatedFleet(light, params=params, seed=0, replicas=2)
        server = fleet.servers[0]
        t = 10.0
        fleet.step(t)
        while server.sync_at is not None:  # no earlier output change waiting
            t += 1
            fleet.step(t)
        assert server.catalog is not None
        index, load = fleet.index, server.catalog.load
        # Forty more clients: the reporter sees a new load at its next report, a news for the deadband.
        for cid in range(40):
            server.clients[10_000 + cid] = 10_000.0
        server.count += 40
        reported = server.next_report
        fleet.step(reported)
        assert server.published is not None
        assert server.published.load != load
        assert server.catalog.load == load
        assert server.sync_at is not None
        assert reported + 15 <= server.sync_at <= reported + 45
        writes = fleet.catalog_writes
        fleet.step(server.sync_at + 1)
        assert server.catalog.load == server.published.load
        assert fleet.index > index
        assert fleet.catalog_writes > writes
        # A status change goes at once, with the latest output.
        index = fleet.index
        for cid in range(70):
            server.clients[20_000 + cid] = 10_000.0
        server.count += 60
        fleet.step(fleet.now + 5)
        assert server.catalog.status is Status.CRITICAL
        assert server.catalog.load == server.published.load
        assert fleet.index > index

    def test_heartbeats_write_nothing(self):
        """Nothing new (inside the deadband): no catalog write, no new index, for as long as it lasts."""
        fleet = SimulatedFleet(Trace(name="none", duration=900.0, points=((0.0, 0.0),)), seed=0, replicas=3)
        fleet.step(1.0)
        index, writes = fleet.index, fleet.catalog_writes
        fleet.step(290.0)
        assert (fleet.index, fleet.catalog_writes) == (index, writes)
        fleet.step(340.0)  # the refresh (300 s): each server re-stamps its demand, output-only
        assert fleet.catalog_writes == writes + 3

    def test_demand_counts_the_clients_turned_away(self):
        """Full servers: the demand is the offered load, the turned-away clients included, past 1.0."""
        trace = Trace(name="t", duration=600.0, points=((0.0, 1.0), (60.0, 10.0)))
        fleet = SimulatedFleet(trace, params=FleetParams(check_update_interval=0.0), seed=0, replicas=2)
        fleet.step(150.0)
        assert fleet.stats.rejected > 0
        demand = sum(s.catalog.demand or 0.0 for s in fleet.servers if s.catalog is not None)
        assert demand == pytest.approx(10.0 * 300 / 100, rel=0.3)  # 10 clients/s × 300 s / 100 per server
        assert all((s.catalog.load or 0) <= 1.0 for s in fleet.servers if s.catalog is not None)

    def test_new_servers_show_their_figures_at_once(self):
        """A new server is registered Critical and set at once (a status change): its load and demand come with it."""
        fleet = SimulatedFleet(STEADY, seed=0, replicas=2)
        fleet.apply_replicas(3, 10.0)
        fleet.step(10.0 + 200)
        newest = fleet.servers[-1]
        assert newest.registered
        assert newest.catalog is not None
        assert newest.catalog.demand is not None

    def test_failing_server_turns_critical_and_sheds_clients(self):
        """In the leak trace a failing server reports Critical at once and its clients reconnect elsewhere."""
        trace = Trace(name="t", duration=600.0, points=((0.0, 0.5),), failures=(300.0,))
        fleet = SimulatedFleet(trace, seed=0, replicas=4)
        snapshot = fleet.step(302.0)
        assert snapshot.critical == 1
        failed = next(s for s in fleet.servers if s.failing)
        assert failed.count == 0
        assert failed.n == 0  # the oldest


class TestOracle:
    def test_sizes_for_the_expected_clients(self):
        """At a steady rate the oracle asks for ceil(λτ / (capacity × 0.7)): 2 clients/s → 600 clients → 9."""
        oracle = OracleScaler(STEADY, FleetParams(), 2, 40, 0.7)
        fleet = SimulatedFleet(STEADY, seed=0, replicas=5)
        assert oracle.evaluate(fleet=fleet, changed=False, now=0.0) == 9

    def test_knows_a_step_at_once_and_looks_ahead_by_the_start_up_delay(self):
        """At a 5× step it asks at once for the clients expected one start-up delay (p90) later."""
        trace = builtin_trace("flash")
        params = FleetParams()
        oracle = OracleScaler(trace, params, 2, 40, 0.7)
        fleet = SimulatedFleet(trace, seed=0, replicas=5)
        oracle.evaluate(fleet=fleet, changed=False, now=3599.0)
        desired = oracle.evaluate(fleet=fleet, changed=False, now=3600.0)
        lead = params.startup_median * math.exp(1.2816 * params.startup_sigma)
        expected = 1500 + (300 - 1500) * math.exp(-lead / 300)
        assert desired == math.ceil(expected / 70)

    def test_replaces_failing_servers(self):
        """A failing server is no capacity: one more pod for it."""
        trace = Trace(name="t", duration=600.0, points=((0.0, 2.0),), failures=(10.0,))
        oracle = OracleScaler(trace, FleetParams(), 2, 40, 0.7)
        fleet = SimulatedFleet(trace, seed=0, replicas=9)
        fleet.step(11.0)
        assert oracle.evaluate(fleet=fleet, changed=True, now=11.0) == 10


class TestTargets:
    def test_checks_name_the_figures(self):
        """Each target says met or MISSED and the figures behind it."""
        comparison = compare(builtin_trace("flash").truncated(1.5 * 3600), config=simulation_policy(), fallback=True)
        checks = {c.name: c for c in check_targets(comparison)}
        assert list(checks) == [
            "oracle: under target",
            "oracle: replica·h",
            "naive: both",
            "hpa: under target",
            "hpa: replica·h",
            "today: under target",
        ]
        ours, _, oracle, *_ = comparison.results
        assert checks["oracle: under target"].met == (ours.under_target_s <= 2 * oracle.under_target_s + 60)
        assert "+ 60 × 1" in str(checks["oracle: under target"])


class TestShippedWorld:
    def test_the_simulated_agent_is_the_shipped_one(self):
        """The simulator's check_update_interval is the one manifests/base/consul/client.json ships."""
        client = json.loads((ROOT / "manifests/base/consul/client.json").read_text())
        assert TypeAdapter(Duration).validate_python(client["check_update_interval"]) == SHIPPED_CHECK_UPDATE_INTERVAL
        assert FleetParams().check_update_interval == SHIPPED_CHECK_UPDATE_INTERVAL

    def test_the_simulated_reporter_is_the_shipped_one(self):
        """The simulated servers use the reporter's default deadband."""
        settings = ReporterSettings(
            instance_id="b", server_id="b", address="10.0.0.1", pod="b", metrics_url="http://127.0.0.1:1/m"
        )
        assert FleetParams().deadband == settings.deadband


class TestHpa:
    @pytest.mark.parametrize(
        ("current", "utilisation", "starting", "expected"),
        [
            (4, [0.9] * 4, 0, 6),  # ceil(4 × 0.9 / 0.6) = 6
            (4, [0.65] * 4, 0, 4),  # ratio 1.083: within the 0.1 tolerance
            (4, [0.66] * 4, 0, 5),  # 66 % / 60 % = 1.1 in float64 is just above 0.1 away: scales, like the controller
            (4, [0.67] * 4, 0, 5),  # ratio 1.117: ceil(4.47) = 5
            (10, [0.3] * 10, 0, 5),  # ceil(10 × 0.5) = 5
            (3, [1.0, 0.5, 0.3], 0, 3),  # mean 0.6: exactly at target
            (6, [1.2] * 4, 2, 8),  # ratio 2 with 2 pods starting at 0 %: 80 % / 60 % × 6 pods = 8
            (6, [0.65] * 4, 2, 6),  # ratio 1.083 within tolerance, starting pods ignored
        ],
    )
    def test_replica_calculator(self, current, utilisation, starting, expected):
        """desired = ceil(pods × utilisation / target) outside the tolerance, as documented."""
        got = hpa_recommendation(
            current=current, ready_utilisation=utilisation, starting=starting, target=0.6, tolerance=0.1
        )
        assert got == expected

    def test_starting_pods_count_as_target_on_the_way_down(self):
        """Missing metrics count as 100 % of target when scaling down, damping the scale-down."""
        # 4 ready at 0.3 (ratio 0.5) and 4 starting at 0.6: new ratio 0.75 → ceil(0.75 × 8) = 6.
        assert hpa_recommendation(current=8, ready_utilisation=[0.3] * 4, starting=4, target=0.6, tolerance=0.1) == 6

    def test_starting_pods_that_flip_direction_keep_current(self):
        """If counting starting pods at 0 % flips a scale-up into a scale-down, nothing changes."""
        assert hpa_recommendation(current=8, ready_utilisation=[0.7] * 4, starting=4, target=0.6, tolerance=0.1) == 8

    def test_scale_up_limited_to_max_of_4_pods_and_100_percent(self):
        """Default scale-up policy: max(+4 pods, +100 %) per 15 s, counted from the period's start."""
        hpa = HpaScaler(1, 100)
        assert hpa.desired(current=2, ready_utilisation=[3.0, 3.0], starting=0, now=0.0) == 6  # +4 pods beats +100 %
        hpa = HpaScaler(1, 100)
        assert hpa.desired(current=10, ready_utilisation=[3.0] * 10, starting=0, now=0.0) == 20  # +100 %
        hpa.events.append((0.0, 10))
        # 5 s later, same period: the period started at 10 replicas, so 20 is still the limit.
        assert hpa.desired(current=20, ready_utilisation=[3.0] * 20, starting=0, now=5.0) == 20

    def test_scale_down_waits_for_the_stabilisation_window(self):
        """Scale-down takes the highest recommendation of the last 300 s."""
        hpa = HpaScaler(1, 100, HpaParams())
        assert hpa.desired(current=10, ready_utilisation=[0.6] * 10, starting=0, now=0.0) == 10
        assert hpa.desired(current=10, ready_utilisation=[0.3] * 10, starting=0, now=15.0) == 10
        assert hpa.desired(current=10, ready_utilisation=[0.3] * 10, starting=0, now=299.0) == 10
        assert hpa.desired(current=10, ready_utilisation=[0.3] * 10, starting=0, now=300.0) == 5

    def test_syncs_every_15_seconds(self):
        """The controller evaluates on its sync period, not on Consul changes."""
        hpa = HpaScaler(1, 100)
        fleet = SimulatedFleet(STEADY, seed=0, replicas=2)
        hpa.evaluate(fleet=fleet, changed=True, now=0.0)
        assert hpa.next_sync == 15.0
        assert hpa.evaluate(fleet=fleet, changed=True, now=10.0) is None
        assert hpa.next_sync == 15.0


def _set_stage(fleet: SimulatedFleet, server: SimServer, status: Status) -> None:
    """Force a server's stage, as its reporter and agent would write it (a status change: at once)."""
    server.stage = Stage(status, 0.0)
    assert server.published is not None
    server.published = server.catalog = replace(server.published, status=status)
    fleet._changed()


class TestNaive:
    def _fleet(self, available: int, warning: int) -> SimulatedFleet:
        fleet = SimulatedFleet(STEADY, seed=0, replicas=available + warning)
        for server in fleet.servers[available:]:
            _set_stage(fleet, server, Status.WARNING)
        return fleet

    def test_adds_one_per_notification_below_target(self):
        """Below the threshold, every Consul notification adds one server, ignoring pods still starting."""
        naive = NaiveScaler(1, 20, 0.3, 0.6)
        fleet = self._fleet(1, 4)
        assert naive.evaluate(fleet=fleet, changed=True, now=0.0) == 6
        assert naive.evaluate(fleet=fleet, changed=False, now=1.0) is None

    def test_removes_one_after_the_share_stayed_high(self):
        """At or above scale_down_ratio for 300 s, one server goes; the window then restarts."""
        naive = NaiveScaler(1, 20, 0.3, 0.6)
        fleet = self._fleet(5, 0)
        assert naive.evaluate(fleet=fleet, changed=True, now=0.0) is None
        assert naive.evaluate(fleet=fleet, changed=False, now=299.0) is None
        assert naive.evaluate(fleet=fleet, changed=False, now=300.0) == 4
        assert naive.evaluate(fleet=fleet, changed=False, now=301.0) is None


class TestTraces:
    @pytest.mark.parametrize("name", list(BUILTIN_TRACES))
    def test_builtins_are_valid(self, name):
        """Every built-in trace starts at 0 with a positive rate, lasts hours, and is the same every time."""
        trace = builtin_trace(name)
        assert trace.rate(0.0) > 0
        assert trace.duration >= 4 * 3600
        assert builtin_trace(name) == trace

    def test_the_new_shapes(self):
        """Repeated short spikes, a slow ramp to a plateau, a noisy day with server failures."""
        spikes = builtin_trace("spikes")
        assert len(spikes.flashes) == 8
        assert all(spikes.rate(t + 60) >= 2.5 * spikes.rate(t - 60) for t in spikes.flashes)
        assert all(spikes.rate(t + 11 * 60) == 1.0 for t in spikes.flashes)  # short: over within 10 min
        plateau = builtin_trace("plateau")
        rates = [plateau.rate(h * 3600.0) for h in (0, 1, 2, 3, 4, 5, 6)]
        assert rates == sorted(rates)
        assert rates[-3:] == [4.0] * 3
        noisy = builtin_trace("noisy-day")
        assert len(noisy.failures) == 5
        assert len(noisy.flashes) == 6  # its bursts
        smooth = builtin_trace("diurnal")
        off = [abs(noisy.rate(t) / smooth.rate(t) - 1) for t in range(0, 86400, 300)]
        assert max(off) > 0.3  # noise and bursts...
        assert sorted(off)[len(off) // 2] < 0.2  # ...around the same day

    def test_csv(self, tmp_path):
        """CSV rows are step changes; events mark the flash crowds and failures."""
        path = tmp_path / "day.csv"
        path.write_text("seconds,clients_per_second,event\n0,1\n600,4,flash\n900,1\n1000,3,flash\n1200,1,fail\n")
        trace = trace_from_csv(path)
        assert (trace.name, trace.duration, trace.flash_at, trace.failures) == ("day", 1400.0, 600.0, (1200.0,))
        assert trace.flashes == (600.0, 1000.0)
        assert [trace.rate(t) for t in (0, 599, 600, 899, 900, 1000)] == [1, 1, 4, 4, 1, 3]
        assert load_trace(str(path)).points == trace.points

    def test_csv_errors_name_the_row(self, tmp_path):
        """A bad row is reported with its number."""
        path = tmp_path / "bad.csv"
        path.write_text("seconds,rate\n0,1\nten,2\n")
        with pytest.raises(ValueError, match="row 3"):
            trace_from_csv(path)

    def test_unknown_trace(self):
        with pytest.raises(ValueError, match="built-in"):
            load_trace("nope")


class TestRunner:
    def test_measures_are_consistent(self):
        """Replica-hours integrate pods; peak and actions match the patches made."""
        config = simulation_policy()
        result = run(builtin_trace("flash").truncated(2 * 3600), PolicyScaler(config), target=0.3)
        assert result.patches
        assert result.actions == len(result.patches)
        assert result.peak >= max(after for _, _, after in result.patches)
        assert 0 < result.replica_hours <= result.peak * 2
        assert result.samples[0].t == 0.0
        assert len(result.samples) == 120

    def test_same_clients_for_every_scaler(self):
        """All scalers of a comparison see the same arrivals."""
        comparison = compare(builtin_trace("flash").truncated(1800), config=simulation_policy(), fallback=True)
        assert len({r.arrived for r in comparison.results}) == 1
        assert [r.scaler for r in comparison.results] == [
            "bolina-scaler",
            "bolina-scaler (no demand)",
            "oracle",
            "hpa",
            "naive",
        ]

    def test_deterministic_per_seed(self):
        """The same trace and seed give the same table, to the last write; another seed another one."""

        def table(seed: int) -> list[tuple[object, ...]]:
            comparison = compare(builtin_trace("spikes").truncated(5400), config=simulation_policy(), seed=seed)
            return [(r.under_target_s, r.replica_hours, r.actions, r.catalog_writes) for r in comparison.results]

        assert table(3) == table(3)
        assert table(3) != table(4)

    def test_flash_reaction_is_measured(self):
        """On a trace with a flash crowd, the first scale-up after it and the recovery are timed."""
        comparison = compare(builtin_trace("flash").truncated(2 * 3600), config=simulation_policy())
        for result in comparison.results:
            assert result.first_up_s is not None
            assert result.first_up_s >= 0

    def test_policy_beats_naive_on_flash_crowd(self):
        """Our policy spends less time under the target than the seed's naive rule on the flash-crowd trace."""
        ours, _, _, naive = compare(builtin_trace("flash"), config=simulation_policy()).results
        assert ours.under_target_s < naive.under_target_s

    def test_demand_pays_off_on_spikes(self):
        """Sizing from demand spends far less time under target than probing with the share (three spikes)."""
        trace = builtin_trace("spikes").truncated(2.6 * 3600)
        with_demand = run(trace, PolicyScaler(simulation_policy()), target=0.3)
        share_based = run(trace, PolicyScaler(without_demand(simulation_policy())), target=0.3)
        assert with_demand.under_target_s < share_based.under_target_s / 2
        assert with_demand.replica_hours < share_based.replica_hours * 1.15


class TestCommand:
    def test_simulate_prints_a_table(self, capsys):
        """``bolina-scaler simulate`` prints one row per scaler: ours, the oracle, the HPA, naive; then the targets."""
        assert main(["simulate", "--trace", "step", "--hours", "0.5"]) == 0
        out = capsys.readouterr().out
        assert "trace step (0.5 h virtual)" in out
        for name in ("bolina-scaler", "oracle", "hpa", "naive"):
            assert f"\n{name} " in out
        assert "no demand" not in out
        assert "targets: oracle: under target" in out

    def test_simulate_a_csv_trace(self, capsys, tmp_path):
        """A CSV trace gets the same four rows, its flash crowds counted in the targets."""
        path = tmp_path / "day.csv"
        path.write_text("seconds,clients_per_second,event\n0,1\n600,4,flash\n1200,1\n1500,3,flash\n1800,1\n")
        assert main(["simulate", "--trace", str(path), "--fallback"]) == 0
        out = capsys.readouterr().out
        assert "trace day (0.583333 h virtual)" in out
        for name in ("bolina-scaler", "bolina-scaler (no demand)", "oracle", "hpa", "naive"):
            assert f"\n{name} " in out
        assert "+ 60 × 2 =" in out

    def test_simulate_markdown_and_plot(self, capsys, tmp_path):
        """--markdown prints a Markdown table; --plot writes a small PNG."""
        pytest.importorskip("matplotlib")
        target = tmp_path / "out.png"
        assert main(["simulate", "--trace", "flash", "--hours", "1.2", "--markdown", "--plot", str(target)]) == 0
        assert "| policy |" in capsys.readouterr().out
        assert 1_000 < target.stat().st_size < 150_000

    def test_plot_without_matplotlib_explains(self, monkeypatch, tmp_path):
        """Without matplotlib, --plot says how to install it."""
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        comparison = compare(STEADY, config=simulation_policy())
        with pytest.raises(PlotUnavailable, match=r"bolina-scaler\[plot\]"):
            plot(comparison, tmp_path / "x.png")
        assert "bolina-scaler" in text_table(comparison)
        assert markdown_table(comparison).count("\n") == 5  # header, rule, four rows

    def test_bad_trace_is_a_usage_error(self, capsys):
        assert main(["simulate", "--trace", "nope"]) == 2
        assert "unknown trace" in capsys.readouterr().err


def test_params_default_sizes():
    """The documented sizing: 100-client servers, 5-min sessions."""
    assert (FleetParams().capacity, FleetParams().session_mean) == (100, 300.0)
