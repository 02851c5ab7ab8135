"""How far one decision may move: the bound, the scale-up stabilization and the step limits.

Pure arithmetic over the configuration and the memory, time passed in. The HPA's order
(``normalizeDesiredReplicasWithBehaviors`` in pkg/controller/podautoscaler/horizontal.go):
stabilize the recommendation, then limit the rate. The step limit of a direction is its rules
(``config.steps``) combined by ``select``, as ``calculateScaleUpLimitWithScalingRules`` and
``calculateScaleDownLimitWithBehaviors`` combine an HPA's policies.
"""

from __future__ import annotations

from dataclasses import dataclass

from bolina_scaler.config import PolicyConfig
from bolina_scaler.config.steps import StepConfig
from bolina_scaler.core.decision import Clamp, Reason
from bolina_scaler.core.memory import Memory, lowest_recommendation, moved, next_room

__all__ = ["Limited", "room", "within_limits"]


@dataclass(frozen=True, slots=True)
class Limited:
    """Where the limits leave a wanted count, and, when they leave it at the current one, why."""

    desired: int
    clamps: tuple[Clamp, ...]
    held: Reason
    """Why ``desired`` is the current count (meaningful only then): AT_MAX, STABILIZING or STEP_LIMITED."""
    why: str
    """The same for a person, to append to the decision's message."""
    recheck_at: float | None = None
    """When the limit that holds may free room (None: it will not by itself)."""


def within_limits(raw: int, *, current: int, config: PolicyConfig, memory: Memory, now: float, up: bool) -> Limited:
    """``raw`` replicas (above ``current`` when ``up``, below when not) within the bound, the
    scale-up stabilization and the step limit of its direction, every clamp recorded."""
    sign, word = (1, "up") if up else (-1, "down")
    clamps: list[Clamp] = []
    desired = raw
    bound = config.max_replicas if up else config.min_replicas
    if sign * (desired - bound) > 0:
        clamps.append(Clamp(f"{'max' if up else 'min'}_replicas", desired, bound))
        desired = bound
    lowest = lowest_recommendation(memory, config, now) if up else None
    if lowest is not None and lowest[0] < desired:
        # Never below current: unlike the HPA's, this window only slows scale-ups (scale-downs
        # have their own window and rules).
        floor = max(current, lowest[0])
        detail = f"lowest count recommended within scale_up.stabilization {config.scale_up.stabilization:g}s"
        clamps.append(Clamp("scale_up_stabilization", desired, floor, detail))
        desired = floor
    limit = config.scale_up if up else config.scale_down
    left, detail = room(limit, current, memory, now, up=up)
    if sign * (desired - current) > left:
        clamps.append(Clamp(f"scale_{word}_step", desired, current + sign * left, detail))
        desired = current + sign * left
    done = tuple(clamps)
    if up and current >= config.max_replicas:
        return Limited(desired, done, Reason.AT_MAX, "already at max_replicas")
    if lowest is not None and lowest[0] <= current:
        why = f"a count of {lowest[0]} was recommended within scale_up.stabilization"
        return Limited(desired, done, Reason.STABILIZING, why, lowest[1])
    if limit.select == "disabled":
        return Limited(desired, done, Reason.STEP_LIMITED, f"scaling {word} is disabled (scale_{word}.select)")
    return Limited(desired, done, Reason.STEP_LIMITED, "step limit reached", next_room(memory, config, now, up=up))


def room(limit: StepConfig, current: int, memory: Memory, now: float, *, up: bool) -> tuple[int, str]:
    """How many replicas the direction may still change now, and how its rules gave that (a clamp's detail).

    The HPA's ``calculateScaleUpLimitWithScalingRules`` and ``calculateScaleDownLimitWithBehaviors``:
    each rule allows its amount less the replicas changed in this direction within its own
    period; ``select: max`` takes the most any rule leaves, ``min`` the least, ``disabled`` none;
    never below none (the HPA's "limit below current: no change until the events age out"). One
    difference, kept so that today's figures stay: a Percent rule is a share of the current
    count, where the HPA takes it of the count at its period's start (docs/migrating.md).
    """
    word = "up" if up else "down"
    if limit.select == "disabled":
        return 0, f"scale_{word}.select: disabled"
    pick = max if limit.select == "max" else min
    periods = {rule.period for rule in limit.rules}
    if len(periods) == 1:
        (period,) = periods
        allowed = pick(rule.allowed(current) for rule in limit.rules)
        used = moved(memory, now, period, up=up)
        return max(0, allowed - used), f"at most {allowed} {word} per {period:g}s, {used} used"
    rooms, parts = [], []
    for rule in limit.rules:
        allowed, used = rule.allowed(current), moved(memory, now, rule.period, up=up)
        rooms.append(allowed - used)
        parts.append(f"{allowed} per {rule.period:g}s, {used} used")
    return max(0, pick(rooms)), f"{limit.select} of: {'; '.join(parts)}"
