"""Mirroring a simulated fleet into the Consul fake, so the daemon's real watch can see it (demo)."""

from __future__ import annotations

from typing import Any

import aiohttp

from bolina_scaler.fakes.consul import FakeConsul
from bolina_scaler.model import Status
from bolina_scaler.simulation import SimulatedFleet, Trace
from bolina_scaler.simulation.mirror import ConsulMirror

TRACE = Trace(name="t", duration=3600.0, points=((0.0, 0.5), (600.0, 6.0)))


async def _health(http: aiohttp.ClientSession, consul: FakeConsul) -> list[dict[str, Any]]:
    async with http.get(f"{consul.url}/v1/health/service/bolina") as response:
        data: list[dict[str, Any]] = await response.json()
        return data


class TestMirror:
    async def test_consul_shows_the_simulated_fleet(self):
        """Registrations, stages and removals of the simulated fleet appear in Consul as the convention says."""
        clock = [0.0]
        async with FakeConsul() as consul, aiohttp.ClientSession() as http:
            fleet = SimulatedFleet(TRACE, seed=2, replicas=3)
            mirror = ConsulMirror(http, address=consul.url, clock=lambda: clock[0])
            for t in range(0, 900, 5):
                clock[0] = float(t)
                snapshot = fleet.step(float(t))
                await mirror.sync(fleet)
                entries = await _health(http, consul)
                assert sorted(e["Service"]["ID"] for e in entries) == sorted(s.instance_id for s in snapshot.servers)
                expected = {s.instance_id: s.status for s in snapshot.servers}
                for entry in entries:
                    (check,) = [c for c in entry["Checks"] if c["ServiceID"]]
                    status = {"passing": Status.AVAILABLE, "warning": Status.WARNING}.get(
                        check["Status"], Status.CRITICAL
                    )
                    assert status is expected[entry["Service"]["ID"]]
                    assert entry["Service"]["Meta"]["pod"] == entry["Service"]["ID"]
            assert {s.status for s in fleet.snapshot(900.0).servers} != {Status.AVAILABLE}  # stages did change
            fleet.apply_replicas(1, 900.0)
            await mirror.sync(fleet)
            assert len(await _health(http, consul)) == 1
            await mirror.clear()
            assert await _health(http, consul) == []
