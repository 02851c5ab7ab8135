"""Idle cost: what the daemon spends on a fleet where nothing changes.

Does I/O. The daemon runs the shipped config whole (policy included) on a quiet fleet at the
shipped policy's edge (fake Consul, so every request is counted) for a window; the harness
reads the Consul queries and Kubernetes requests it sent and its CPU time. A quiet fleet costs
one unchanged answer per ``consul.wait`` and the Lease renewals (one per ``retry_period``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bench.backends import FakeConsulSide, FakeKubeSide
from bench.proc import log_events, start_daemon
from bench.scenario import REPLICAS, shipped_config, shipped_edge

__all__ = ["IdleResult", "measure_idle"]


@dataclass
class IdleResult:
    size: int
    window: float
    wait: float
    shipped_wait: bool
    consul_queries: int
    kube_requests: int
    cpu_seconds: float


async def measure_idle(
    *, consul: FakeConsulSide, kube: FakeKubeSide, size: int, window: float, wait: float | None, workdir: Path
) -> IdleResult:
    """``wait``: None for the shipped ``consul.wait``; a shorter one for a quick run (the row says so)."""
    available = shipped_edge(size)
    await consul.load(["passing"] * available + ["warning"] * (size - available))
    await kube.reset(REPLICAS)
    config = shipped_config(consul_url=consul.url, kubeconfig=kube.kubeconfig, namespace="bolina")
    if wait is not None:
        config["consul"] = {**config["consul"], "wait": f"{wait:g}s"}
    effective = float(str(config["consul"]["wait"]).removesuffix("s"))
    child = await start_daemon(config, workdir, name=f"idle-{size}")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not log_events(child.log, "decision.evaluated"):
            if loop.time() > deadline or not child.alive():
                raise RuntimeError(f"idle-{size}: no evaluation; see {child.log}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await consul.idle()
        queries, requests, cpu = consul.health_queries() or 0, len(kube.kube.arrivals), child.cpu()
        await asyncio.sleep(window)
        return IdleResult(
            size=size,
            window=window,
            wait=effective,
            shipped_wait=wait is None,
            consul_queries=(consul.health_queries() or 0) - queries,
            kube_requests=len(kube.kube.arrivals) - requests,
            cpu_seconds=child.cpu() - cpu,
        )
    finally:
        await child.stop()
