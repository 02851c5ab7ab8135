"""``python -m bench``: run every suite and print one report (``--quick``: the CI smoke run).

Does I/O: starts the fakes in this process, the daemon and the floor as child processes, and
the real Consul agent when ``.testbin/bin/consul`` exists (full mode). Everything listens on
127.0.0.1 and every suite ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench import proc
from bench.agent import measure_agent
from bench.backends import (
    TESTBIN,
    BenchConsul,
    ConsulSide,
    FakeConsulSide,
    FakeKubeSide,
    KubeSide,
    RealConsulSide,
    consul_binary,
    equivalent_to_add_instance,
)
from bench.churn import measure_churn
from bench.idle import measure_idle
from bench.latency import LatencyRun, measure_latency, merge
from bench.reaction import measure_shipped, measure_under_churn
from bench.realkube import RealKubeSide, kube_binaries
from bench.report import ChurnLatency, Results, render, splice
from bench.work import measure_work
from bolina_scaler.testing.kubernetes import FakeKubernetes

FAKES = "fake Consul + fake Kubernetes"
REAL_CONSUL = "real Consul + fake Kubernetes"
REAL_BOTH = "real Consul + real kube-apiserver"


@dataclass(frozen=True)
class Plan:
    mode: str
    sizes: tuple[int, ...]
    changes: int
    work_size: int
    work_repeat: int
    idle_size: int
    idle_wait: float | None
    """None: the shipped consul.wait."""
    idle_window: float
    churn_sizes: tuple[int, ...]
    churn_rate: float
    churn_duration: float
    real: bool
    blocks: int
    shipped_sizes: tuple[int, ...]
    shipped_samples: int
    churn_latency_sizes: tuple[int, ...]
    churn_latency_rates: tuple[float, ...]
    churn_latency_samples: int


FULL = Plan(
    "full", (10, 1000, 10000), 200, 10000, 5, 10000, None, 120.0, (1000, 10000), 100.0, 300.0, True, 4,
    (1000, 10000), 16, (1000, 10000), (2.0, 10.0, 100.0), 30,
)  # fmt: skip
QUICK = Plan(
    "quick", (10, 100), 20, 1000, 3, 100, 2.0, 5.0, (1000,), 20.0, 5.0, False, 2,
    (100,), 2, (100,), (20.0,), 4,
)  # fmt: skip


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def fakes(workdir: Path) -> AsyncIterator[tuple[FakeConsulSide, FakeKubeSide]]:
    consul = BenchConsul()
    async with consul, FakeKubernetes() as kube:
        yield FakeConsulSide(consul), FakeKubeSide(kube, workdir)


async def latency_suite(
    plan: Plan, workdir: Path, profile: Path | None
) -> tuple[list[LatencyRun], list[str], list[str]]:
    runs: list[LatencyRun] = []
    missing: list[str] = []
    extra: list[str] = []

    async def both(consul: ConsulSide, kube: KubeSide, backend: str) -> None:
        # The floor and the daemon take turns in blocks (floor first, then daemon first, ...):
        # on a shared VM the floor itself drifts by a third between minutes, and a ratio is only
        # fair when both sides sampled the same minutes.
        per_block = max(2, 2 * round(plan.changes / plan.blocks / 2))  # even: server 0 ends where it began
        for size in plan.sizes:
            blocks: dict[str, list[LatencyRun]] = {"floor": [], "daemon": []}
            say(f"latency: {backend}, {size:,} servers, {plan.blocks} blocks of {per_block} changes each side")
            for block in range(plan.blocks):
                for subject in ("floor", "daemon") if block % 2 == 0 else ("daemon", "floor"):
                    last = block == plan.blocks - 1 and subject == "daemon"
                    prof = profile / f"{subject}-{size}.txt" if profile and last and size == max(plan.sizes) else None
                    blocks[subject].append(
                        await measure_latency(
                            consul=consul,
                            kube=kube,
                            backend=backend,
                            size=size,
                            changes=per_block,
                            subject=subject,
                            workdir=workdir,
                            profile=prof,
                            load=block == 0 and subject == "floor",
                        )
                    )
            for subject in ("floor", "daemon"):
                run = merge(blocks[subject])
                say(
                    f"  {subject}: p50 {run.p50 * 1000:.1f} ms, p99 {run.p99 * 1000:.1f} ms, "
                    f"max {run.max * 1000:.1f} ms"
                )
                runs.append(run)

    async with fakes(workdir) as (consul, kube):
        await both(consul, kube, FAKES)
    binary = consul_binary()
    if not plan.real:
        missing.append(
            f"real Consul / kube-apiserver rows: not run ({'quick mode' if plan.mode == 'quick' else '--no-real'})"
        )
    elif binary is None:
        missing.append(f"{REAL_CONSUL}: no Consul binary at {TESTBIN}/consul (tools/testbin/build.sh consul)")
    else:
        async with RealConsulSide(binary) as real:
            extra.append(
                f"real Consul: `{real.version()}` (a single-server agent, `-server -bootstrap-expect=1`; "
                "catalog registrations, one node per server)"
            )
            async with FakeKubernetes() as fake_kube:
                await both(real, FakeKubeSide(fake_kube, workdir), REAL_CONSUL)
            kube_bins = kube_binaries()
            if kube_bins is None:
                missing.append(f"{REAL_BOTH}: no etcd + kube-apiserver in {TESTBIN} (tools/testbin/build.sh)")
            else:
                async with RealKubeSide(*kube_bins, workdir) as real_kube:
                    extra.append(f"real Kubernetes: {real_kube.version()}, PATCH timed by a watch on the Deployment")
                    await both(real, real_kube, REAL_BOTH)
    return runs, missing, extra


async def shipped_suite(
    plan: Plan, workdir: Path, consul: ConsulSide, kube: KubeSide, backend: str
) -> list[LatencyRun]:
    """The shipped config whole: floor and daemon take turns, two blocks each side."""
    runs: list[LatencyRun] = []
    for size in plan.shipped_sizes:
        say(f"shipped config: {backend}, {size:,} servers, {plan.shipped_samples} changes a side")
        blocks: dict[str, list[LatencyRun]] = {"floor": [], "daemon": []}
        for block in range(2):
            for subject in ("floor", "daemon") if block == 0 else ("daemon", "floor"):
                blocks[subject].append(
                    await measure_shipped(
                        consul=consul,
                        kube=kube,
                        backend=backend,
                        size=size,
                        samples=plan.shipped_samples // 2,
                        subject=subject,
                        workdir=workdir,
                        load=block == 0 and subject == "floor",
                    )
                )
        runs += [merge(blocks["floor"]), merge(blocks["daemon"])]
        say(f"  daemon p99 {runs[-1].p99 * 1000:.1f} ms, floor p99 {runs[-2].p99 * 1000:.1f} ms")
    return runs


async def churn_latency_suite(
    plan: Plan, workdir: Path, consul: ConsulSide, kube: KubeSide, backend: str
) -> list[ChurnLatency]:
    """Reaction to a flip while other servers change at each rate: floor and daemon take turns."""
    cells: list[ChurnLatency] = []
    for size in plan.churn_latency_sizes:
        loaded = False
        for rate in plan.churn_latency_rates:
            say(f"reaction under churn: {backend}, {size:,} servers, {rate:g} changes/s")
            blocks: dict[str, list[LatencyRun]] = {"floor": [], "daemon": []}
            agent: list[float] = []
            for block in range(2):
                for subject in ("floor", "daemon") if block == 0 else ("daemon", "floor"):
                    run, cores = await measure_under_churn(
                        consul=consul,
                        kube=kube,
                        backend=backend,
                        size=size,
                        rate=rate,
                        samples=plan.churn_latency_samples // 2,
                        subject=subject,
                        workdir=workdir,
                        load=not loaded,
                    )
                    loaded = True
                    blocks[subject].append(run)
                    if subject == "daemon" and cores is not None:
                        agent.append(cores)
            cell = ChurnLatency(
                rate=rate,
                floor=merge(blocks["floor"]),
                daemon=merge(blocks["daemon"]),
                agent_cores=sum(agent) / len(agent) if agent else None,
            )
            say(f"  daemon p99 {cell.daemon.p99 * 1000:.1f} ms, floor p99 {cell.floor.p99 * 1000:.1f} ms")
            cells.append(cell)
    return cells


async def main_async(plan: Plan, profile: Path | None, skip: set[str]) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="bolina-bench-"))
    started = time.monotonic()
    results = Results()
    try:
        if "latency" not in skip:
            results.runs, results.missing, results.extra = await latency_suite(plan, workdir, profile)
        binary = consul_binary() if plan.real else None
        if {"shipped", "churnlatency", "agent"} - skip:
            if binary is not None:
                async with RealConsulSide(binary) as real, FakeKubernetes() as fake_kube:
                    kube = FakeKubeSide(fake_kube, workdir)
                    if "shipped" not in skip:
                        results.shipped = await shipped_suite(plan, workdir, real, kube, REAL_CONSUL)
                    if "churnlatency" not in skip:
                        results.churn_latency = await churn_latency_suite(plan, workdir, real, kube, REAL_CONSUL)
                    if "agent" not in skip:
                        for size in plan.churn_latency_sizes:
                            say(f"the agent's capacity: {size:,} servers")
                            await real.load(["passing"] * size)
                            results.agent.append(await measure_agent(real, size))
            else:
                async with fakes(workdir) as (consul, kube):
                    if "shipped" not in skip:
                        results.shipped = await shipped_suite(plan, workdir, consul, kube, FAKES)
                    if "churnlatency" not in skip:
                        results.churn_latency = await churn_latency_suite(plan, workdir, consul, kube, FAKES)
        if "work" not in skip:
            say(f"work per update: {plan.work_size:,} servers")
            results.work = measure_work(plan.work_size, plan.work_repeat)
        if "idle" not in skip:
            say(f"idle: {plan.idle_size:,} servers, {plan.idle_window:g} s")
            async with fakes(workdir) as (consul, kube):
                results.idle = await measure_idle(
                    consul=consul,
                    kube=kube,
                    size=plan.idle_size,
                    window=plan.idle_window,
                    wait=plan.idle_wait,
                    workdir=workdir,
                )
        if "churn" not in skip:
            for size in plan.churn_sizes:
                say(f"churn: {size:,} servers, {plan.churn_rate:g}/s for {plan.churn_duration:g} s")
                async with fakes(workdir) as (consul, kube):
                    results.churn.append(
                        await measure_churn(
                            consul=consul,
                            kube=kube,
                            size=size,
                            rate=plan.churn_rate,
                            duration=plan.churn_duration,
                            workdir=workdir,
                        )
                    )
        results.extra.append(f"bench wall time {time.monotonic() - started:.0f} s")
        results.mode = plan.mode + (", daemon with the pre-msgspec parser" if proc.REFERENCE else "")
        report = render(results)
    except BaseException:
        say(f"failed; logs kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small fleets, few changes, fakes only (< 60 s)")
    parser.add_argument("--markdown", type=Path, help="write the results into this file's generated block")
    parser.add_argument("--profile", type=Path, help="run the largest daemon latency run under pyinstrument, into DIR")
    parser.add_argument("--changes", type=int, help="status changes per latency run")
    parser.add_argument("--sizes", help="comma-separated fleet sizes for the latency runs")
    parser.add_argument("--no-real", action="store_true", help="skip the real Consul rows")
    parser.add_argument(
        "--reference-parser", action="store_true", help="measure the daemon with the pre-msgspec parser (before/after)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated suites to skip: latency,shipped,churnlatency,agent,work,idle,churn",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.changes:
        plan = Plan(**{**plan.__dict__, "changes": args.changes})
    if args.sizes:
        plan = Plan(**{**plan.__dict__, "sizes": tuple(int(s) for s in args.sizes.split(","))})
    if args.no_real:
        plan = Plan(**{**plan.__dict__, "real": False})
    if args.reference_parser:
        proc.REFERENCE = True
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if not equivalent_to_add_instance():
        say("BenchConsul.load_fleet no longer matches FakeConsul.add_instance: fix bench/backends.py")
        return 1
    report = asyncio.run(main_async(plan, args.profile, set(filter(None, args.skip.split(",")))))
    print(report)
    if args.markdown is not None:
        document = args.markdown.read_text(encoding="utf-8") if args.markdown.is_file() else "# Performance\n"
        args.markdown.write_text(splice(document, report), encoding="utf-8")
        say(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
