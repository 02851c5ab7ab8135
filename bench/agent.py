"""What the real Consul agent can take on loopback: health queries back to back, and their CPU.

Does I/O. With the fleet loaded into the real agent, one client sends the daemon's query (a
blocking query whose index is already behind, so it answers at once, from the agent's
streaming view) back to back for a few seconds, then paced at the watch's token-bucket rate
(``consul.rate_per_second``, what a fleet that changes faster than that costs the agent). The
agent's CPU comes from /proc. This is what the shipped token bucket is weighed against.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from bench.backends import SERVICE, RealConsulSide
from bench.scenario import SHIPPED

__all__ = ["AgentResult", "measure_agent"]


@dataclass
class AgentResult:
    size: int
    body_bytes: int
    back_to_back_per_s: float
    cpu_ms_per_query: float
    wall_ms_per_query: float
    paced_rate: float
    paced_achieved: float
    paced_cores: float


async def _run(consul: RealConsulSide, seconds: float, rate: float | None) -> tuple[int, float, float]:
    """(queries, wall seconds, agent CPU seconds)."""
    url = f"{consul.url}/v1/health/service/{SERVICE}"
    params = {"index": "1", "wait": "30s"}
    async with aiohttp.ClientSession() as session:
        cpu, started, queries = consul.cpu() or 0.0, time.monotonic(), 0
        while time.monotonic() - started < seconds:
            sent = time.monotonic()
            async with session.get(url, params=params, headers={"Accept-Encoding": "identity"}) as response:
                await response.read()
            queries += 1
            if rate is not None:
                pause = 1 / rate - (time.monotonic() - sent)
                if pause > 0:
                    await asyncio.sleep(pause)
        return queries, time.monotonic() - started, (consul.cpu() or 0.0) - cpu


async def measure_agent(consul: RealConsulSide, size: int, *, seconds: float = 8.0) -> AgentResult:
    """The fleet of ``size`` must be loaded already."""
    async with aiohttp.ClientSession() as session, session.get(f"{consul.url}/v1/health/service/{SERVICE}") as r:
        body = await r.read()
    queries, wall, cpu = await _run(consul, seconds, None)
    rate = float(SHIPPED["consul"]["rate_per_second"])
    paced, paced_wall, paced_cpu = await _run(consul, seconds, rate)
    return AgentResult(
        size=size,
        body_bytes=len(body),
        back_to_back_per_s=queries / wall,
        cpu_ms_per_query=cpu / queries * 1000,
        wall_ms_per_query=wall / queries * 1000,
        paced_rate=rate,
        paced_achieved=paced / paced_wall,
        paced_cores=paced_cpu / paced_wall,
    )
