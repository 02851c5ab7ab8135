"""The Lease under a misconfiguration, against the real kube-apiserver (issue 20, item 5).

Two replicas given the same ``leader_election.identity`` (a copied config, a Deployment whose
ConfigMap names one identity for every pod) must still make one leader per Lease. Records one row
of docs/reliability.md through the ``reliability`` fixture; the steady state and "the change" are
test_faults.py's (4 replicas, 2 of 4 Available; one more turns warning: 4 → 5).
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import BolinaNamespace, Reliability, Scalers
from tests.integration.harness import ConsulAgent, KubeCluster, Scaler, wait_until
from tests.integration.test_faults import AFTER_CHANGE, CHANGE, STEADY, scaled, steady, the_change

pytestmark = pytest.mark.integration

SHARED = "bolina-scaler"
WINDOW = 20.0


def role(scaler: Scaler) -> str | None:
    decision = scaler.decision()
    return None if decision is None else str(decision["role"])


def test_two_scalers_given_one_identity(
    kube: KubeCluster, consul: ConsulAgent, bolina_ns: BolinaNamespace, scalers: Scalers, reliability: Reliability
) -> None:
    """Two scalers with the same configured identity on one namespace: exactly one leads and patches.

    Before (main at 3a1000b, this test run against it): both led, in 40 of 40 samples. The second
    took the Lease at once because it named "its" identity; the first's renewal then got 409, its
    re-read found its own name and it took the Lease back, and so on every retry_period. Both
    decided the change (4 → 5) with ``role: leader``; the first patched, and the second found 5
    already written (``scale.changed_outside``) only because the first was quicker: two leaders
    patch whenever they disagree. Now each process holds the Lease as ``<identity>_<8 hex>``: the
    second follows.
    """
    reliability.case(
        "lease-identity-shared",
        fault=f"a second scaler starts with the same leader_election.identity ({SHARED!r}) as the leader "
        f"(same namespace, same Lease), and the fleet changes ({CHANGE}) while both run",
        expected="the Lease names each process uniquely (<identity>_<8 hex>): one leader, one follower "
        f"throughout; only the leader patches, once ({CHANGE})",
    )
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{bolina_ns.name}/leases/bolina-scaler"
    first, fleet = steady(consul, bolina_ns, scalers, leader_election={"identity": SHARED})
    second = scalers.start(first.config)
    wait_until(second.ready, timeout=30, what="the second scaler ready", alive=second.exited)
    wait_until(lambda: role(second) is not None, timeout=30, what="the second scaler's first decision")
    holder = kube.admin.call("GET", lease_path).json()["spec"]["holderIdentity"]

    samples: list[tuple[str | None, str | None, str]] = []
    end = time.monotonic() + WINDOW
    changed_at: float | None = None
    scaled_at: float | None = None
    while time.monotonic() < end:
        lease = kube.admin.call("GET", lease_path).json()["spec"]
        samples.append((role(first), role(second), lease["holderIdentity"]))
        if changed_at is None and time.monotonic() > end - WINDOW / 2:
            the_change(fleet)
            changed_at = time.monotonic()
        if changed_at is not None and scaled_at is None and bolina_ns.scale() == AFTER_CHANGE:
            scaled_at = time.monotonic()
        for scaler in (first, second):
            problem = scaler.exited()
            assert problem is None, problem
        time.sleep(0.5)

    both = [s for s in samples if s[0] == s[1] == "leader"]
    assert not both, f"both scalers led at once in {len(both)} of {len(samples)} samples"
    assert {s[:2] for s in samples} == {("leader", "follower")}, samples
    assert {s[2] for s in samples} == {holder}, "the Lease changed hands"
    assert changed_at is not None
    assert scaled_at is not None, f"not scaled to {AFTER_CHANGE} within {WINDOW / 2:.0f} s of the change"
    assert scaled(first) == [AFTER_CHANGE]
    assert scaled(second) == []
    assert not second.logged("leader.elected")
    assert holder.startswith(f"{SHARED}_"), holder
    identities = {role_of["identity"] for role_of in (first.decision(), second.decision()) if role_of}
    assert len(identities) == 2, identities
    recovery = scaled_at - changed_at
    reliability.observed(
        f"Lease held by {holder} for {WINDOW:.0f} s; {len(samples)} samples: always leader + follower; "
        f"only the leader patched, {STEADY} → {AFTER_CHANGE} {recovery:.2f} s after the change",
        recovery_s=recovery,
    )
