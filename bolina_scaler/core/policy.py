from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from bolina_scaler.config import PolicyConfig
from bolina_scaler.core.decision import Clamp, Decision, Direction, Inputs, Reason
from bolina_scaler.core.demand import DemandEstimate, estimate_demand
from bolina_scaler.core.fallback import again_at, plan_fallback
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.limits import within_limits
from bolina_scaler.core.memory import (
    Grant,
    Memory,
    ScaleChange,
    demand_peak,
    moved,
    next_grant_expiry,
    note_demand,
    note_recommendation,
    note_usable,
    prune,
    record_scale,
)
from bolina_scaler.core.model import Status

__all__ = ["Grant", "Memory", "ScaleChange", "decide", "record_scale"]


@dataclass(frozen=True, slots=True)
class _Step:
    """What a rule decided; ``decide`` adds the inputs and the notes to make it a ``Decision``."""

    desired: int
    direction: Direction
    reason: Reason
    message: str
    clamps: tuple[Clamp, ...] = ()
    recheck_at: float | None = None
    wanted: int | None = None
    """The count the scale-up rule recommended, before stabilization and limits (None: no more)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Look:
    """What one evaluation's rules read, once the memory has taken in the replica count and the demand."""

    fleet: FleetSnapshot
    current: int
    pending: int
    expired: int
    mean_load: float | None
    demand: DemandEstimate
    external_change: int | None
    """The replica count of our last look when someone else has changed it since; else None."""
    config: PolicyConfig
    now: float
    notes: tuple[str, ...]
    """What the decision should tell besides its message (a hand change, expired grants, unused demand)."""

    @property
    def target(self) -> Fraction:
        return Fraction(str(self.config.target_available_ratio))

    def hold(self, reason: Reason, why: str) -> _Step:
        """HOLD at the current count, saying ``why``."""
        return _Step(self.current, Direction.HOLD, reason, f"holding at {self.current}: {why}")

    def keep(self, reason: Reason, message: str) -> _Step:
        """NONE: keep the current count."""
        return _Step(self.current, Direction.NONE, reason, message)


def decide(
    *,
    fleet: FleetSnapshot,
    current: int,
    config: PolicyConfig,
    memory: Memory,
    now: float,
    wall_now: float | None = None,
) -> tuple[Decision, Memory]:
    """Evaluate once. Returns the decision and the memory to pass to the next evaluation.

    ``now`` is the monotonic clock the snapshot's ``observed_at`` and the memory use;
    ``wall_now`` the wall-clock time (unix seconds) to judge the age of the servers' demand
    (None: demand is not used).
    """
    look, memory = _look(fleet=fleet, current=current, config=config, memory=memory, now=now, wall_now=wall_now)
    step, memory = _evaluate(look, memory)
    decision = Decision(
        desired=step.desired,
        current=current,
        direction=step.direction,
        reason=step.reason,
        message=step.message,
        inputs=_inputs(look),
        clamps=step.clamps,
        recheck_at=_earliest(step.recheck_at, next_grant_expiry(memory, config) if look.pending else None),
        notes=look.notes,
    )
    return decision, memory


def _look(
    *,
    fleet: FleetSnapshot,
    current: int,
    config: PolicyConfig,
    memory: Memory,
    now: float,
    wall_now: float | None,
) -> tuple[_Look, Memory]:
    """Take in the replica count, the servers still starting and the demand; note what the decision should say."""
    notes: list[str] = []
    memory, external_change = _note_replicas(prune(memory, config, now), fleet, current, now, notes)

    unregistered = max(0, current - fleet.registered)
    pending = min(unregistered, sum(grant.count for grant in memory.grants))
    expired = unregistered - pending
    if expired:
        notes.append(
            f"{expired} requested replica(s) not registered after startup_grace "
            f"({config.startup_grace:g}s): no longer counted as capacity"
        )

    demand = estimate_demand(fleet, config=config.demand, wall_now=wall_now)
    if not demand.usable and demand.reported:
        notes.append(f"demand not used: {demand.problem}; sizing from the Available share")
    if demand.usable and fleet.trusted:
        memory = note_demand(memory, demand.total, config, now)

    return _Look(
        fleet=fleet,
        current=current,
        pending=pending,
        expired=expired,
        mean_load=fleet.mean_load,
        demand=demand,
        external_change=external_change,
        config=config,
        now=now,
        notes=tuple(notes),
    ), memory


def _note_replicas(
    memory: Memory, fleet: FleetSnapshot, current: int, now: float, notes: list[str]
) -> tuple[Memory, int | None]:
    """Take in the replica count; returns the memory and, when someone else changed the count, our last one."""
    last = memory.last_replicas
    if last is None and current > fleet.registered:
        # First look (a fresh process, e.g. after a restart or a takeover): replicas that are not
        # registered yet may have been requested a moment ago. Count them as starting, as if
        # requested now, rather than ordering them a second time.
        unregistered = current - fleet.registered
        notes.append(f"first evaluation: {unregistered} unregistered replica(s) counted as starting")
        memory = replace(memory, grants=(*memory.grants, Grant(now, unregistered)))
    if last is None or last == current:
        return replace(memory, last_replicas=current), None
    notes.append(f"replicas changed from {last} to {current} by someone else; starting from {current}")
    grants = (*memory.grants, Grant(now, current - last)) if current > last else memory.grants
    return replace(memory, grants=grants, last_replicas=current), last


def _inputs(look: _Look) -> Inputs:
    fleet, demand = look.fleet, look.demand
    return Inputs(
        consul_index=fleet.index,
        trusted=fleet.trusted,
        trust_problems=fleet.trust.problems,
        snapshot_age=max(0.0, look.now - fleet.observed_at),
        registered=fleet.registered,
        available=fleet.available,
        warning=fleet.warning,
        critical=fleet.critical,
        pending=look.pending,
        pending_expired=look.expired,
        current_replicas=look.current,
        available_ratio=fleet.available_ratio,
        mean_load=look.mean_load,
        demand=demand.total if demand.usable else None,
        out_of_service=demand.out_of_service if demand.usable else None,
        external_change=look.external_change,
    )


def _evaluate(look: _Look, memory: Memory) -> tuple[_Step, Memory]:
    """The rules of the module docstring, in order; the first that gives a step decides.

    The stabilization window (``Memory.above_since``) is set here and nowhere else in the
    evaluation: it stays open only while the fleet is in the scale-down window (stabilizing, or
    the scale-down that follows it), opening on the first such evaluation and again after someone
    else changed the replica count; every other rule closes it.
    """
    unusable = _unusable_data(look)
    memory = note_usable(memory, unusable is None, look.now)
    step = _out_of_bounds(look) or (None if unusable is None else _fallback(look, unusable, memory))
    sizing = None
    if step is None:
        step, memory = _mass_change_guard(look, memory)
    if step is None and look.fleet.registered + look.pending == 0:
        step = look.hold(Reason.NO_SERVERS_REGISTERED, "no server is registered in Consul and none is starting")
    if step is None:
        sizing = _Sizing.of(look, demand_peak(memory)) if look.demand.usable else None
        step = _up_or_keep(look, sizing, memory)
        wanted = step.wanted if step is not None and step.wanted is not None else look.current
        memory = note_recommendation(memory, wanted, look.config, look.now)
    since: float | None = None
    if step is None:  # the scale-down window: the one rule that keeps it open
        since = memory.above_since if memory.above_since is not None and look.external_change is None else look.now
        step = _stabilizing(look, since) or _scale_down(look, sizing, memory)
    return step, replace(memory, above_since=since)


def _out_of_bounds(look: _Look) -> _Step | None:
    """Bounds come from the configuration, not from Consul's data: enforced even on untrusted data."""
    current, config = look.current, look.config
    if current < config.min_replicas:
        reason = Reason.COLD_START if current == 0 else Reason.BELOW_MIN
        message = f"{current} replicas is below min_replicas {config.min_replicas}"
        clamp = Clamp("min_replicas", current, config.min_replicas)
        return _Step(config.min_replicas, Direction.UP, reason, message, (clamp,))
    if current > config.max_replicas:
        message = f"{current} replicas is above max_replicas {config.max_replicas}"
        clamp = Clamp("max_replicas", current, config.max_replicas)
        return _Step(config.max_replicas, Direction.DOWN, Reason.ABOVE_MAX, message, (clamp,))
    return None


def _unusable_data(look: _Look) -> _Step | None:
    fleet = look.fleet
    if not fleet.trusted:
        return look.hold(Reason.UNTRUSTED_DATA, f"Consul data cannot be trusted ({fleet.trust})")
    age = look.now - fleet.observed_at
    if age > look.config.max_snapshot_age:
        why = f"the last Consul answer is {age:.0f}s old (max_snapshot_age {look.config.max_snapshot_age:g}s)"
        return look.hold(Reason.STALE_DATA, why)
    return None


def _fallback(look: _Look, held: _Step, memory: Memory) -> _Step:
    """The trust rule's HOLD, or the count ``core.fallback`` plans, within the bounds and the step
    limit (not the scale-up stabilization: the data has said nothing for ``after`` already)."""
    plan = plan_fallback(look.config.fallback, current=look.current, since=memory.unusable_since, now=look.now)
    if plan is None or plan.wanted is None:
        return held if plan is None else replace(held, message=f"{held.message}; {plan.words}", recheck_at=plan.due)
    message, up = f"{held.message.partition(': ')[2]} {plan.words}", plan.wanted > look.current
    if plan.wanted == look.current:
        return _Step(look.current, Direction.HOLD, Reason.FALLBACK, message)
    unstabilized = replace(memory, up_recommendations=())  # `after` is the fallback's window, none on top
    step = _within_limits(plan.wanted, look, Reason.FALLBACK, message, unstabilized, up=up)
    if step.desired != plan.wanted and step.recheck_at is None:
        step = replace(step, recheck_at=again_at(memory, look.config, look.now, up=up))
    return replace(step, reason=Reason.FALLBACK)


def _up_or_keep(look: _Look, sizing: _Sizing | None, memory: Memory) -> _Step | None:
    """UP (or a HOLD at a limit) when the demand or the share needs more; NONE when nothing may go;
    None when the fleet is in the scale-down window."""
    current, pending, target = look.current, look.pending, look.target
    registered, available = look.fleet.registered, look.fleet.available
    share = Fraction(available + pending, registered + pending)
    if sizing is not None and sizing.wanted > current:
        reason = Reason.BELOW_TARGET if share < target else Reason.DEMAND_ABOVE_CAPACITY
        starting = f" (+{pending} starting)" if pending else ""
        message = f"{sizing} for {current}; {available} of {registered} Available{starting}"
        return _within_limits(sizing.wanted, look, reason, message, memory, up=True)
    if share < target:
        # The probe stays a safety net with demand too: servers may turn Warning for reasons the
        # demand does not measure (CPU, memory), and then only the share says capacity is short.
        step = _scale_up(look, memory)
        return step if sizing is None else replace(step, message=f"{step.message} ({sizing} would keep {current})")
    scale_down_ratio = Fraction(str(look.config.scale_down_ratio))
    if pending or registered == 0 or Fraction(available, registered) < scale_down_ratio:
        why = f"{pending} server(s) still starting" if pending else "share below scale_down_ratio"
        return look.keep(
            Reason.WITHIN_TARGET, f"share {float(share):.2f} meets target {float(target):g}; keeping {current} ({why})"
        )
    if current <= look.config.min_replicas:
        return look.keep(Reason.AT_MIN, f"share {available}/{registered} is high but {current} is min_replicas")
    return None


def _stabilizing(look: _Look, since: float) -> _Step | None:
    """NONE until the share has stayed at or above scale_down_ratio for the whole window."""
    config = look.config
    window_end = since + config.scale_down_stabilization
    if look.now >= window_end:
        return None
    message = (
        f"share {look.fleet.available}/{look.fleet.registered} ≥ scale_down_ratio {config.scale_down_ratio:g} for "
        f"{look.now - since:.0f}s of {config.scale_down_stabilization:g}s"
    )
    return _Step(look.current, Direction.NONE, Reason.STABILIZING, message, recheck_at=window_end)


@dataclass(frozen=True, slots=True)
class _Sizing:
    """How many replicas the demand needs, and the story of it (``str()``) for the decision's message.

    The fleet is sized for the highest demand estimate of the last ``scale_down_stabilization``
    (the clients connected plus the anticipated share of those the arrival rate brings; like the
    HPA's highest recommendation): up at once when the latest needs more, down only to what the
    window's highest needs. So a dip does not remove what the demand comes back to, and when a
    server fails, its clients move to the others before their new load reaches the catalog (an
    output-only check change waits for check_update_interval): the fleet's load seems to drop for
    a while when it has not.
    """

    demand: DemandEstimate
    size: float
    from_peak: bool
    serving: int
    wanted: int
    target_load: float

    @classmethod
    def of(cls, look: _Look, peak: float | None) -> _Sizing:
        demand, target_load = look.demand, look.config.demand.target_load
        from_peak = peak is not None and peak > demand.total
        size = peak if peak is not None and from_peak else demand.total
        serving = demand.servers_for(size, target_load)
        return cls(demand, size, from_peak, serving, serving + demand.out_of_service + look.expired, target_load)

    def __str__(self) -> str:
        d = self.demand
        size = f"the window's highest {self.size:.2f}" if self.from_peak else f"{self.size:.2f}"
        spare = f" + {self.wanted - self.serving} not serving" if self.wanted > self.serving else ""
        return (
            f"demand of {d.reporting} servers: {d.held:.2f} servers' worth connected, {d.offered:.2f} offered; "
            f"sizing for {size} at target load {self.target_load:g}: {self.serving} serving{spare} = "
            f"{self.wanted} replicas"
        )


def _scale_up(look: _Look, memory: Memory) -> _Step:
    registered, available, pending, target = look.fleet.registered, look.fleet.available, look.pending, look.target
    # Smallest n with (available + pending + n) / (registered + pending + n) >= target.
    need = max(1, math.ceil((target * (registered + pending) - (available + pending)) / (1 - target)))
    starting = f" (+{pending} starting, counted as Available)" if pending else ""
    share = (available + pending) / (registered + pending)
    message = (
        f"{available} of {registered} servers Available{starting}: share {share:.2f} is below target "
        f"{float(target):g}; {need} more server(s) needed"
    )
    return _within_limits(look.current + need, look, Reason.BELOW_TARGET, message, memory, up=True)


def _within_limits(raw: int, look: _Look, reason: Reason, message: str, memory: Memory, *, up: bool) -> _Step:
    """``raw`` replicas within the bound, the scale-up stabilization and the step limit of its
    direction (``core.limits``), every clamp recorded; a HOLD saying why when they leave no room."""
    current = look.current
    limited = within_limits(raw, current=current, config=look.config, memory=memory, now=look.now, up=up)
    wanted = raw if up else None
    if limited.desired != current:
        direction = Direction.UP if up else Direction.DOWN
        return _Step(limited.desired, direction, reason, message, limited.clamps, wanted=wanted)
    message = f"{message}; {limited.why}"
    return _Step(current, Direction.HOLD, limited.held, message, limited.clamps, limited.recheck_at, wanted)


def _scale_down(look: _Look, sizing: _Sizing | None, memory: Memory) -> _Step:
    """Once the window has run: DOWN by the most that keeps the share, the demand and the load
    within target, or NONE (WITHIN_TARGET) when nothing can go."""
    config, current, target = look.config, look.current, look.target
    registered, available = look.fleet.registered, look.fleet.available
    # Kubernetes may remove any pod, so assume the removed servers were Available: the largest
    # y with (available - y) / (registered - y) >= target.
    most = math.floor((available - target * registered) / (1 - target))
    most = min(most, available, registered - 1)
    message = (
        f"share {available}/{registered} stayed ≥ scale_down_ratio {config.scale_down_ratio:g} "
        f"for {config.scale_down_stabilization:g}s"
    )
    if most < 1:
        return look.keep(Reason.WITHIN_TARGET, f"{message}; removing one would go below target")
    by_load = None
    if sizing is not None:
        most = min(most, current - sizing.wanted)
        if most < 1:
            return look.keep(Reason.WITHIN_TARGET, f"{message}; {sizing}")
        message += f"; {sizing}"
    else:
        by_load = _removable_by_load(look.fleet, look.mean_load, config)
    if by_load is not None and by_load[0] < most:
        most, mean = by_load
        if most < 1:
            detail = f"mean load {mean:.2f} leaves no room under scale_down_max_load {config.scale_down_max_load:g}"
            return look.keep(Reason.WITHIN_TARGET, f"{message}; {detail}")
        message += f"; mean load {mean:.2f} allows removing {most}"
    return _within_limits(current - most, look, Reason.ABOVE_SCALE_DOWN_RATIO, message, memory, up=False)


def _removable_by_load(fleet: FleetSnapshot, mean: float | None, config: PolicyConfig) -> tuple[int, float] | None:
    """How many servers can go while the mean load of the non-Critical ones stays under the bound.

    Servers share clients evenly through the load balancer, so they tend to be Available until
    the fleet is nearly full and then turn Warning together: the Available share alone says
    little about headroom. When every non-Critical server reports its load, the clients of the
    removed servers are assumed to move to the others. None when the load is not known.
    """
    bound = config.scale_down_max_load
    if bound is None or mean is None:
        return None
    serving = fleet.registered - fleet.critical
    removable = serving - math.ceil(mean * serving / bound - 1e-9)
    return max(0, removable), mean


def _mass_change_guard(look: _Look, memory: Memory) -> tuple[_Step | None, Memory]:
    """Hold when a large share of the last trusted fleet vanished or turned Critical at once.

    The baseline stays the pre-change fleet while holding, so a change that persists past the
    confirmation window is accepted and one that reverts clears the guard.
    """
    # Server.key spelled out: the property call per server was 3 of decide()'s ~13 ms at 10,000 servers.
    critical, now = Status.CRITICAL, look.now
    healthy = frozenset([(s.node, s.instance_id) for s in look.fleet.servers if s.status is not critical])
    guard = look.config.mass_change
    baseline = memory.baseline
    if baseline is not None and len(baseline) >= guard.min_fleet:
        # Servers we removed ourselves are expected to vanish.
        removed = moved(memory, now, look.config.startup_grace, up=False)
        lost = max(0, len(baseline - healthy) - removed)
        share = lost / len(baseline)
        if share >= guard.ratio:
            since = memory.guard_since if memory.guard_since is not None else now
            confirm_at = since + guard.confirmation
            if now < confirm_at:
                message = (
                    f"holding: {lost} of {len(baseline)} servers vanished or turned critical in one update "
                    f"(≥ {guard.ratio:g}); waiting {confirm_at - now:.0f}s to confirm"
                )
                step = _Step(look.current, Direction.HOLD, Reason.MASS_CHANGE_GUARD, message, recheck_at=confirm_at)
                return step, replace(memory, guard_since=since)
    return None, replace(memory, baseline=healthy, guard_since=None)


def _earliest(*times: float | None) -> float | None:
    return min((t for t in times if t is not None), default=None)
