"""The metrics registry: fresh per daemon, fed correctly, and every metric documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bolina_scaler import __version__
from bolina_scaler.core.model import Status
from bolina_scaler.metrics import Metrics, StateReading
from tests.test_http import decision, fleet, server

README = Path(__file__).resolve().parents[1] / "README.md"


def families(metrics: Metrics) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


class TestMetrics:
    def test_each_instance_has_its_own_registry(self):
        """Two daemons in one process never share a counter."""
        a, b = Metrics(), Metrics()
        a.evaluations.inc()
        assert b.registry.get_sample_value("bolina_scaler_evaluations_total") == 0

    def test_refresh_sets_the_state_gauges(self):
        """Servers by status, registered, replicas, trust, index, the last trusted answer, leader, readiness."""
        m = Metrics()
        snap = fleet(server(1, Status.AVAILABLE), server(2, Status.CRITICAL), observed_at=90.0)
        m.refresh(
            StateReading(
                snapshot=snap,
                last_trusted_at=1_700_000_000.5,
                current=5,
                decision=decision(),
                leader=True,
                ready=True,
                paused=False,
            )
        )
        value = m.registry.get_sample_value
        assert value("bolina_scaler_servers", {"status": "available"}) == 1
        assert value("bolina_scaler_servers", {"status": "warning"}) == 0
        assert value("bolina_scaler_servers_registered") == 2
        assert value("bolina_scaler_replicas_current") == 5
        assert value("bolina_scaler_replicas_desired") == 6
        assert value("bolina_scaler_replicas_pending") == 0
        assert value("bolina_scaler_snapshot_trusted") == 1
        assert value("bolina_scaler_last_trusted_snapshot_timestamp_seconds") == 1_700_000_000.5
        assert value("bolina_scaler_consul_index") == 42
        assert value("bolina_scaler_leader") == 1
        assert value("bolina_scaler_ready") == 1
        assert value("bolina_scaler_paused") == 0

    def test_nothing_unknown_is_made_up(self):
        """Before the first Consul answer, scale read, decision and Deployment read, those gauges are absent."""
        m = Metrics()
        exported = {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
        for name in (
            "bolina_scaler_servers",
            "bolina_scaler_servers_registered",
            "bolina_scaler_snapshot_trusted",
            "bolina_scaler_consul_index",
            "bolina_scaler_last_trusted_snapshot_timestamp_seconds",
            "bolina_scaler_replicas_current",
            "bolina_scaler_replicas_desired",
            "bolina_scaler_replicas_pending",
            "bolina_scaler_paused",
            "bolina_scaler_policy_max_replicas",
        ):
            assert name not in exported, name
        assert m.registry.get_sample_value("bolina_scaler_leader") == 0
        assert m.registry.get_sample_value("bolina_scaler_ready") == 0

    def test_standard_collectors_and_build_info(self):
        """process_*, python_info and python_gc_* are exported, and build_info carries the version."""
        m = Metrics()
        names = set(families(m))
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info", "python_gc_collections"} <= names
        assert m.registry.get_sample_value("bolina_scaler_build_info", {"version": __version__}) == 1

    def test_policy_gauges(self):
        """The bounds and the target are exported once the daemon sets them."""
        m = Metrics()
        m.set_policy(min_replicas=2, max_replicas=12, target_available_ratio=0.3)
        value = m.registry.get_sample_value
        assert (value("bolina_scaler_policy_min_replicas"), value("bolina_scaler_policy_max_replicas")) == (2, 12)
        assert value("bolina_scaler_policy_target_available_ratio") == 0.3

    def test_patch_outcomes_start_at_zero(self):
        """Every outcome of patches_total exists at 0, so increase() counts the first failure."""
        m = Metrics()
        for outcome in ("patched", "conflict", "failed", "dry_run", "not_leader"):
            assert m.registry.get_sample_value("bolina_scaler_patches_total", {"outcome": outcome}) == 0

    def test_decisions_are_counted_by_direction_and_reason(self):
        """Each decision bumps decisions_total{direction,reason} and evaluations_total."""
        m = Metrics()
        m.observe_decision(decision())
        assert m.registry.get_sample_value("bolina_scaler_decisions_total", {"direction": "up",
                                           "reason": "below_target"}) == 1  # fmt: skip
        assert m.registry.get_sample_value("bolina_scaler_evaluations_total") == 1

    def test_kube_call_times_and_counts_errors(self):
        """kube_call observes the duration and counts a raised error."""
        m, t = Metrics(), iter([0.0, 0.25])
        with pytest.raises(RuntimeError), m.kube_call("scale_patch", clock=lambda: next(t)):
            raise RuntimeError("boom")
        value = m.registry.get_sample_value
        assert value("bolina_scaler_kubernetes_errors_total", {"operation": "scale_patch"}) == 1
        assert value("bolina_scaler_kubernetes_request_duration_seconds_sum", {"operation": "scale_patch"}) == 0.25

    def test_consul_queries(self):
        """A Consul query is recorded by blocking or not, and a failed one is counted."""
        m = Metrics()
        m.observe_consul_query(2.0, blocking=True, failed=False)
        m.observe_consul_query(0.1, blocking=False, failed=True)
        value = m.registry.get_sample_value
        assert value("bolina_scaler_consul_query_duration_seconds_count", {"blocking": "true"}) == 1
        assert value("bolina_scaler_consul_errors_total") == 1

    def test_every_metric_is_documented_in_the_readme(self):
        """The README's metrics table names exactly the metrics the daemon exports."""
        exported = {n for n in families(Metrics()) if n.startswith("bolina_scaler_") and not n.endswith("_created")}
        section = README.read_text(encoding="utf-8").split("## Metrics", 1)[1].split("\n## ", 1)[0]
        first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `bolina_scaler_")]
        documented = {name for cell in first_cells for name in re.findall(r"`(bolina_scaler_[a-z_]+)`", cell)}
        documented = {name.removesuffix("_total") for name in documented}
        assert documented == exported
