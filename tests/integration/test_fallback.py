"""``policy.fallback`` under the real ``bolina-scaler run`` process, against the real kube-apiserver
and a real Consul agent, recorded as a row of docs/reliability.md.

The steady state is test_faults.py's (4 replicas, 2 of 4 servers Available). A proxy in front of
the agent then answers every health query 500 "No cluster leader" (test_outages.py's outage):
the data is untrusted from the first failed query. The shipped config holds for as long as that
lasts; with a fallback count the fleet goes there once the outage has lasted ``after``, and
when Consul answers again the normal policy decides, its stabilization window in full.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from tests.integration.conftest import BolinaNamespace, Reliability, Scalers
from tests.integration.harness import (
    ConsulAgent,
    ConsulProxy,
    Scaler,
    decided_at_latest,
    grant_status_annotation,
    wait_until,
)
from tests.integration.test_faults import STEADY, hold_window, last_decision, reason_of, steady, wait_scale

pytestmark = pytest.mark.integration

FALLBACK = 7
"""Above the steady 4, within one scale_up step of the shipped config (max(4, 100 %) per 15 s)."""
AFTER = 10.0


def _gauge(scaler: Scaler, name: str) -> float | None:
    text = scaler.get("/metrics").body.decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return None if found is None else float(found.group(1))


def _status(ns: BolinaNamespace) -> dict[str, Any] | None:
    """The bolina-scaler/status annotation, read with the README's kubectl one-liner."""
    jsonpath = "jsonpath={.metadata.annotations.bolina-scaler/status}"
    out = ns.kube.kubectl("-n", ns.name, "get", "deploy", "bolina", "-o", jsonpath).stdout.strip()
    return json.loads(out) if out else None


def _events(ns: BolinaNamespace, reason: str) -> list[dict[str, object]]:
    items = ns.kube.admin.call("GET", f"/api/v1/namespaces/{ns.name}/events").json()["items"]
    return [e for e in items if e.get("reason") == reason]


@pytest.mark.timeout(180)
def test_consul_outage_goes_to_the_fallback_count(
    consul: ConsulAgent, bolina_ns: BolinaNamespace, scalers: Scalers, reliability: Reliability
) -> None:
    reliability.case(
        "consul-outage-fallback",
        fault=f"policy.fallback {{replicas: {FALLBACK}, after: {AFTER:g}s}} (shipped: off); then the scaler's "
        "Consul agent answers every health query 500 'No cluster leader' (a proxy) until the fleet is at the "
        "fallback count; then Consul answers again and the new servers register Available",
        expected=f"hold at {STEADY} for {AFTER:g} s (no patch), then {STEADY}→{FALLBACK} (reason fallback, a "
        "ScalingFallback Warning Event, bolina_scaler_fallback 1, the status annotation's fallback true); once "
        "Consul answers: trusted again, the normal policy decides (gauge 0, status fallback false) and keeps "
        f"{FALLBACK}: a scale-down waits the stabilization window",
    )
    with ConsulProxy(consul.address) as proxy:
        # The status annotation is opt-in: its component's Role, and status.enabled.
        grant_status_annotation(bolina_ns.kube, bolina_ns.name)
        config = {"policy": {"fallback": {"replicas": FALLBACK, "after": f"{AFTER:g}s"}}, "status": {"enabled": True}}
        scaler, fleet = steady(consul, bolina_ns, scalers, address=proxy.address, config=config)
        assert _gauge(scaler, "bolina_scaler_fallback") == 0
        began = proxy.outage(True)
        scaler.wait_log(
            lambda line: line["event"] == "decision.evaluated" and line["reason"] == "untrusted_data",
            timeout=10,
            what="an untrusted evaluation",
        )
        held = reason_of(scaler)
        hold_window(bolina_ns, scaler, AFTER - 1.0 - (time.monotonic() - began))
        wait_scale(bolina_ns, scaler, FALLBACK, timeout=15)
        raised = time.monotonic() - began
        decision = last_decision(scaler)["decision"]
        assert (decision["reason"], decision["desired"]) == ("fallback", FALLBACK), decision
        assert AFTER - 1.0 <= raised <= AFTER + 3.0, raised
        assert _gauge(scaler, "bolina_scaler_fallback") == 1
        (event,) = _events(bolina_ns, "ScalingFallback")
        assert event["type"] == "Warning"
        assert str(event["message"]).startswith(f"New size: {FALLBACK}; reason: fallback: "), event
        wait_until(lambda: (_status(bolina_ns) or {}).get("fallback") is True, timeout=30, what="status: fallback")
        # Consul answers again; the three new servers register Available.
        ended = proxy.outage(False)
        bolina_ns.wait_running(FALLBACK)
        fleet.sync("passing")
        after = decided_at_latest(scaler, consul, timeout=30)
        trusted = time.monotonic() - ended
        assert after["decision"]["reason"] != "fallback", after
        assert _gauge(scaler, "bolina_scaler_fallback") == 0
        wait_until(lambda: (_status(bolina_ns) or {}).get("fallback") is False, timeout=30, what="status: no fallback")
        hold_window(bolina_ns, scaler, 5, FALLBACK)
        kept = last_decision(scaler)["decision"]
        assert kept["reason"] == "stabilizing", kept
    patched = [(line["before"], line["after"], line["reason"]) for line in scaler.logged("scale.patched")]
    assert patched == [(STEADY, FALLBACK, "fallback")]
    reliability.observed(
        f"held at {STEADY} ({held}); {STEADY}→{FALLBACK} {raised:.2f} s after the outage began (reason "
        "fallback, a ScalingFallback Warning Event, gauge 1, status fallback true); trusted again "
        f"{trusted:.2f} s after Consul answered (incl. 3 servers registering), reason {kept['reason']}: "
        f"{FALLBACK} kept",
        recovery_s=trusted,
    )
