"""One simulated pod and the Bolina server in it, and how the scaler's Consul watch reads it.

Pure data: a mutable record that ``simulated_fleet.SimulatedFleet`` advances (its stage, what its
reporter and its Consul agent wrote, its clients); ``to_server`` is the ``Server`` the daemon's
watch would read from the catalog.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from bolina_scaler.core.model import InstanceId, Server, ServerId, Status
from bolina_scaler.reporter.availability import Stage
from bolina_scaler.reporter.deadband import Published

__all__ = ["SimServer"]


@dataclass(slots=True, eq=False)
class SimServer:
    """One pod and the Bolina server in it."""

    n: int
    created_at: float
    ready_at: float
    registered: bool = False
    failing: bool = False
    stage: Stage = field(default_factory=lambda: Stage(Status.AVAILABLE, 0.0))
    next_report: float = 0.0
    published: Published | None = None
    """What the reporter last wrote to its Consul agent (status and output)."""
    catalog: Published | None = None
    """What the Consul servers hold for this server's check: what the scaler sees."""
    sync_at: float | None = None
    """When the agent writes a deferred output-only change to the catalog (``check_update_interval``)."""
    offered: deque[float] = field(default_factory=deque)
    """When new clients were offered to this server, accepted or turned away (within ``demand_window``)."""
    clients: dict[int, float] = field(default_factory=dict)
    """Connected clients: client id → when its session ends."""
    count: int = 0
    """``len(clients)``, kept as a field so the load balancer can sort with a C-level key."""

    @property
    def pod(self) -> str:
        return f"bolina-sim-{self.n}"

    @property
    def server_id(self) -> str:
        return str(800000 + self.n)

    @property
    def status(self) -> Status:
        return self.stage.status

    @property
    def reported_load(self) -> float:
        """The load the scaler sees (as last written to the catalog)."""
        return self.catalog.load if self.catalog is not None and self.catalog.load is not None else 0.0

    def to_server(self) -> Server:
        """As the daemon's watch would read it from the Consul catalog."""
        catalog = self.catalog or Published(status=self.stage.status, load=None, demand=None, at=self.created_at)
        return Server(
            instance_id=InstanceId(self.pod),
            server_id=ServerId(self.server_id),
            address=f"10.{self.n // 250 % 250}.{self.n % 250}.1",
            tcp_port=9001,
            udp_port=9002,
            node=f"node-{self.n}",
            pod=self.pod,
            status=catalog.status,
            load=catalog.load,
            demand=catalog.demand,
            demand_at=None if catalog.demand is None else math.floor(catalog.at),
        )
