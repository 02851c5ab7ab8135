"""A ``Retry-After`` of 10^9 s from the real kube-apiserver's address (issue 20, #1).

kube-apiserver itself asks for 1 s when it sheds load and never for more than a few seconds, so
an HTTP proxy in front of it (``harness.ApiServerHttpProxy``: the scaler's kubeconfig points at
it) answers ONE request itself: the scale PATCH with ``503`` and ``Retry-After: 1000000000``, or
the Lease renewal (PUT) with ``429`` and the same. Everything else passes through.

Before the fix, that one answer closed the shared gate of ``KubeApi`` for 10^9 s: no request of
any part after it, no scale-up, the Lease's renewTime frozen, every probe green. Each row says how
soon the fleet's change was applied after the hostile answer, that the Lease went on being renewed
and that the daemon stayed leader and ready, on the shipped config (``kubernetes.retry_after_max``
5 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Reliability, Scalers, bolina_namespace
from tests.integration.harness import ApiServerHttpProxy, ConsulAgent, KubeCluster, wait_until
from tests.integration.test_faults import AFTER_CHANGE, CHANGE, steady, the_change, wait_scale

pytestmark = pytest.mark.integration

CAP = 5.0
"""kubernetes.retry_after_max as shipped."""
ASKED = "1000000000"
"""10^9 s as RFC 9110's delay-seconds: a wait the daemon reads, and caps. (``1e9`` itself is no
delay-seconds: it is ignored and the ordinary backoff applies; ``tests/test_server_delays.py``.)"""
FAULTS = {
    "apiserver-scale-patch-retry-after-1e9": ("PATCH", "/scale", 503, "the scale PATCH answered 503"),
    "apiserver-lease-put-retry-after-1e9": ("PUT", "/leases/bolina-scaler", 429, "a Lease renewal answered 429"),
}


def renew_time(kube: KubeCluster, ns: str) -> str | None:
    answer = kube.admin.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/bolina-scaler")
    spec: dict[str, Any] = answer.json().get("spec") or {}
    return spec.get("renewTime")


@pytest.mark.parametrize("key", list(FAULTS))
@pytest.mark.timeout(240)
def test_one_retry_after_of_a_billion_seconds(
    key: str,
    kube: KubeCluster,
    consul: ConsulAgent,
    rendered_manifests: list[dict[str, Any]],
    tmp_path: Path,
    scalers: Scalers,
    reliability: Reliability,
) -> None:
    method, path, status, what = FAULTS[key]
    reliability.case(
        key,
        fault=f"an HTTP proxy in front of the real kube-apiserver: {what} with Retry-After: {ASKED} (10^9 s), "
        f"once; the fleet needs {CHANGE} right after it",
        expected=f"{CHANGE} applied within kubernetes.retry_after_max ({CAP:g} s) plus a few seconds; the Lease "
        "renewed again within that; still leader, /readyz 200 (was: no request at all for the rest of the run)",
    )
    with (
        ApiServerHttpProxy(kube.server, kube.ca_file) as proxy,
        bolina_namespace(kube, rendered_manifests, tmp_path, server=proxy.server) as ns,
    ):
        scaler, fleet = steady(consul, ns, scalers)
        proxy.refuse(method, path, status=status, retry_after=ASKED)
        if method == "PATCH":
            the_change(fleet)  # the patch it causes meets the refusal
        else:
            wait_until(lambda: bool(proxy.refused), timeout=10, what="the refused renewal")
            the_change(fleet)
        took = wait_scale(ns, scaler, AFTER_CHANGE, timeout=60)
        since_refusal = time.monotonic() - proxy.refused[0][0]
        renewed, asked = renew_time(kube, ns.name), time.monotonic()
        wait_until(lambda: renew_time(kube, ns.name) != renewed, timeout=CAP + 5, what="a Lease renewal")
        next_renewal = time.monotonic() - asked
        role = (scaler.decision() or {}).get("role")
        ready = scaler.ready()
        reliability.observed(
            f"{what} with Retry-After {ASKED} ({len(proxy.refused)}×); {CHANGE} applied {took:.2f} s after the change "
            f"({since_refusal:.2f} s after the refusal); the Lease still renewed (the next renewal "
            f"{next_renewal:.1f} s after looking); role {role}, /readyz {'200' if ready else '503'}",
            recovery_s=took,
        )
        assert len(proxy.refused) == 1
        assert took <= CAP + 5, f"{CHANGE} took {took:.1f} s"
        assert role == "leader"
        assert ready
