"""Idle cost: what the daemon spends on a fleet where nothing changes.

Does I/O. The daemon watches a quiet fleet (fake Consul, so every request is counted) for a
window; the harness reads the Consul queries and Kubernetes requests it sent and its CPU time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bench.backends import FakeConsulSide, FakeKubeSide
from bench.proc import start_daemon
from bench.scenario import REPLICAS, daemon_config, edge

__all__ = ["IdleResult", "measure_idle"]


@dataclass
class IdleResult:
    size: int
    window: float
    wait: float
    consul_queries: int
    kube_requests: int
    cpu_seconds: float


async def measure_idle(
    *, consul: FakeConsulSide, kube: FakeKubeSide, size: int, window: float, wait: float, workdir: Path
) -> IdleResult:
    e = edge(size)
    await consul.load(["passing"] * e.available + ["warning"] * (size - e.available))
    await kube.reset(REPLICAS)
    first = kube.next_patch()
    config = daemon_config(e=e, consul_url=consul.url, kubeconfig=kube.kubeconfig, namespace="bolina", wait=wait)
    child = await start_daemon(config, workdir, name=f"idle-{size}")
    try:
        await asyncio.wait_for(first, 120)
        await asyncio.sleep(0.5)
        await consul.idle()
        queries, requests, cpu = consul.health_queries() or 0, len(kube.kube.arrivals), child.cpu()
        await asyncio.sleep(window)
        return IdleResult(
            size=size,
            window=window,
            wait=wait,
            consul_queries=(consul.health_queries() or 0) - queries,
            kube_requests=len(kube.kube.arrivals) - requests,
            cpu_seconds=child.cpu() - cpu,
        )
    finally:
        await child.stop()
