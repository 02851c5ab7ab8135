"""The metrics registry: fresh per daemon, fed correctly, and every metric documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bolina_scaler.core.model import Status
from bolina_scaler.metrics import Metrics
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
        """Servers by status, registered, current replicas, snapshot age, trust, index and leader."""
        m = Metrics()
        snap = fleet(server(1, Status.AVAILABLE), server(2, Status.CRITICAL), observed_at=90.0)
        m.refresh(snapshot=snap, current=5, leader=True, now=100.0)
        value = m.registry.get_sample_value
        assert value("bolina_scaler_servers", {"status": "available"}) == 1
        assert value("bolina_scaler_servers", {"status": "warning"}) == 0
        assert value("bolina_scaler_servers_registered") == 2
        assert value("bolina_scaler_replicas_current") == 5
        assert value("bolina_scaler_snapshot_age_seconds") == 10
        assert value("bolina_scaler_consul_index") == 42
        assert value("bolina_scaler_leader") == 1

    def test_decisions_are_counted_by_direction_and_reason(self):
        """Each decision bumps decisions_total{direction,reason} and sets desired and pending."""
        m = Metrics()
        m.observe_decision(decision())
        assert m.registry.get_sample_value("bolina_scaler_decisions_total", {"direction": "up",
                                           "reason": "below_target"}) == 1  # fmt: skip
        assert m.registry.get_sample_value("bolina_scaler_replicas_desired") == 6

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
        exported = {name for name in families(Metrics()) if not name.endswith("_created")}
        section = README.read_text(encoding="utf-8").split("## Metrics", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `(bolina_scaler_[a-z_]+)", section, flags=re.MULTILINE))
        documented = {name.removesuffix("_total") for name in documented}
        assert documented == exported
