"""The fleet's demand, from what its servers report, and whether the policy may size from it.

Pure: no I/O, no clock reads (the wall-clock time comes in as ``wall_now``). Each server reports
two figures in its check output, both as shares of its own capacity:

* its **load** (``load=``): the clients connected now;
* its **demand** (``demand=<share>@<time>``): the *offered* load, i.e. the clients offered to it
  per second (accepted, redirected or turned away) × the mean session / its capacity: the load
  the current arrival rate keeps connected once it has lasted a session or so. It does not
  saturate when every server is full (turned-away clients count), and it moves the moment the
  arrival rate moves, while the connected load follows a session later.

Summed over the fleet they are servers' worth of clients: ``held`` now, ``offered`` soon. The
estimate is ``held + anticipation × (offered - 1.1 × held)`` when the offered demand is more than
``NOISE_MARGIN`` above the connected load (``anticipation``: how far ahead to provision, since
new pods take a minute to serve and sessions last minutes), else ``held`` (clients leave only
as their sessions end).

The estimate is usable only when it can be trusted as a whole:

* every server that is not Critical reports a demand (a fleet where some servers do not, e.g.
  during a rolling upgrade of the reporters, falls back to the Available share);
* every such demand was measured within ``policy.demand.max_age`` of ``wall_now``, and not
  more than ``FUTURE_TOLERANCE`` after it (a clock that far off is not trusted either);
* at least one server reports.

A Critical server counts its fresh figures (an overloaded server holds clients and turns others
away), but it is capacity only while it carries load: a Critical server with no load, or with no
fresh demand, is *out of service* (failing, or unreadable) and the fleet needs a replacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bolina_scaler.config import DemandConfig
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Status

__all__ = ["FUTURE_TOLERANCE", "NOISE_MARGIN", "DemandEstimate", "estimate_demand"]

FUTURE_TOLERANCE = 60.0
"""A demand stamped more than this many seconds after the scaler's clock is not trusted."""
NOISE_MARGIN = 0.1
"""Offered demand within this share above the connected load is the noise of counting arrivals
over a short window, not a rise: only the excess beyond it is anticipated (measured: without it
the fleet moved by one server up and back every few minutes at a steady rate)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandEstimate:
    """The fleet's demand in servers' worth of clients (1.0 = one server's capacity), or why it cannot be used."""

    held: float = 0.0
    """Sum of the load of the servers counted: the clients connected now."""
    offered: float = 0.0
    """Sum of their demand: the load the current arrival rate keeps connected."""
    total: float = 0.0
    """What to size for: ``held`` plus the anticipated share of ``offered - held`` when it is positive."""
    reporting: int = 0
    """Servers whose figures are counted."""
    out_of_service: int = 0
    """Critical servers that carry no load or report no fresh demand: not capacity."""
    problem: str | None = None
    """Why the estimate is not used (None: it is)."""
    reported: bool = False
    """Whether any server reports demand at all (no note when none does: a fleet without demand)."""

    @property
    def usable(self) -> bool:
        return self.problem is None

    def servers_for(self, load: float, target_load: float) -> int:
        """Serving servers for ``load`` servers' worth at ``target_load`` (at least one)."""
        return max(1, math.ceil(load / target_load - 1e-9))


def estimate_demand(fleet: FleetSnapshot, *, config: DemandConfig, wall_now: float | None) -> DemandEstimate:
    """Add up the fleet's fresh figures; say why they cannot be used when they cannot."""
    if not config.enabled:  # reported=False: no note on every evaluation, the operator chose it
        return DemandEstimate(problem="demand-aware sizing is disabled (policy.demand.enabled)")
    held = offered = 0.0
    reporting = out_of_service = missing = stale = 0
    reported = False
    worst: float | None = None
    for server in fleet.servers:
        critical = server.status is Status.CRITICAL
        demand, at = server.demand, server.demand_at
        if demand is None:
            missing += not critical
            out_of_service += critical
            continue
        reported = True
        age = None if wall_now is None or at is None else wall_now - at
        if age is None or not -FUTURE_TOLERANCE <= age <= config.max_age:
            stale += not critical
            out_of_service += critical
            if age is not None and (worst is None or abs(age) > abs(worst)):
                worst = age
            continue
        load = server.load or 0.0
        held += load
        offered += demand
        reporting += 1
        if critical and not load:
            out_of_service += 1
    total = held + config.anticipation * max(0.0, offered - (1 + NOISE_MARGIN) * held)
    problem = None
    serving = fleet.registered - fleet.critical
    if wall_now is None:
        problem = "no wall-clock time to judge the demand's age"
    elif missing:
        problem = f"{missing} of {serving} non-Critical servers report no demand"
    elif stale:
        measured = "" if worst is None else f"; the worst measured {worst:.0f}s ago"
        problem = (
            f"the demand of {stale} of {serving} non-Critical servers is not fresh (older than max_age "
            f"{config.max_age:g}s or more than {FUTURE_TOLERANCE:g}s ahead of this clock{measured})"
        )
    elif not reporting:
        problem = "no server reports demand"
    return DemandEstimate(
        held=held,
        offered=offered,
        total=total,
        reporting=reporting,
        out_of_service=out_of_service,
        problem=problem,
        reported=reported,
    )
