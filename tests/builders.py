"""Small builders for fleets, servers and the daemon's state, shared by the policy, daemon, HTTP and simulator tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import InstanceId, Server, ServerId, Status
from bolina_scaler.daemon.state import DaemonState


def server(n: int, status: Status = Status.AVAILABLE, *, load: float | None = None) -> Server:
    return Server(
        instance_id=InstanceId(f"bolina-{n}"),
        server_id=ServerId(str(800000 + n)),
        address=f"10.0.0.{n % 250 + 1}",
        tcp_port=9001,
        udp_port=9002,
        node=f"node-{n}",
        pod=f"bolina-{n}",
        status=status,
        load=load,
    )


def fleet(
    available: int = 0,
    warning: int = 0,
    critical: int = 0,
    *,
    index: int = 10,
    observed_at: float = 0.0,
    problems: tuple[str, ...] = (),
    first: int = 0,
) -> FleetSnapshot:
    """A fleet with servers numbered from ``first``: Available ones first, then Warning, then Critical."""
    statuses = [Status.AVAILABLE] * available + [Status.WARNING] * warning + [Status.CRITICAL] * critical
    servers = [server(first + i, status) for i, status in enumerate(statuses)]
    return FleetSnapshot.of(servers, index=index, observed_at=observed_at, problems=problems)


class StateByHand:
    """A ``DaemonState`` a test fills by hand, field by field, for an app built with
    ``build_app(state=lambda: holder.state, ...)``: each assignment makes the next frozen value."""

    state: DaemonState

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "state", DaemonState(**fields))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.state, name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "state", dataclasses.replace(self.state, **{name: value}))
