"""``policy.fallback``: what the policy does when Consul's data stays unusable. Pure.

Unusable data (untrusted, or older than ``max_snapshot_age``) makes the trust rule hold at the
current count. That is right for a moment, and wrong for a long outage that starts at the foot
of a peak: the fleet never grows. With ``policy.fallback.replicas`` set, once every evaluation
has found the data unusable for ``after`` without a break (``Memory.unusable_since``), the count
goes to the fallback count::

    unusable since S ──► now < S + after ──► HOLD (the trust rule), evaluate again at S + after
                     └─► now ≥ S + after ──► raise_only: max(replicas, current)   (KEDA's
                                                         currentReplicasIfHigher)
                                             exact:      replicas                 (KEDA's static)
    one usable answer ──► the stretch ends; the normal rules decide again

The policy (``core.policy``) takes the count through the bounds and the step limit of its
direction, as KEDA's fallback goes through the HPA's behavior: the data says nothing, so the
count is a configured guess, and a guess is not a reason to ask the scheduler for 40 pods at
once. Messages do not change from one evaluation to the next (Kubernetes Events aggregate by
message); the countdown is the decision's ``recheck_at``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bolina_scaler.config import FallbackConfig, PolicyConfig
from bolina_scaler.core.memory import Memory, next_room

__all__ = ["FallbackPlan", "again_at", "plan_fallback"]


@dataclass(frozen=True, slots=True)
class FallbackPlan:
    """What ``policy.fallback`` says at one evaluation on unusable data."""

    due: float
    """When the fallback acts: the start of the unusable stretch plus ``after``."""
    wanted: int | None
    """The count to go to (within the bounds by the config's rule); None: not due yet."""
    words: str
    """The plan, to add to the trust rule's message."""


def plan_fallback(config: FallbackConfig, *, current: int, since: float | None, now: float) -> FallbackPlan | None:
    """The plan for data unusable since ``since`` (None: since ``now``); None when no fallback count
    is configured."""
    if config.replicas is None:
        return None
    due = (now if since is None else since) + config.after
    if now < due:
        words = f"policy.fallback goes to {config.replicas} replicas after {config.after:g}s of unusable data"
        return FallbackPlan(due, None, words)
    wanted = max(config.replicas, current) if config.mode == "raise_only" else config.replicas
    words = f"for {config.after:g}s or more: policy.fallback to {config.replicas} replicas ({config.mode})"
    if wanted == current:
        words += "; already there" if current == config.replicas else f"; keeping {current}, not lowering"
    return FallbackPlan(due, wanted, words)


def again_at(memory: Memory, config: PolicyConfig, now: float, *, up: bool) -> float | None:
    """When to evaluate again after a fallback change the step limit cut short (None: never, the
    direction is ``select: disabled``). No Consul change wakes the evaluator while the data is
    unusable: ask again when the limit frees room once this change is made, i.e. when an earlier
    change leaves one rule's period, at the latest when this one leaves the shortest."""
    limit = config.scale_up if up else config.scale_down
    if limit.select == "disabled":
        return None
    latest = now + min(rule.period for rule in limit.rules)
    sooner = next_room(memory, config, now, up=up)
    return latest if sooner is None else min(sooner, latest)
