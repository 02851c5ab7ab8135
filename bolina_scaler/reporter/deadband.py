"""When a server's load and demand are worth a write to Consul, and how they are written.

Pure: no I/O, no clock reads (time is passed in). Used by the ``report`` sidecar
(``reporter.reporter``) and by the fleet simulator, so the simulated servers write exactly as
often as real ones would.

A Consul client agent writes a check to the catalog at once when its *status* changes; a change
of its *output* alone waits for ``check_update_interval`` (``manifests/base/consul/client.json``;
measured in docs/policy.md). Every catalog write is a Raft write on the Consul servers and a new
index for every blocking query on the service. So the reporter sends a new output only when it
is news:

* the status changed (always written at once, whatever the output);
* the load moved by at least ``load`` from the value last written (an absolute share);
* the demand moved by at least ``demand`` × the value last written (relative, never less than
  ``load`` in absolute terms: a small demand does not write on every client);
* ``refresh`` has passed since the last write: the demand carries the time it was measured,
  and the scaler ignores demand older than its ``policy.demand.max_age``, so an unchanged value
  must be re-stamped before it expires.

Between two writes the reporter still heartbeats the TTL check with the *same* output, which the
agent drops as idempotent (no catalog write).

The output line starts with ``load=<share>`` and ``demand=<share>@<unix seconds>`` (the scaler's
``source.parse`` reads them), then the stage and why::

    load=0.55 demand=0.62@1712345678 available: bolina_connections_ratio=0.55 ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bolina_scaler.core.model import MAX_DEMAND, Status

__all__ = ["Deadband", "Published", "format_output", "news", "quantize_demand"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadband:
    """How much the load or demand must move, or how long since the last write, before a write."""

    load: float = 0.05
    """Absolute change of the load (share of capacity) that is news: one 5 % step."""
    demand: float = 0.25
    """Relative change of the demand that is news (never less than ``load`` in absolute terms)."""
    refresh: float = 300.0
    """Seconds after which an unchanged reading is written again, re-stamping the demand."""

    def __post_init__(self) -> None:
        for name in ("load", "demand", "refresh"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """What was last written to the agent: the check's status and the figures of its output."""

    status: Status
    load: float | None
    demand: float | None
    at: float
    """When it was written (the reporter's wall clock, unix seconds): the demand's time stamp."""


def quantize_demand(value: float) -> float:
    """A demand (share of one server's capacity, may exceed 1) clipped to 0..MAX_DEMAND, two decimals."""
    return round(min(MAX_DEMAND, max(0.0, value)), 2)


def news(
    last: Published | None,
    *,
    status: Status,
    load: float | None,
    demand: float | None,
    now: float,
    deadband: Deadband,
) -> str | None:
    """Why this reading must be written (``first``, ``status``, ``load``, ``demand``, ``refresh``), or None."""
    if last is None:
        return "first"
    if status is not last.status:
        return "status"
    if (load is None) != (last.load is None) or (
        load is not None and last.load is not None and abs(load - last.load) >= deadband.load - 1e-9
    ):
        return "load"
    if (demand is None) != (last.demand is None):
        return "demand"
    if demand is not None and last.demand is not None:
        band = max(deadband.demand * last.demand, deadband.load)
        if abs(demand - last.demand) >= band - 1e-9:
            return "demand"
    if now - last.at >= deadband.refresh:
        return "refresh"
    return None


def format_output(published: Published, description: str, *, limit: int = 200) -> str:
    """The check's output line: ``load=``, ``demand=<value>@<time>`` (when known), then the description."""
    parts = []
    if published.load is not None:
        parts.append(f"load={published.load:.2f}")
    if published.demand is not None:
        parts.append(f"demand={published.demand:.2f}@{math.floor(published.at)}")
    parts.append(description)
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
