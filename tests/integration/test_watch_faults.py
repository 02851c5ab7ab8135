"""The Deployment watch against a real kube-apiserver that keeps answering it uselessly (issue 20, #2).

The real API server answers ``410 Gone`` only for a resourceVersion compacted away, and never on
demand, so an HTTP proxy in front of it (``harness.ApiServerHttpProxy``: the scaler's kubeconfig
points at it, it talks HTTPS to the API server with the ServiceAccount's own token) rewrites every
watch of the Deployment for 10 s: to what kube-apiserver sends for a resourceVersion too old (an
``ERROR`` event with the 410 ``Expired`` Status, then the end of the stream), or to a stream that
ends at once. Everything else (the scale, the Lease, Events, the GETs) passes through.

Before the fix the loop re-read and re-watched at once, with no log line: ~2,300 requests a second
against the fake API server. Each row says how hard the daemon pressed the API server meanwhile,
that the fleet was still scaled on the Consul change made during the fault, that the problem and
its recovery were each logged once, and how soon a pause annotation made at the end was acted on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Reliability, Scalers, bolina_namespace
from tests.integration.harness import ApiServerHttpProxy, ConsulAgent, KubeCluster, rate_while, wait_until
from tests.integration.test_faults import AFTER_CHANGE, CHANGE, steady, the_change, wait_scale

pytestmark = pytest.mark.integration

FAULT_S = 10.0
HELD = 3
"""The count the pause annotation asks for once the fault ends (``paused-replicas``)."""
FAULTS = {
    "apiserver-watch-gone-10s": (
        "gone",
        "each watch answered 200, one ERROR event with the 410 Expired Status kube-apiserver sends for a "
        "resourceVersion too old, then the end of the stream",
    ),
    "apiserver-watch-closed-10s": ("close", "each watch answered 200 and its stream ended at once, without an event"),
}


@pytest.mark.parametrize("key", list(FAULTS))
@pytest.mark.timeout(300)
def test_deployment_watch_answered_uselessly(
    key: str,
    kube: KubeCluster,
    consul: ConsulAgent,
    rendered_manifests: list[dict[str, Any]],
    tmp_path: Path,
    scalers: Scalers,
    reliability: Reliability,
) -> None:
    how, answer = FAULTS[key]
    reliability.case(
        key,
        fault=f"an HTTP proxy in front of the real kube-apiserver rewrites every watch of the Deployment for "
        f"{FAULT_S:g} s: {answer}; the fleet needs {CHANGE} during it",
        expected="at most ~2 requests/s from the scaler to the API server in all (was ~2,300/s of GET and "
        f"WATCH); {CHANGE} still applied during the fault; pause.read_failing logged once and "
        f"pause.read_recovered once; a paused-replicas={HELD} annotation made as the fault ends is acted on",
    )
    with (
        ApiServerHttpProxy(kube.server, kube.ca_file) as proxy,
        bolina_namespace(kube, rendered_manifests, tmp_path, server=proxy.server) as ns,
    ):
        scaler, fleet = steady(consul, ns, scalers)
        wait_until(lambda: any(w.startswith("WATCH") for _, w in proxy.requests), timeout=30, what="a watch")
        began = proxy.break_watches(how)
        time.sleep(3)
        the_change(fleet)
        during = wait_scale(ns, scaler, AFTER_CHANGE)
        time.sleep(max(0.0, FAULT_S - (time.monotonic() - began)))
        ended = proxy.break_watches(None)
        ns.kube.kubectl("-n", ns.name, "annotate", "deployment", "bolina", f"bolina-scaler/paused-replicas={HELD}")
        held = wait_scale(ns, scaler, HELD, timeout=60)
        scaler.wait_log(lambda line: line["event"] == "pause.read_recovered", timeout=10, what="the recovery")
        total, busiest = rate_while(proxy.times(), began, ended)
        watching, _ = rate_while(proxy.times(deployment=True), began, ended)
        failing = scaler.logged("pause.read_failing")
        recovered = scaler.logged("pause.read_recovered")
        reliability.observed(
            f"{proxy.broken} watches broken in {ended - began:.1f} s; {total:.2f} requests/s to the API server in "
            f"all (at most {busiest} in a second), {watching:.2f}/s of them the Deployment's GETs and watches; "
            f"{CHANGE} applied {during:.2f} s after the change, during the fault; pause.read_failing logged "
            f"{len(failing)}× ({failing[0]['error'][:80] if failing else '-'}), pause.read_recovered "
            f"{len(recovered)}×; paused-replicas={HELD} made as the fault ended: {AFTER_CHANGE}→{HELD} "
            f"{held:.2f} s later",
            recovery_s=held,
        )
        assert total <= 2.0, f"{total:.2f} requests/s to the API server while its watches failed"
        assert busiest <= 6, f"{busiest} requests in one second"
        assert len(failing) == 1, failing
        assert len(recovered) == 1, recovered
        assert ns.scale() == HELD
