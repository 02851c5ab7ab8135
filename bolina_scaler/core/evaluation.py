"""One evaluation step: decide, apply the pause, and say what would be sent. The one place that asks the policy.

Pure: a snapshot, the replica count, the policy's memory, the pause in force, this replica's
role and the time in; a ``Step`` out. The daemon's evaluator, ``bolina-scaler plan`` and the
simulator all take the same step, so "what the daemon would do" is worked out once::

    decide() ──► decision, memory ──► [paused: hold, or go to the held count] ──► Step
                                                                                    │
       no change ──► UNCHANGED   shadow ──► DRY_RUN   follower ──► NOT_LEADER   leader ──► send it

The step never sends anything: a leader's ``Step.outcome`` is None ("send the patch"), and what
the patch then does (``PATCHED``, ``CONFLICT``, ``FAILED``) is the I/O edge's to say. The policy's
memory is recorded after a patch (``memory.record_scale``), by whoever sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bolina_scaler.config import PolicyConfig
from bolina_scaler.core.decision import Decision
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import Memory
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause, paused_decision
from bolina_scaler.core.policy import decide
from bolina_scaler.core.role import Role

__all__ = ["Step", "log_fields", "step"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one evaluation decided and what it would do with it."""

    decision: Decision
    """What is done: the policy's decision, or while paused the pause's (hold, or the held count)."""
    policy_decision: Decision
    """What the policy itself decided (the same value as ``decision`` when not paused)."""
    memory: Memory
    """The policy's memory for the next evaluation (a patch sent adds ``record_scale``)."""
    pause: Pause | None
    role: Role

    @property
    def paused(self) -> bool:
        return self.pause is not None

    @property
    def outcome(self) -> Outcome | None:
        """The outcome when nothing is sent (``UNCHANGED``, ``DRY_RUN``, ``NOT_LEADER``); None: send the patch."""
        if not self.decision.changes_scale:
            return Outcome.UNCHANGED
        if self.role is Role.SHADOW:
            return Outcome.DRY_RUN
        if not self.role.may_patch:
            return Outcome.NOT_LEADER
        return None

    @property
    def would_patch(self) -> bool:
        """Whether a patch of the scale would be sent."""
        return self.outcome is None


def step(
    *,
    fleet: FleetSnapshot,
    current: int,
    config: PolicyConfig,
    memory: Memory,
    now: float,
    wall_now: float | None,
    pause: Pause | None = None,
    role: Role = Role.LEADER,
) -> Step:
    """One evaluation (``policy.decide``'s arguments, plus the pause in force and this replica's role)."""
    decision, memory = decide(fleet=fleet, current=current, config=config, memory=memory, now=now, wall_now=wall_now)
    done = decision if pause is None else paused_decision(decision, pause, max_replicas=config.max_replicas)
    return Step(decision=done, policy_decision=decision, memory=memory, pause=pause, role=role)


def log_fields(decision: Decision, *, now: float) -> dict[str, Any]:
    """The fields of the one log line written per evaluation (and of ``plan``'s report)."""
    inputs = decision.inputs
    fields: dict[str, Any] = {
        "consul_index": inputs.consul_index,
        "trusted": inputs.trusted,
        "registered": inputs.registered,
        "available": inputs.available,
        "warning": inputs.warning,
        "critical": inputs.critical,
        "pending": inputs.pending,
        "current": decision.current,
        "desired": decision.desired,
        "direction": str(decision.direction),
        "reason": str(decision.reason),
        "why": decision.message,
        "clamps": [str(clamp) for clamp in decision.clamps],
    }
    if inputs.trust_problems:
        fields["trust_problems"] = list(inputs.trust_problems)
    if inputs.pending_expired:
        fields["pending_expired"] = inputs.pending_expired
    if inputs.external_change is not None:
        fields["external_change_from"] = inputs.external_change
    if decision.notes:
        fields["notes"] = list(decision.notes)
    if decision.recheck_at is not None:
        fields["recheck_in_s"] = round(max(0.0, decision.recheck_at - now), 3)
    return fields
