"""Mirror a ``SimulatedFleet`` into a Consul agent (the in-process fake, or a dev agent) for the demo.

Does I/O: HTTP to the agent, through the same ``AgentClient`` and registration convention as the
``report`` sidecar, so the daemon's real watch sees simulated servers exactly as it would see real
ones. Call ``await mirror.sync(fleet)`` after each ``fleet.step(now)``: it registers servers that
appeared, deregisters those that are gone and updates the TTL check of those whose stage changed
(or whose heartbeat is due).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from bolina_scaler.model import Status
from bolina_scaler.reporting import AgentClient, ReporterSettings, check_status, registration
from bolina_scaler.simulation.fleet import SimServer, SimulatedFleet

__all__ = ["ConsulMirror"]


@dataclass(slots=True)
class _Mirrored:
    status: Status
    updated: float


class ConsulMirror:
    """Keeps a Consul agent's registrations equal to a simulated fleet's registered servers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        address: str,
        service: str = "bolina",
        token: str | None = None,
        ttl: float = 600.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.address = address
        self.service = service
        self.ttl = ttl
        self._agent = AgentClient(session, address=address, token=token, timeout=10.0)
        self._clock = clock
        self._mirrored: dict[str, _Mirrored] = {}

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _settings(self, server: SimServer) -> ReporterSettings:
        s = server.to_server()
        return ReporterSettings(
            consul_address=self.address,
            token=None,
            service=self.service,
            instance_id=s.instance_id,
            server_id=s.server_id,
            address=s.address,
            tcp_port=s.tcp_port,
            udp_port=s.udp_port,
            pod=server.pod,
            metrics_url="http://127.0.0.1/simulated",
            ttl=self.ttl,
        )

    async def sync(self, fleet: SimulatedFleet) -> int:
        """Bring the agent in line with ``fleet``; returns the number of agent requests made."""
        now = self._now()
        requests = 0
        live = {server.pod: server for server in fleet.servers if server.registered}
        for pod in [pod for pod in self._mirrored if pod not in live]:
            await self._agent.deregister(pod)
            del self._mirrored[pod]
            requests += 1
        for pod, server in live.items():
            known = self._mirrored.get(pod)
            output = f"{server.status.value}: simulated load {server.reported_load:.2f}"
            if known is None:
                settings = self._settings(server)
                await self._agent.register(registration(settings, status=server.status, load=server.reported_load))
            elif known.status is not server.status or now - known.updated >= self.ttl / 2:
                await self._agent.update_check(f"service:{pod}", status=check_status(server.status), output=output)
            else:
                continue
            self._mirrored[pod] = _Mirrored(server.status, now)
            requests += 1
        return requests

    async def clear(self) -> None:
        """Deregister everything this mirror registered."""
        for pod in list(self._mirrored):
            await self._agent.deregister(pod)
            del self._mirrored[pod]
