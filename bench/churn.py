"""Churn: a steady stream of status writes at a large fleet; the lag must not grow.

Does I/O. The harness writes ``rate`` status changes per second for ``duration`` seconds to the
fake Consul, mean-reverting around the fleet's edge (a Critical server recovers when the share is
below the edge, an Available one fails when it is above), so the decision keeps switching between
up and down and the step limits are exercised. Afterwards, from the daemon's own log lines:

* lag of a write = time until the first evaluation whose Consul index covers it (bursts coalesce:
  one evaluation covers every write before its answer);
* every ``scale.patched`` line is checked against the step limits over a sliding period;
* the daemon's CPU time over the run, as a share of one core.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.backends import FakeConsulSide, FakeKubeSide
from bench.latency import percentile
from bench.proc import log_events, start_daemon
from bench.scenario import REPLICAS, edge, edge_config

__all__ = ["ChurnResult", "measure_churn"]

STEP_UP, STEP_DOWN, STEP_PERIOD = 4, 2, 5.0


@dataclass
class ChurnResult:
    size: int
    rate: float
    duration: float
    writes: int
    evaluations: int
    patches: int
    lag_first: tuple[float, float]  # p50, p99 over the first third of the writes
    lag_last: tuple[float, float]  # ... and over the last third
    lag_max: float
    uncovered: int  # writes no evaluation covered by the end
    step_violations: int
    cpu_cores: float


def _ts(entry: dict[str, object]) -> float:
    return datetime.fromisoformat(str(entry["timestamp"])).timestamp()


async def measure_churn(
    *, consul: FakeConsulSide, kube: FakeKubeSide, size: int, rate: float, duration: float, workdir: Path
) -> ChurnResult:
    e = edge(size)
    statuses = ["passing"] * e.available + ["warning"] * (size - e.available)
    await consul.load(statuses)
    await kube.reset(REPLICAS)
    first = kube.next_patch()
    config = edge_config(
        e=e,
        consul_url=consul.url,
        kubeconfig=kube.kubeconfig,
        namespace="bolina",
        step_limits=(STEP_UP, STEP_DOWN, STEP_PERIOD),
    )
    child = await start_daemon(config, workdir, name=f"churn-{size}")
    rng = random.Random(6)
    available = list(range(e.available))
    critical: list[int] = []
    writes: list[tuple[int, float]] = []  # (service index after the write, wall time)
    try:
        await asyncio.wait_for(first, 120)
        await asyncio.sleep(0.5)
        await consul.idle()
        cpu = child.cpu()
        started = time.monotonic()
        for n in range(int(rate * duration)):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(available) >= e.available or not critical:
                pick = available.pop(rng.randrange(len(available)))
                critical.append(pick)
                status = "critical"
            else:
                pick = critical.pop(rng.randrange(len(critical)))
                available.append(pick)
                status = "passing"
            await consul.set_status(f"bolina-{pick}", status)
            writes.append((consul.consul.service_index("bolina"), time.time()))
        elapsed = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the last writes be evaluated
        cpu_cores = (child.cpu() - cpu) / elapsed
    finally:
        await child.stop()

    evaluations = sorted((int(str(ev["consul_index"])), _ts(ev)) for ev in log_events(child.log, "decision.evaluated"))
    # For each write: the earliest evaluation at an index >= the write's index (suffix minimum of time).
    indexes = [i for i, _ in evaluations]
    earliest = [t for _, t in evaluations]
    for j in range(len(earliest) - 2, -1, -1):
        earliest[j] = min(earliest[j], earliest[j + 1])
    lags, uncovered = [], 0
    for index, written in writes:
        at = bisect.bisect_left(indexes, index)
        if at == len(indexes):
            uncovered += 1
            continue
        lags.append(max(0.0, earliest[at] - written))
    third = max(1, len(lags) // 3)
    head, tail = lags[:third], lags[-third:]
    scaled = [(_ts(ev), int(str(ev["before"])), int(str(ev["after"]))) for ev in log_events(child.log, "scale.patched")]
    return ChurnResult(
        size=size,
        rate=rate,
        duration=duration,
        writes=len(writes),
        evaluations=len(evaluations),
        patches=len(scaled),
        lag_first=(percentile(head, 50), percentile(head, 99)),
        lag_last=(percentile(tail, 50), percentile(tail, 99)),
        lag_max=max(lags),
        uncovered=uncovered,
        step_violations=_step_violations(scaled),
        cpu_cores=cpu_cores,
    )


def _step_violations(scaled: list[tuple[float, int, int]]) -> int:
    """Patches after which the replicas moved in one direction within a period exceed the limit.

    Timestamps come from the log (taken after the patch was acknowledged), so a tiny tolerance
    is given at the window's edge.
    """
    violations = 0
    for at, _, _ in scaled:
        window = [(b, a) for t, b, a in scaled if at - STEP_PERIOD + 0.05 < t <= at]
        up = sum(a - b for b, a in window if a > b)
        down = sum(b - a for b, a in window if a < b)
        violations += up > STEP_UP or down > STEP_DOWN
    return violations
