"""Outages of a given length, with the shipped config: Consul down 6 s, 60 s and 5 min; the API
server down 6 s and 60 s. Each row of docs/reliability.md says how hard the daemon pressed the
failing server (requests per second while it failed) and how soon it saw the first good answer
once the server was back.

The lanes of one kind run side by side (each with its own Consul agent, namespace, proxy and
scaler), so the 5-minute outage costs the suite 5 minutes, not 6. The steady state and "the
change" are those of test_faults.py (4 replicas, 2 of 4 Available; the change asks for 4 → 5).

* Consul: a proxy in front of the lane's agent answers every health query 500 "No cluster
  leader" (what an agent whose servers lost their leader answers), including the blocking query
  parked when the outage began; it counts the queries, and notes the first 200 after it heals.
* API server: a TCP proxy in front of the real kube-apiserver (TLS passes through) cuts the
  lane's connections and resets every new one; it counts the connection attempts (with the
  server down every request is a new connection). "The change" is made during the outage, so a
  decision is pending when the server comes back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import BolinaNamespace, Reliability, Scalers, bolina_namespace
from tests.integration.harness import (
    ApiServerProxy,
    ConsulAgent,
    ConsulProxy,
    Fleet,
    KubeCluster,
    Scaler,
    decided_at_latest,
    rate_while,
)
from tests.integration.test_faults import AFTER_CHANGE, CHANGE, STEADY, hold_window, steady, the_change, wait_scale

pytestmark = pytest.mark.integration

CONSUL_OUTAGES = {"consul-outage-6s": 6.0, "consul-outage-60s": 60.0, "consul-outage-5min": 300.0}
APISERVER_OUTAGES = {"apiserver-outage-6s": 6.0, "apiserver-outage-60s": 60.0}


@dataclass
class Lane:
    key: str
    seconds: float
    consul: ConsulAgent
    ns: BolinaNamespace
    scaler: Scaler
    fleet: Fleet


def _logged_after(scaler: Scaler, event: str, wall: float) -> float | None:
    """Seconds from ``wall`` (``time.time()``) to the first ``event`` line logged after it."""
    for line in scaler.lines():
        if line["event"] == event:
            at = datetime.fromisoformat(str(line["timestamp"])).timestamp()
            if at >= wall:
                return at - wall
    return None


@contextlib.contextmanager
def _lanes(
    outages: dict[str, float],
    kube: KubeCluster,
    rendered: list[dict[str, Any]],
    tmp_path: Path,
    scalers: Scalers,
    proxy_for: Callable[[str, ConsulAgent], Any],
) -> Iterator[list[tuple[Lane, Any]]]:
    """One lane per outage: its own Consul agent, proxy, namespace and scaler, in the steady state."""
    with contextlib.ExitStack() as stack:
        lanes = []
        for key, seconds in outages.items():
            consul = ConsulAgent(tmp_path / key)
            consul.start()
            stack.callback(consul.stop)
            proxy = stack.enter_context(proxy_for(key, consul))
            server = proxy.server if isinstance(proxy, ApiServerProxy) else None
            ns = stack.enter_context(bolina_namespace(kube, rendered, tmp_path, server=server))
            address = proxy.address if isinstance(proxy, ConsulProxy) else None
            scaler, fleet = steady(consul, ns, scalers, address=address)
            lanes.append((Lane(key, seconds, consul, ns, scaler, fleet), proxy))
        yield lanes


@pytest.mark.timeout(900)
def test_consul_outages(
    kube: KubeCluster,
    rendered_manifests: list[dict[str, Any]],
    tmp_path: Path,
    scalers: Scalers,
    reliability: Reliability,
) -> None:
    for key, seconds in CONSUL_OUTAGES.items():
        reliability.case(
            key,
            fault=f"the scaler's Consul agent answers every health query 500 'No cluster leader' for {seconds:g} s "
            "(a proxy; the blocking query parked at the start fails at once too)",
            expected="hold at 4 (no patch), the daemon stays up; at most 2 queries/s to the failing agent; the "
            f"first good answer within ~1 s after the agent answers again, whatever the outage's length; then {CHANGE}",
        )

    def proxy_for(key: str, consul: ConsulAgent) -> ConsulProxy:
        return ConsulProxy(consul.address)

    with _lanes(CONSUL_OUTAGES, kube, rendered_manifests, tmp_path, scalers, proxy_for) as lanes:
        began = {lane.key: proxy.outage(True) for lane, proxy in lanes}

        def run(lane: Lane, proxy: ConsulProxy) -> None:
            hold_window(lane.ns, lane.scaler, lane.seconds - (time.monotonic() - began[lane.key]))
            ended = proxy.outage(False)
            mean, busiest = rate_while(proxy.faults.health_requests, began[lane.key] + 1.0, ended)
            decision = decided_at_latest(lane.scaler, lane.consul, timeout=30)
            trusted = time.monotonic() - ended
            assert proxy.faults.good_after_outage is not None
            first_good = proxy.faults.good_after_outage - ended
            assert lane.ns.scale() == STEADY
            the_change(lane.fleet)
            reaction = wait_scale(lane.ns, lane.scaler, AFTER_CHANGE)
            reliability.observed(
                f"held at {STEADY}; {mean:.2f} queries/s to the failing agent (at most {busiest} in a second); "
                f"first good answer {first_good:.2f} s after the agent answered again, trusted evaluation at "
                f"index {decision['decision']['inputs']['consul_index']} {trusted:.2f} s after; next change "
                f"{CHANGE} in {reaction:.2f} s",
                recovery_s=first_good,
                key=lane.key,
            )
            assert busiest <= 2, f"{busiest} queries in one second to a failing agent"
            assert first_good <= 1.5, f"first good answer {first_good:.2f} s after the agent was back"

        with ThreadPoolExecutor(len(lanes)) as pool:
            for future in [pool.submit(run, lane, proxy) for lane, proxy in lanes]:
                future.result()


@pytest.mark.timeout(600)
def test_apiserver_outages(
    kube: KubeCluster,
    rendered_manifests: list[dict[str, Any]],
    tmp_path: Path,
    scalers: Scalers,
    reliability: Reliability,
) -> None:
    for key, seconds in APISERVER_OUTAGES.items():
        reliability.case(
            key,
            fault=f"the API server is unreachable for the scaler for {seconds:g} s (a TCP proxy cuts its "
            f"connections and resets new ones); the fleet needs {CHANGE} meanwhile",
            expected="no patch while down, the daemon stays up; about 2 requests/s at most to the failing server "
            "(scale probes, Lease renewals, Events together); the first good answer within ~1 s after it is "
            f"back; the pending {CHANGE} applied exactly once (a leader that could not renew for "
            "renew_deadline takes the Lease again first)",
        )
    api_port = int(kube.server.rsplit(":", 1)[1])

    def proxy_for(key: str, consul: ConsulAgent) -> ApiServerProxy:
        return ApiServerProxy(api_port)

    with _lanes(APISERVER_OUTAGES, kube, rendered_manifests, tmp_path, scalers, proxy_for) as lanes:
        began = {lane.key: proxy.down(True) for lane, proxy in lanes}
        for lane, _ in lanes:
            the_change(lane.fleet)

        def run(lane: Lane, proxy: ApiServerProxy) -> None:
            hold_window(lane.ns, lane.scaler, lane.seconds - (time.monotonic() - began[lane.key]))
            wall, ended = time.time(), proxy.down(False)
            mean, busiest = rate_while(proxy.attempts, began[lane.key] + 1.0, ended)
            patched = wait_scale(lane.ns, lane.scaler, AFTER_CHANGE, timeout=60)
            # The first request that worked after the outage: a recovery line, or the patch itself
            # (a patch retried inside its call and answered logs no failure, so no recovery either).
            good = [
                t
                for t in (
                    _logged_after(lane.scaler, "kubernetes.recovered", wall),
                    _logged_after(lane.scaler, "leader.lease_recovered", wall),
                    _logged_after(lane.scaler, "scale.patched", wall),
                )
                if t is not None
            ]
            assert good, "no request logged as working again after the outage"
            first_good = min(good)
            led = _logged_after(lane.scaler, "leader.elected", wall)
            hold_window(lane.ns, lane.scaler, 2, AFTER_CHANGE)
            assert [int(line["after"]) for line in lane.scaler.logged("scale.patched")] == [AFTER_CHANGE]
            leading = "still leading" if led is None else f"leader again {led:.2f} s after"
            reliability.observed(
                f"held at {STEADY}; {mean:.2f} requests/s to the failing API server (at most {busiest} in a "
                f"second); first good answer {first_good:.2f} s after it was back, {leading}; {CHANGE} applied "
                f"once, {patched:.2f} s after",
                recovery_s=first_good,
                key=lane.key,
            )
            assert first_good <= 1.5, f"first good answer {first_good:.2f} s after the API server was back"

        with ThreadPoolExecutor(len(lanes)) as pool:
            for future in [pool.submit(run, lane, proxy) for lane, proxy in lanes]:
                future.result()
