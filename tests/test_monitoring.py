"""The monitoring kit (manifests/components/monitoring): rules Prometheus accepts, alerts that fire
when they should, and a dashboard and alerts that only name metrics the daemon exports.

The rules are checked and unit-tested by promtool's own code (``promtool-rules``: promtool's
``check rules`` and its ``test rules`` runner, ``cmd/promtool/unittest.go`` of the pinned
Prometheus module, built by ``tools/testbin/build.sh promtool-rules``; a missing binary FAILS,
never skips), on the PrometheusRule as ``kubectl kustomize manifests/overlays/dev-monitoring``
renders it: what ships is what is tested.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bolina_scaler.core.model import Status
from bolina_scaler.metrics import Metrics, StateReading
from tests.integration.harness import BIN
from tests.test_http import decision, fleet, server
from tests.test_manifests import find, render

ROOT = Path(__file__).resolve().parents[1]
COMPONENT = ROOT / "manifests" / "components" / "monitoring"
RULE_TESTS = ROOT / "tests" / "monitoring" / "alerts.test.yaml"
OVERLAY = "overlays/dev-monitoring"
DOCS = ROOT / "docs" / "deploy.md"

PROMETHEUS_SERIES = {"up"}
"""Series Prometheus makes itself (not the daemon's): the scrape health."""
_NAME = re.compile(r"\b((?:bolina_scaler|process|python)_[a-z_]+|up)\b(?!\s*\()")


def promtool() -> str:
    path = BIN / "promtool-rules"
    if not path.is_file():
        pytest.fail(f"{path} missing: build it with `tools/testbin/build.sh promtool-rules`", pytrace=False)
    return str(path)


def rule_spec() -> dict[str, Any]:
    return dict(find(render(OVERLAY), "PrometheusRule", "bolina-scaler")["spec"])


def dashboard() -> dict[str, Any]:
    configmap = find(render(OVERLAY), "ConfigMap", "bolina-scaler-dashboard")
    return dict(json.loads(configmap["data"]["bolina-scaler-dashboard.json"]))


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rule_spec()["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return exprs


def names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values and function names left out)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_strings)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_labels)
    return set(_NAME.findall(without_matchers))


def exported_series() -> set[str]:
    """Every sample name the daemon's registry exports once it knows everything."""
    metrics = Metrics()
    metrics.set_policy(min_replicas=1, max_replicas=20, target_available_ratio=0.3)
    metrics.refresh(
        StateReading(
            snapshot=fleet(server(1, Status.AVAILABLE)),
            last_trusted_at=1.0,
            current=1,
            decision=decision(),
            leader=True,
            ready=True,
            paused=False,
        )
    )
    # One child of every labelled metric (a labelled metric without children exports nothing).
    metrics.reaction.observe(0.1)
    metrics.observe_decision(decision())
    metrics.observe_consul_query(0.1, blocking=True, failed=True)
    with contextlib.suppress(RuntimeError), metrics.kube_call("scale_patch"):
        raise RuntimeError("a failed call")
    metrics.leader_changes.inc()
    metrics.events.labels(reason="SuccessfulRescale", outcome="created").inc()
    metrics.deletion_costs.labels(outcome="patched").inc()
    families = text_string_to_metric_families(metrics.render().decode())
    return {sample.name for family in families for sample in family.samples}


class TestRules:
    def test_promtool_checks_the_rules(self, tmp_path: Path) -> None:
        """`promtool check rules` accepts the rendered PrometheusRule's groups."""
        rules = tmp_path / "rules.yaml"
        rules.write_text(yaml.safe_dump(rule_spec()), encoding="utf-8")
        result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 9 rules found" in result.stdout

    def test_promtool_unit_tests_pass(self, tmp_path: Path) -> None:
        """`promtool test rules tests/monitoring/alerts.test.yaml`: every alert fires when and only when it should."""
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()), encoding="utf-8")
        shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yaml")
        result = subprocess.run(
            [promtool(), "test", "rules", "alerts.test.yaml"], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_promtool_rejects_a_broken_or_duplicate_rule(self, tmp_path: Path) -> None:
        """The checker can fail: a rule with bad PromQL, and the same alert twice, are both refused."""
        spec = rule_spec()
        broken = tmp_path / "broken.yaml"
        bad = json.loads(json.dumps(spec))
        bad["groups"][0]["rules"][0]["expr"] = "sum(up"
        broken.write_text(yaml.safe_dump(bad), encoding="utf-8")
        duplicate = tmp_path / "duplicate.yaml"
        twice = json.loads(json.dumps(spec))
        twice["groups"][0]["rules"].append(twice["groups"][0]["rules"][0])
        duplicate.write_text(yaml.safe_dump(twice), encoding="utf-8")
        for path, says in ((broken, "parse error"), (duplicate, "duplicate rule")):
            command = [promtool(), "check", "rules", str(path)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert result.returncode == 1, (path.name, result.stdout + result.stderr)
            assert says in result.stderr, result.stderr

    def test_promtool_unit_test_fails_when_an_alert_does_not_fire(self, tmp_path: Path) -> None:
        """The runner can fail: the same unit tests against rules whose first alert never fires."""
        spec = rule_spec()
        first = spec["groups"][0]["rules"][0]
        first["expr"] = "vector(1) == 0"
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yaml")
        result = subprocess.run(
            [promtool(), "test", "rules", "alerts.test.yaml"], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert first["alert"] in result.stdout + result.stderr

    def test_every_alert_is_unit_tested(self) -> None:
        """Each alert of the rule file has at least one promtool test that expects it to fire."""
        alerts = {rule["alert"] for group in rule_spec()["groups"] for rule in group["rules"]}
        tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        firing = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
        assert alerts == firing

    def test_every_alert_has_a_runbook_section(self) -> None:
        """Each alert's `runbook` names a heading of docs/deploy.md that exists."""
        text = DOCS.read_text(encoding="utf-8")
        anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}
        for group in rule_spec()["groups"]:
            for rule in group["rules"]:
                runbook = rule["annotations"]["runbook"]
                assert runbook == f"docs/deploy.md#{rule['alert'].lower()}", rule["alert"]
                assert runbook.split("#", 1)[1] in anchors, f"no section '### {rule['alert']}' in docs/deploy.md"
                assert {"summary", "description"} <= rule["annotations"].keys()
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}


class TestMetricNames:
    def test_the_name_extractor_finds_names(self) -> None:
        """The extractor sees metric names, not functions, label names or label values."""
        expr = 'sum by (namespace) (rate(bolina_scaler_x_total{job="bolina_scaler_y"}[5m])) / up and absent(process_z)'
        assert names_in(expr) == {"bolina_scaler_x_total", "up", "process_z"}

    def test_rules_name_only_exported_metrics(self) -> None:
        """Every metric an alert reads is one the daemon's registry exports (or Prometheus' `up`)."""
        exported = exported_series() | PROMETHEUS_SERIES
        named = {name for expr in rule_exprs() for name in names_in(expr)}
        assert named
        assert named <= exported, sorted(named - exported)

    def test_dashboard_names_only_exported_metrics(self) -> None:
        """Every metric a dashboard panel queries is one the daemon's registry exports (or `up`)."""
        exported = exported_series() | PROMETHEUS_SERIES
        named = {name for expr in dashboard_exprs() for name in names_in(expr)}
        assert named <= exported, sorted(named - exported)
        for wanted in (
            "bolina_scaler_replicas_current",
            "bolina_scaler_replicas_desired",
            "bolina_scaler_servers",
            "bolina_scaler_decisions_total",
            "bolina_scaler_reaction_latency_seconds_bucket",
            "bolina_scaler_consul_query_duration_seconds_count",
            "bolina_scaler_consul_errors_total",
            "bolina_scaler_leader",
            "bolina_scaler_policy_target_available_ratio",
        ):
            assert wanted in named, f"the dashboard shows no {wanted}"


class TestDashboard:
    def test_is_a_grafana_dashboard_the_sidecar_loads(self) -> None:
        """A ConfigMap labelled grafana_dashboard=1 holding one dashboard with a datasource variable."""
        configmap = find(render(OVERLAY), "ConfigMap", "bolina-scaler-dashboard")
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        board = dashboard()
        assert board["uid"] == "bolina-scaler"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert 'job="bolina-scaler"' in target["expr"], panel["title"]


class TestScrapeTarget:
    def test_service_monitor_scrapes_the_scaler_port_as_job_bolina_scaler(self) -> None:
        """The ServiceMonitor selects the metrics Service, whose port is the scaler's http port."""
        objs = render(OVERLAY)
        monitor = find(objs, "ServiceMonitor", "bolina-scaler")
        service = find(objs, "Service", "bolina-scaler-metrics")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "bolina-scaler"
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert service["spec"]["publishNotReadyAddresses"] is True
        scaler = find(objs, "Deployment", "bolina-scaler")
        assert service["spec"]["selector"].items() <= scaler["spec"]["template"]["metadata"]["labels"].items()
        ports = {p["name"]: p["containerPort"] for c in scaler["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": ports["http"]}

    def test_the_network_policy_admits_the_scraper(self) -> None:
        """The scaler's NetworkPolicy lets Prometheus pods reach the http port."""
        policy = find(render(OVERLAY), "NetworkPolicy", "bolina-scaler")
        http = [rule for rule in policy["spec"]["ingress"] if {"port": "http", "protocol": "TCP"} in rule["ports"]]
        assert len(http) == 1
        sources = http[0]["from"]
        assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}} in (
            sources
        )


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")
