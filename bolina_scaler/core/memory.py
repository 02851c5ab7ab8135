"""What the policy remembers between two evaluations, and the arithmetic over that history.

Pure: an immutable ``Memory`` value goes into ``policy.decide`` and a new one comes out; time is
always passed in. Two ledgers live here: the *grants* (replicas requested and not registered
yet, counted as capacity until ``startup_grace`` ends: no runaway scale-up while pods start)
and the *scale changes* the scaler made (the step limits count them over their period). Two
sliding windows keep what the policy recommended: the demand's highest estimate over
``scale_down_stabilization`` and the lowest scale-up count over ``scale_up.stabilization``, each
as a short run of (time, value) pairs whose first is the window's extreme.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bolina_scaler.config import PolicyConfig
from bolina_scaler.core.decision import Decision
from bolina_scaler.core.model import ServerKey

__all__ = [
    "Grant",
    "Memory",
    "ScaleChange",
    "demand_peak",
    "lowest_recommendation",
    "moved",
    "next_grant_expiry",
    "next_room",
    "note_demand",
    "note_recommendation",
    "note_usable",
    "prune",
    "record_scale",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """``count`` replicas requested at ``at``: capacity in flight until they register or grace ends."""

    at: float
    count: int


@dataclass(frozen=True, slots=True)
class ScaleChange:
    """One replica change the scaler made, kept for the step limits."""

    at: float
    before: int
    after: int

    @property
    def up(self) -> bool:
        return self.after > self.before


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """What the policy remembers between evaluations. Start with ``Memory()``."""

    grants: tuple[Grant, ...] = ()
    changes: tuple[ScaleChange, ...] = ()
    above_since: float | None = None
    """Since when the Available share has stayed at or above ``scale_down_ratio``."""
    demand_peaks: tuple[tuple[float, float], ...] = ()
    """``(time, demand)``: the fleet's demand estimate (servers' worth) at evaluations with usable
    demand within the last ``scale_down_stabilization``, each higher than every later one; the
    first is the window's highest (a sliding-window maximum, kept short)."""
    up_recommendations: tuple[tuple[float, int], ...] = ()
    """``(time, count)``: the replica counts the scale-up rule recommended within the last
    ``scale_up.stabilization``, each lower than every later one; the first is the window's lowest
    (a sliding-window minimum). Counts are capped at ``max_replicas``, so there are at most
    ``max_replicas + 1`` of them whatever the evaluation rate. Empty while the window is 0."""
    baseline: frozenset[ServerKey] | None = None
    """Servers (node, Service.ID) not Critical at the last trusted evaluation (mass-change guard)."""
    guard_since: float | None = None
    """When the mass-change guard started holding, if it is holding."""
    last_replicas: int | None = None
    """The replica count at the last evaluation or the last change we made."""
    unusable_since: float | None = None
    """Since when every evaluation has found Consul's data unusable (untrusted, stale); None once
    one found it usable. ``policy.fallback`` acts when this has lasted ``after``."""


def record_scale(memory: Memory, decision: Decision, *, now: float) -> Memory:
    """Remember a decision the daemon has applied: step history, in-flight ledger, replica count.

    A decision that was not applied (dry run, follower, error) is not recorded.
    """
    if not decision.changes_scale:
        return memory
    grants = memory.grants
    if decision.desired > decision.current:
        grants = (*grants, Grant(now, decision.desired - decision.current))
    return replace(
        memory,
        grants=grants,
        changes=(*memory.changes, ScaleChange(now, decision.current, decision.desired)),
        last_replicas=decision.desired,
        # After a scale-down the remaining servers take the removed ones' clients. Without load
        # or demand figures that effect is unknown: watch it for a whole stabilization window first.
        above_since=None
        if decision.desired < decision.current and decision.inputs.mean_load is None and decision.inputs.demand is None
        else memory.above_since,
    )


def prune(memory: Memory, config: PolicyConfig, now: float) -> Memory:
    """Forget grants past ``startup_grace`` and scale changes no window looks at any more."""
    horizon = max(config.scale_up.longest_period, config.scale_down.longest_period, config.startup_grace)
    grants = tuple(g for g in memory.grants if now - g.at < config.startup_grace)
    changes = tuple(c for c in memory.changes if now - c.at < horizon)
    if grants == memory.grants and changes == memory.changes:
        return memory
    return replace(memory, grants=grants, changes=changes)


def note_demand(memory: Memory, demand: float, config: PolicyConfig, now: float) -> Memory:
    """Add the fleet's demand estimate to the window's peaks."""
    horizon = now - config.scale_down_stabilization
    kept = tuple((t, value) for t, value in memory.demand_peaks if t > horizon and value > demand)
    return replace(memory, demand_peaks=(*kept, (now, demand)))


def note_usable(memory: Memory, usable: bool, now: float) -> Memory:
    """Take in whether this evaluation's data is usable: a usable one ends the unusable stretch,
    the first unusable one starts it (at ``now``: the moment this process first saw it)."""
    if usable:
        return memory if memory.unusable_since is None else replace(memory, unusable_since=None)
    return memory if memory.unusable_since is not None else replace(memory, unusable_since=now)


def demand_peak(memory: Memory) -> float | None:
    """The highest demand estimate noted within the window, if any."""
    return memory.demand_peaks[0][1] if memory.demand_peaks else None


def note_recommendation(memory: Memory, count: int, config: PolicyConfig, now: float) -> Memory:
    """Add the count one evaluation's scale-up rule recommended (the current count when it wants no more).

    Like the HPA's ``stabilizeRecommendationWithBehaviors``, but kept as a sliding minimum: a
    recommendation no lower than a later one can never be the window's lowest again, so it goes.
    """
    window = config.scale_up.stabilization
    if window <= 0:
        return memory
    count = min(count, config.max_replicas)
    horizon = now - window
    kept = tuple((t, value) for t, value in memory.up_recommendations if t > horizon and value < count)
    return replace(memory, up_recommendations=(*kept, (now, count)))


def lowest_recommendation(memory: Memory, config: PolicyConfig, now: float) -> tuple[int, float] | None:
    """The lowest scale-up count recommended within the window, and when it leaves the window."""
    window = config.scale_up.stabilization
    horizon = now - window
    for t, value in memory.up_recommendations:
        if t > horizon:
            return value, t + window
    return None


def moved(memory: Memory, now: float, window: float, *, up: bool) -> int:
    """Replicas the scaler added (``up``) or removed within the last ``window`` seconds."""
    return sum(abs(c.after - c.before) for c in memory.changes if c.up == up and now - c.at < window)


def next_grant_expiry(memory: Memory, config: PolicyConfig) -> float | None:
    """When the oldest grant stops counting as capacity."""
    return min((g.at + config.startup_grace for g in memory.grants), default=None)


def next_room(memory: Memory, config: PolicyConfig, now: float, *, up: bool) -> float | None:
    """When the step limit of that direction next frees room (a change leaves one rule's period)."""
    limit = config.scale_up if up else config.scale_down
    periods = {rule.period for rule in limit.rules}
    times = [c.at + p for c in memory.changes if c.up == up for p in periods if c.at + p > now]
    return min(times, default=None)
