"""End to end against real servers: the shipped manifests, the scaler ServiceAccount's own token,
a real Consul agent with ACLs, pods created by the real controller-manager and run by kwok.

Bolina servers are simulated: one Consul registration (with a TTL check) per Running pod, flipped
between passing, warning and critical by the test. These tests walk the policy through scale-ups and
scale-downs in real time, so they run the shipped config with the policy's windows shortened to
seconds (``harness.FAST_POLICY``); they check behaviour and publish no figure.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import BolinaNamespace, Scalers
from tests.integration.harness import (
    FAST_POLICY,
    ConsulAgent,
    Fleet,
    Kube,
    KubeCluster,
    decided_at_latest,
    deep_merge,
    wait_until,
)

pytestmark = pytest.mark.integration

FAST_POLICY_MIN_2 = deep_merge(FAST_POLICY, {"policy": {"min_replicas": 2}})


def test_shipped_rbac_grants_exactly_enough(
    kube: KubeCluster, bolina_ns: BolinaNamespace, consul: ConsulAgent, scalers: Scalers
) -> None:
    """With its own ServiceAccount token, the scaler can read and patch the bolina scale (and run
    leader election, Events, deletion costs), and gets 403 on other Deployments and on Secrets."""
    ns = bolina_ns.name
    admin = kube.admin
    kube.kubectl("-n", ns, "create", "deployment", "other", "--image=example.invalid/other:1", "--replicas=0")
    kube.kubectl("-n", ns, "create", "secret", "generic", "some-secret", "--from-literal=k=v")
    sa = Kube(kube.server, kube.ca_file, bolina_ns.sa_token)
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"

    # Allowed: the scale subresource of bolina, and reading (not writing) the bolina Deployment
    # for its pause annotations (test_operations.py tests the name-filtered watch).
    assert sa.call("GET", f"{base}/bolina/scale").status == 200
    assert sa.patch_scale(ns, 0).status == 200
    assert sa.call("GET", f"{base}/bolina").status == 200
    # Denied: other Deployments, writing the Deployment object itself, Secrets.
    denied = {
        "get other/scale": sa.call("GET", f"{base}/other/scale").status,
        "patch other/scale": sa.patch_scale(ns, 3, name="other").status,
        "get deployment other": sa.call("GET", f"{base}/other").status,
        "patch deployment bolina": sa.call(
            "PATCH", f"{base}/bolina", {"spec": {"replicas": 3}}, content_type="application/merge-patch+json"
        ).status,
        "list deployments": sa.call("GET", base).status,
        "list secrets": sa.call("GET", f"/api/v1/namespaces/{ns}/secrets").status,
        "get secret": sa.call("GET", f"/api/v1/namespaces/{ns}/secrets/some-secret").status,
        "list secrets cluster-wide": sa.call("GET", "/api/v1/secrets").status,
    }
    assert denied == dict.fromkeys(denied, 403)
    # The same, as the authorizer sees it.
    who = f"--as=system:serviceaccount:{ns}:bolina-scaler"
    for verb_resource, allowed in (
        (["get", "deployments/bolina", "--subresource=scale"], "yes"),
        (["patch", "deployments/bolina", "--subresource=scale"], "yes"),
        (["patch", "deployments/other", "--subresource=scale"], "no"),
        (["get", "secrets"], "no"),
        (["update", "leases/bolina-scaler"], "yes"),
    ):
        answer = kube.kubectl("auth", "can-i", "-n", ns, who, *verb_resource, check=False).stdout.strip()
        assert answer == allowed, (verb_resource, answer)

    # The real daemon with that token: it leads, scales the shipped Deployment (replicas: 0) to
    # min_replicas, records Events and sets deletion costs, without a single 403.
    scaler = scalers.start(scalers.config(consul.address, consul.scaler_token_file, bolina_ns, **FAST_POLICY_MIN_2))
    scaler.wait_log(lambda line: line["event"] == "leader.elected", timeout=30, what="leadership")
    scaler.wait_log(
        lambda line: line["event"] == "scale.patched" and line["after"] == 2, timeout=30, what="cold start to 2"
    )
    assert bolina_ns.scale() == 2
    fleet = Fleet(consul, bolina_ns)
    bolina_ns.wait_running(2)
    fleet.sync("passing")
    # A scale-up and a scale-down exercise Events and deletion costs too.
    fleet.set(None, "warning")
    wait_until(lambda: bolina_ns.scale() == 4, timeout=30, what="scale-up to 4", alive=scaler.exited)
    bolina_ns.wait_running(4)
    fleet.sync("passing")
    fleet.set(None, "passing")
    wait_until(lambda: bolina_ns.scale() == 3, timeout=30, what="scale-down to 3", alive=scaler.exited)
    scaler.wait_log(lambda line: line["event"] == "deletion_cost.set", timeout=10, what="costs")
    wait_until(
        lambda: any(
            e.get("reason") == "ScaledUp" or "scale" in str(e.get("reason", "")).lower()
            for e in admin.call("GET", f"/api/v1/namespaces/{ns}/events").json()["items"]
            + admin.call("GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events").json()["items"]
            if (e.get("reportingController") or e.get("source", {}).get("component") or "").startswith("bolina")
        ),
        timeout=15,
        what="an Event recorded by bolina-scaler",
    )
    lease = admin.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/bolina-scaler").json()
    assert lease["spec"]["holderIdentity"], lease
    problems = [
        line
        for line in scaler.lines()
        if line.get("level") in {"warning", "error"} or "HTTP 403" in str(line) or "forbidden" in str(line).lower()
    ]
    assert problems == []


def test_scales_end_to_end_without_runaway(
    kube: KubeCluster, bolina_ns: BolinaNamespace, consul: ConsulAgent, scalers: Scalers
) -> None:
    """Servers flip passing/warning/critical; spec.replicas follows the policy, the controller-manager
    creates the pods, kwok runs them, and the scaler waits for new servers instead of running away."""
    fleet = Fleet(consul, bolina_ns)
    scaler = scalers.start(scalers.config(consul.address, consul.scaler_token_file, bolina_ns, **FAST_POLICY_MIN_2))
    # Cold start: the shipped Deployment has replicas: 0 → min_replicas.
    wait_until(lambda: bolina_ns.scale() == 2, timeout=30, what="cold start to 2", alive=scaler.exited)
    bolina_ns.wait_running(2)
    fleet.sync("passing")
    assert decided_at_latest(scaler, consul)["decision"]["reason"] == "at_min"

    # Both Warning: share 0/2 < 0.5 → the smallest n with (0 + n)/(2 + n) ≥ 0.5 is 2 → 4.
    fleet.set(None, "warning")
    wait_until(lambda: bolina_ns.scale() == 4, timeout=20, what="scale-up 2 → 4", alive=scaler.exited)
    new = sorted(set(bolina_ns.wait_running(4)) - set(fleet.registered))
    assert len(new) == 2

    # The two new pods run but have not registered: they count as starting capacity, so more
    # Consul churn (a server turning Critical and back) must not scale up again.
    first = next(iter(fleet.registered))
    for status in ("critical", "warning", "critical", "warning"):
        fleet.set([first], status)
        decision = decided_at_latest(scaler, consul)
        assert decision["decision"]["inputs"]["pending"] == 2, decision
        assert decision["decision"]["desired"] == 4, decision
    watch_until = time.monotonic() + 3
    while time.monotonic() < watch_until:  # a bounded watch window for a non-event
        assert bolina_ns.scale() == 4, "the scaler ran away while new servers were starting"
        time.sleep(0.2)

    # The new servers register as passing: 2/4 meets the target, nothing more to do.
    fleet.sync("passing")
    decision = decided_at_latest(scaler, consul)
    assert (decision["decision"]["inputs"]["pending"], decision["decision"]["desired"]) == (0, 4), decision

    # A Critical majority: 1/4 → (1 + n)/(4 + n) ≥ 0.5 → n = 2 → 6.
    fleet.set([p for p in fleet.registered if p != new[0]], "critical")
    wait_until(lambda: bolina_ns.scale() == 6, timeout=20, what="scale-up 4 → 6", alive=scaler.exited)
    bolina_ns.wait_running(6)
    fleet.sync("passing")

    # Everyone recovers: 6/6 ≥ 0.8 for the 3 s window → down one per step to min_replicas 2,
    # pods removed by the ReplicaSet, their servers deregistered.
    fleet.set(None, "passing")
    seen = [6]

    def scaled_to_min() -> bool:
        fleet.sync("passing")
        replicas = bolina_ns.scale()
        if replicas != seen[-1]:
            seen.append(replicas)
        return replicas == 2

    wait_until(scaled_to_min, timeout=90, what="scale-down to 2", interval=0.3, alive=scaler.exited)
    assert seen == [6, 5, 4, 3, 2], seen
    bolina_ns.wait_running(2)
    scaler.wait_log(
        lambda line: line["event"] == "scale.patched" and line["after"] == 2 and line["before"] == 3,
        timeout=10,
        what="'scale.patched' 3→2",
    )
    after = [line["after"] for line in scaler.logged("scale.patched")]
    assert after == [2, 4, 6, 5, 4, 3, 2], after


def test_a_restart_does_not_run_away_while_new_servers_start(
    kube: KubeCluster, bolina_ns: BolinaNamespace, consul: ConsulAgent, scalers: Scalers
) -> None:
    """Scale 4 → 6, restart the daemon before the 2 new servers register: it must keep 6, not go to 8."""
    bolina_ns.set_scale(4)
    pods = bolina_ns.wait_running(4)
    fleet = Fleet(consul, bolina_ns)
    fleet.sync("warning")
    fleet.set(pods[:2], "passing")
    config = scalers.config(consul.address, consul.scaler_token_file, bolina_ns, **FAST_POLICY)
    first = scalers.start(config)
    wait_until(first.ready, timeout=30, what="ready", alive=first.exited)
    fleet.set(pods[:1], "warning")  # 1/4 → 6
    wait_until(lambda: bolina_ns.scale() == 6, timeout=20, what="4 → 6", alive=first.exited)
    assert first.stop()[0] == 0
    second = scalers.start(config)  # the 2 new pods run, their servers have not registered yet
    wait_until(second.ready, timeout=30, what="ready", alive=second.exited)
    decided_at_latest(second, consul)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        assert bolina_ns.scale() == 6, "the restarted scaler ran away while new servers were starting"
        time.sleep(0.2)
