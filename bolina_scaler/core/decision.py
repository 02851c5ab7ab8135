"""What one evaluation decided, and why: a value, never an action.

Pure data, no I/O. Like the Nomad Autoscaler's ``ScalingAction`` a ``Decision`` carries its
reason, the inputs it was computed from and every clamp that changed the raw answer, so the log
line, ``/v1/decision`` and Kubernetes Events all explain it the same way.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from bolina_scaler.core.model import ConsulIndex

__all__ = ["Clamp", "Decision", "Direction", "Inputs", "Reason"]


class Direction(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"
    """Nothing to do: the fleet is where it should be."""
    HOLD = "hold"
    """Something might need doing, but the policy refuses to act now (see ``reason``)."""


class Reason(enum.StrEnum):
    """Why the decision is what it is. Stable strings: metrics and Events use them as labels."""

    COLD_START = "cold_start"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    BELOW_TARGET = "below_target"
    DEMAND_ABOVE_CAPACITY = "demand_above_capacity"
    """The servers' demand needs more replicas than there are, before the Available share drops."""
    ABOVE_SCALE_DOWN_RATIO = "above_scale_down_ratio"
    WITHIN_TARGET = "within_target"
    STABILIZING = "stabilizing"
    AT_MAX = "at_max"
    AT_MIN = "at_min"
    STEP_LIMITED = "step_limited"
    UNTRUSTED_DATA = "untrusted_data"
    STALE_DATA = "stale_data"
    FALLBACK = "fallback"
    """The data has stayed unusable for ``policy.fallback.after``: the fallback count decides (``policy.fallback``)."""
    MASS_CHANGE_GUARD = "mass_change_guard"
    NO_SERVERS_REGISTERED = "no_servers_registered"
    PAUSED = "paused"
    """A pause annotation on the Deployment holds the count (``core.pause``); the policy still explains."""


@dataclass(frozen=True, slots=True)
class Clamp:
    """One limit that changed the desired replica count from ``before`` to ``after``."""

    name: str
    before: int
    after: int
    detail: str = ""

    def __str__(self) -> str:
        """``max_replicas: wanted 16 replicas, limited to 12``, as logs, Events and the API show it.

        Both are replica counts, and the text says so: beside "allows removing 11", a bare
        "wanted 3, limited to 12" read as 3 removed."""
        detail = f" ({self.detail})" if self.detail else ""
        replicas = "replica" if self.before == 1 else "replicas"
        return f"{self.name}: wanted {self.before} {replicas}, limited to {self.after}{detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inputs:
    """Everything the decision was computed from, as plain numbers (for logs and ``/v1/decision``)."""

    consul_index: ConsulIndex
    trusted: bool
    trust_problems: tuple[str, ...]
    snapshot_age: float
    registered: int
    available: int
    warning: int
    critical: int
    pending: int
    """Requested replicas not yet registered that still count as capacity (within startup grace)."""
    pending_expired: int
    """Requested replicas not yet registered whose startup grace ran out: no longer counted."""
    current_replicas: int
    available_ratio: float | None
    mean_load: float | None = None
    """Mean ``Service.Meta.load`` of the non-Critical servers, when every one of them reports it."""
    demand: float | None = None
    """The fleet's demand in servers' worth (``core.demand``), when it is usable; else None."""
    out_of_service: int | None = None
    """Critical servers carrying no load or no fresh demand (not capacity), when demand is usable."""
    external_change: int | None = None
    """Set when someone else changed the replica count since our last look: the old value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The desired replica count and the story of how it was reached."""

    desired: int
    current: int
    direction: Direction
    reason: Reason
    message: str
    inputs: Inputs
    clamps: tuple[Clamp, ...] = ()
    recheck_at: float | None = None
    """When the policy wants to be asked again even if nothing changes (end of a window), or None."""
    notes: tuple[str, ...] = field(default=())

    @property
    def changes_scale(self) -> bool:
        return self.desired != self.current

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for logs and the API."""
        data = asdict(self)
        data["direction"] = str(self.direction)
        data["reason"] = str(self.reason)
        data["clamps"] = [asdict(clamp) for clamp in self.clamps]
        data["notes"] = list(self.notes)
        data["inputs"]["trust_problems"] = list(self.inputs.trust_problems)
        return data
