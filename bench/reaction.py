"""Reaction latency in two more settings: the shipped config whole, and a fleet that keeps changing.

Does I/O (like ``latency``: the subject in its own process, writes to Consul, PATCHes timed as
they reach the Kubernetes side, all on one clock).

* ``measure_shipped``: the daemon runs the shipped ``config/config.yaml`` whole (only addresses,
  names and bounds changed), on a fleet at the shipped policy's edge. Each sample turns one more
  Available server Critical, which the shipped policy answers with a scale-up; samples are 4 s
  apart, so the shipped step limit (max(4, 100 %) per 15 s) never holds one back.
* ``measure_under_churn``: the latency runs' edge fleet and policy (``scenario.EDGE_POLICY_NOTE``),
  while other servers keep changing (Warning ↔ Critical: the Available share stays) at ``rate``
  writes a second, so the subject is never idle. Only the flips down (Available → Critical, a
  scale-up) are timed. On the edge fleet every evaluation while the server is down would ask for
  one more replica (the requested ones never register: the fleet is far larger than the
  Deployment), and every evaluation while it is up for one fewer; so the scale-up step limit is 1
  per ``CHURN_STEP_PERIOD``, scale-down is off (``scale_down_ratio`` 0.99), and the flips are
  1.1-1.3 s apart: a flip down always finds room, the evaluations in between none.

The floor (``bench.floor``) reacts only to the flipped server's status, so both sides answer the
same writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path

from bench.backends import ConsulSide, KubeSide
from bench.latency import PATCH_TIMEOUT, LatencyRun
from bench.proc import Child, log_events, start_daemon, start_floor
from bench.scenario import REPLICAS, SHIPPED, edge, edge_config, shipped_config, shipped_edge

__all__ = ["measure_shipped", "measure_under_churn"]

SHIPPED_GAP = 4.0
CHURN_STEP_PERIOD = 2.0
CHURN_FLIP_GAP = (1.1, 1.3)


async def _start(
    subject: str,
    config: dict[str, object],
    consul: ConsulSide,
    kube: KubeSide,
    workdir: Path,
    name: str,
    *,
    quiet: float = 1.5,
) -> Child:
    """Start the subject; return once it evaluated (or read) and no PATCH came for ``quiet`` seconds."""
    if subject == "daemon":
        child = await start_daemon(config, workdir, name=name)
    else:
        wait = str(SHIPPED["consul"]["wait"])
        child = await start_floor(
            consul_url=consul.url, scale_url=kube.scale_url, token=kube.token, workdir=workdir, name=name, wait=wait
        )
    deadline = asyncio.get_running_loop().time() + 120

    def started() -> bool:
        if subject == "daemon":
            return bool(log_events(child.log, "decision.evaluated"))
        return "ready" in child.log.read_text(errors="replace")

    while not started():
        if asyncio.get_running_loop().time() > deadline or not child.alive():
            raise RuntimeError(f"{name} did not start; see {child.log}")
        await asyncio.sleep(0.05)
    # A new leader evaluates again, and the edge fleet's first evaluations step down: quiet first.
    with contextlib.suppress(TimeoutError):
        while True:
            await asyncio.wait_for(kube.next_patch(), quiet)
    kube.mark()
    return child


async def _time_flip(consul: ConsulSide, kube: KubeSide, server: str, status: str) -> float | None:
    patched = kube.next_patch()
    written = await consul.set_status(server, status)
    try:
        return await asyncio.wait_for(patched, PATCH_TIMEOUT) - written
    except TimeoutError:
        return None


async def measure_shipped(
    *,
    consul: ConsulSide,
    kube: KubeSide,
    backend: str,
    size: int,
    samples: int,
    subject: str,
    workdir: Path,
    load: bool,
) -> LatencyRun:
    """The shipped config whole: each sample one more Available server turns Critical (a scale-up)."""
    available = shipped_edge(size)
    if load:
        await consul.load(["passing"] * available + ["warning"] * (size - available))
    await kube.reset(REPLICAS)
    config = shipped_config(consul_url=consul.url, kubeconfig=kube.kubeconfig, namespace="bolina")
    name = f"shipped-{subject}-{backend.replace(' ', '_').replace('+', '')}-{size}"
    child = await _start(subject, config, consul, kube, workdir, name)
    run = LatencyRun(backend=backend, size=size, subject=subject)
    try:
        cpu = child.cpu()
        for n in range(samples):
            took = await _time_flip(consul, kube, f"bolina-{n}", "critical")
            if took is None:
                run.missed += 1
            else:
                run.samples.append(took)
                run.up.append(took)
            await asyncio.sleep(SHIPPED_GAP)
        run.writes = samples
        run.cpu_per_change = (child.cpu() - cpu) / samples
        run.peak_rss_kb = child.memory_kb()[1]
        run.patches = len(kube.patch_log())
        run.patches_ok = run.patches == samples
    finally:
        await child.stop()
        for n in range(samples):  # back to the edge for the next run
            await consul.set_status(f"bolina-{n}", "passing")
    return run


async def measure_under_churn(
    *,
    consul: ConsulSide,
    kube: KubeSide,
    backend: str,
    size: int,
    rate: float,
    samples: int,
    subject: str,
    workdir: Path,
    load: bool,
) -> tuple[LatencyRun, float | None]:
    """Flips of server 0 timed while other servers change ``rate`` times a second. Returns the run
    and the Consul agent's CPU over it in cores (None for the fake)."""
    e = edge(size)
    if load:
        await consul.load(["passing"] * e.available + ["warning"] * (size - e.available))
    await kube.reset(REPLICAS)
    config = edge_config(
        e=e,
        consul_url=consul.url,
        kubeconfig=kube.kubeconfig,
        namespace="bolina",
        step_limits=(1, 1, CHURN_STEP_PERIOD),
    )
    config["policy"] = {**config["policy"], "scale_down_ratio": 0.99}
    name = f"churn-{subject}-{backend.replace(' ', '_').replace('+', '')}-{size}-{rate:g}"
    child = await _start(subject, config, consul, kube, workdir, name, quiet=CHURN_STEP_PERIOD + 1.0)
    run = LatencyRun(backend=backend, size=size, subject=subject)
    rng = random.Random(size * 1000 + int(rate))
    warning = list(range(e.available, size))
    critical: set[int] = set()
    stop = asyncio.Event()

    async def churn() -> None:
        started, n = time.monotonic(), 0
        while not stop.is_set():
            n += 1
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            server = rng.choice(warning)
            status = "warning" if server in critical else "critical"
            critical.symmetric_difference_update({server})
            await consul.set_status(f"bolina-{server}", status)

    churner = asyncio.create_task(churn(), name="churn")
    try:
        await asyncio.sleep(1.0)
        cpu, agent = child.cpu(), consul.cpu()
        begun = time.monotonic()
        for _ in range(samples):
            took = await _time_flip(consul, kube, "bolina-0", "critical")
            if took is None:
                run.missed += 1
                if run.missed >= 3:
                    break
            else:
                run.samples.append(took)
                run.up.append(took)
            run.writes += 1
            await asyncio.sleep(rng.uniform(*CHURN_FLIP_GAP))
            await consul.set_status("bolina-0", "passing")  # not timed (the floor patches, the daemon does not)
            await asyncio.sleep(rng.uniform(*CHURN_FLIP_GAP))
        elapsed = time.monotonic() - begun
        run.cpu_per_change = (child.cpu() - cpu) / run.writes
        run.peak_rss_kb = child.memory_kb()[1]
        agent_cores = None if agent is None else ((consul.cpu() or 0.0) - agent) / elapsed
        log = kube.patch_log()
        run.patches = len(log)
        # The daemon patches once per flip down; the floor on every flip, down and up.
        run.patches_ok = len(log) == run.writes * (1 if subject == "daemon" else 2)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await churner
        # Back to the edge: the churned servers Warning again, server 0 where it began (an even number of flips).
        for server in sorted(critical):
            await consul.set_status(f"bolina-{server}", "warning")
        await consul.set_status("bolina-0", "passing")
        await child.stop()
    if not run.samples:
        raise RuntimeError(f"{name}: no PATCH arrived; see {child.log}")
    return run, agent_cores
