"""Reaction latency: from a status write in Consul to the scale PATCH reaching the API server.

Does I/O. One run = one fleet size, one backend pair, one subject (the daemon or the floor) in
its own process. The harness flips one server between Available and Critical; by the scenario's
design (``bench.scenario``) every flip must produce exactly one PATCH. Before each flip the
harness waits until the subject's blocking query is parked again, so every sample starts from
the same state, then it times write → PATCH arrival on one clock (``time.perf_counter``).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.backends import ConsulSide, KubeSide
from bench.proc import Child, start_daemon, start_floor
from bench.scenario import REPLICAS, edge, edge_config

__all__ = ["LatencyRun", "measure_latency", "merge", "percentile"]

PATCH_TIMEOUT = 30.0
GAP = 0.03
"""Pause after each sample: the token bucket (10/s, burst 10) refills faster than samples come."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class LatencyRun:
    backend: str
    size: int
    subject: str
    samples: list[float] = field(default_factory=list)
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    missed: int = 0
    cpu_per_change: float = 0.0
    peak_rss_kb: int = 0
    patches_ok: bool = True
    patches: int = 0
    writes: int = 0

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def max(self) -> float:
        return max(self.samples)


async def measure_latency(
    *,
    consul: ConsulSide,
    kube: KubeSide,
    backend: str,
    size: int,
    changes: int,
    subject: str,
    workdir: Path,
    profile: Path | None = None,
    load: bool = True,
) -> LatencyRun:
    """One subject's run; ``load=False`` keeps the fleet of the last run (same size, an even
    number of flips since, so server 0 is back where it started)."""
    e = edge(size)
    if load:
        await consul.load(["passing"] * e.available + ["warning"] * (size - e.available))
    await kube.reset(REPLICAS)
    name = f"{subject}-{backend.replace(' ', '_').replace('+', '')}-{size}"
    child: Child
    if subject == "daemon":
        first = kube.next_patch()
        config = edge_config(e=e, consul_url=consul.url, kubeconfig=kube.kubeconfig, namespace="bolina")
        child = await start_daemon(config, workdir, name=name, profile=profile)
        await asyncio.wait_for(first, 120)  # the first evaluation's scale-down, 10 → 9
        # Gaining the lease re-evaluates (one more step down): wait until the patches stop.
        while True:
            try:
                await asyncio.wait_for(kube.next_patch(), 1.0)
            except TimeoutError:
                break
        kube.mark()
    else:
        child = await start_floor(
            consul_url=consul.url, scale_url=kube.scale_url, token=kube.token, workdir=workdir, name=name
        )
        deadline = asyncio.get_running_loop().time() + 120
        while "ready" not in child.log.read_text():
            if asyncio.get_running_loop().time() > deadline or not child.alive():
                raise RuntimeError(f"{name} did not start; see {child.log}")
            await asyncio.sleep(0.05)
    run = LatencyRun(backend=backend, size=size, subject=subject)
    try:
        await asyncio.sleep(0.2)
        await consul.idle()
        cpu_before = child.cpu()
        for i in range(changes):
            if not child.alive():
                raise RuntimeError(f"{name} exited; see {child.log}")
            patched = kube.next_patch()
            written = await consul.set_status("bolina-0", "critical" if i % 2 == 0 else "passing")
            try:
                arrived = await asyncio.wait_for(patched, PATCH_TIMEOUT)
            except TimeoutError:
                run.missed += 1
                if run.missed >= 3:
                    break
                continue
            run.samples.append(arrived - written)
            (run.up if i % 2 == 0 else run.down).append(arrived - written)
            # A late second patch for this write must not stop the next write's clock: wait for quiet.
            quiet = min(0.5, max(0.05, arrived - written))
            while True:
                try:
                    await asyncio.wait_for(kube.next_patch(), quiet)
                except TimeoutError:
                    break
            await consul.idle()
            await asyncio.sleep(GAP)
        run.cpu_per_change = (child.cpu() - cpu_before) / max(1, changes)
        run.peak_rss_kb = child.memory_kb()[1]
        log = kube.patch_log()
        run.patches, run.writes = len(log), i + 1
        alternating = all(a != b for a, b in itertools.pairwise(log))
        run.patches_ok = len(log) == run.writes and alternating
    finally:
        await child.stop()
    if not run.samples:
        raise RuntimeError(f"{name}: no PATCH arrived; see {child.log}")
    return run


def merge(blocks: list[LatencyRun]) -> LatencyRun:
    """One subject's blocks of an interleaved measurement, as one run."""
    first = blocks[0]
    writes = sum(b.writes for b in blocks)
    return LatencyRun(
        backend=first.backend,
        size=first.size,
        subject=first.subject,
        samples=[s for b in blocks for s in b.samples],
        up=[s for b in blocks for s in b.up],
        down=[s for b in blocks for s in b.down],
        missed=sum(b.missed for b in blocks),
        cpu_per_change=sum(b.cpu_per_change * b.writes for b in blocks) / max(1, writes),
        peak_rss_kb=max(b.peak_rss_kb for b in blocks),
        patches_ok=all(b.patches_ok for b in blocks),
        patches=sum(b.patches for b in blocks),
        writes=writes,
    )
