"""The vocabulary every other module speaks: server status and one server instance.

Pure data, no I/O. Identifiers get their own ``NewType`` so that a Consul index is never
confused with a replica count, and a Consul service instance id never with a Bolina server id.
"""

from __future__ import annotations

import enum
from typing import NewType

import msgspec

__all__ = [
    "MAX_DEMAND",
    "ConsulIndex",
    "InstanceId",
    "Server",
    "ServerId",
    "ServerKey",
    "Status",
]

MAX_DEMAND = 100.0
"""The largest demand a server may report (100 times its capacity): larger values are ignored."""

ConsulIndex = NewType("ConsulIndex", int)
"""The ``X-Consul-Index`` of a blocking query answer (a Raft index, not a counter)."""

InstanceId = NewType("InstanceId", str)
"""Consul's ``Service.ID`` of one registration: unique per agent, what Consul calls the instance."""

ServerId = NewType("ServerId", str)
"""The Bolina server id a load balancer shows to clients (``Service.Meta.server_id``)."""

ServerKey = tuple[str, InstanceId]
"""What identifies a server in a fleet: its Consul node and its ``Service.ID`` (``Server.key``)."""


class Status(enum.StrEnum):
    """The availability stage a Bolina server reports about itself (seed: "Our Service")."""

    AVAILABLE = "available"
    """Below capacity and ready to accept new clients (Consul check ``passing``)."""
    WARNING = "warning"
    """Near capacity: keeps its clients, takes no new ones (Consul check ``warning``)."""
    CRITICAL = "critical"
    """Over capacity, failing, or in maintenance: takes no traffic (``critical``/``maintenance``).

    How Consul's check statuses fold into one ``Status`` is the source's business
    (``bolina_scaler.source.parse``)."""

    @property
    def rank(self) -> int:
        """Order for a load balancer: lower is a better candidate for a new client."""
        return _RANK[self]


_RANK = {Status.AVAILABLE: 0, Status.WARNING: 1, Status.CRITICAL: 2}


class Server(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One registered Bolina server as Consul reports it, already aggregated.

    ``load`` is the optional share of capacity in use (0.0-1.0) the server publishes (``load=`` in
    its check output, or ``Service.Meta.load``); it steers which pods go first on scale-down.
    ``demand`` is the optional load the server would carry if it had accepted every client offered
    to it (connected clients plus those it turned away, as a share of its capacity: it may exceed
    1), and ``demand_at`` when the server measured it (unix seconds, its own clock): the policy
    sizes the fleet from the demand it can trust (``demand=<share>@<time>`` in the check output).

    A frozen msgspec ``Struct`` rather than a frozen dataclass: the watch builds one per
    registered server on every answer (10,000 at a time), and a frozen dataclass sets each
    field through ``object.__setattr__``, many times slower.
    ``gc=False`` because it holds only strings, numbers and an enum: it can never be part of a
    reference cycle, so the garbage collector need not track (and rescan) 10,000 of them.
    """

    instance_id: InstanceId
    server_id: ServerId
    address: str
    tcp_port: int
    udp_port: int | None
    node: str
    pod: str | None
    status: Status
    load: float | None = None
    demand: float | None = None
    demand_at: float | None = None

    @property
    def key(self) -> ServerKey:
        """What identifies this server in a fleet: its node and its ``Service.ID``.

        Consul keeps a service ID unique per agent only: ten servers registered as ``bolina``
        on ten nodes are ten servers, and must be ten to the mass-change guard.
        """
        return (self.node, self.instance_id)
