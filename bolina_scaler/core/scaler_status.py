"""The scaler's status as ``kubectl`` shows it: one annotation on the scaled Deployment.

Pure: no I/O, no clock reads (times are passed in). KEDA shows READY / ACTIVE / FALLBACK / PAUSED
in ``kubectl get scaledobject``, the HPA its conditions; our state is otherwise behind a
port-forward (``/v1/decision``). The leader writes ``bolina-scaler/status`` on the Deployment, a
small JSON object with sorted keys::

    {"current":4,"desired":6,"direction":"up","fallback":false,"leader":"bolina-scaler-7d…",
     "limitedBy":["max_replicas"],"outcome":"patched","paused":false,"ready":true,
     "reason":"below_target","since":"2026-12-08T01:23:45Z","summary":"up 4→6: below_target …",
     "updated":"2026-12-08T01:23:45Z"}

``kubectl -n bolina get deploy bolina -o jsonpath='{.metadata.annotations.bolina-scaler/status}'``
reads it. Every write moves the Deployment's ``resourceVersion``, so it is rate-limited here:
``due`` writes a changed status at most every ``status.min_interval`` and an unchanged one every
``status.refresh`` (so ``updated`` proves the scaler alive), never more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bolina_scaler.core.decision import Decision, Reason
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause

__all__ = ["MAX_STATUS_BYTES", "STATUS_ANNOTATION", "StatusContent", "due", "encode", "status_of"]

STATUS_ANNOTATION: Final = "bolina-scaler/status"
MAX_STATUS_BYTES: Final = 2048
"""The annotation stays small (all of an object's annotations may total 256 KiB)."""
_PROBLEM_CHARS: Final = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusContent:
    """What the status says, times aside: two equal contents are the same status."""

    desired: int
    current: int
    direction: str
    reason: str
    limited_by: tuple[str, ...]
    outcome: str | None
    paused: bool
    fallback: bool
    ready: bool
    problem: str | None
    """The first ``/readyz`` problem, shortened (None while ready)."""
    leader: str | None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "current": self.current,
            "desired": self.desired,
            "direction": self.direction,
            "fallback": self.fallback,
            "leader": self.leader,
            "limitedBy": list(self.limited_by),
            "outcome": self.outcome,
            "paused": self.paused,
            "ready": self.ready,
            "reason": self.reason,
            "summary": self.summary,
        }
        if self.problem is not None:
            data["problem"] = self.problem
        return data

    @property
    def summary(self) -> str:
        """One phrase for a person: ``up 4→6: below_target (limited by max_replicas)``."""
        move = f"{self.direction} {self.current}→{self.desired}" if self.desired != self.current else "hold"
        text = f"{move}: {self.reason}"
        if self.limited_by:
            text += f" (limited by {', '.join(self.limited_by)})"
        if self.paused:
            text += ", paused"
        if not self.ready:
            text += ", not ready"
        return text


def status_of(
    decision: Decision,
    *,
    outcome: Outcome | None,
    pause: Pause | None,
    problems: list[str],
    leader: str | None,
) -> StatusContent:
    """The status of the last decision, as the leader writes it."""
    problem = problems[0][:_PROBLEM_CHARS] if problems else None
    return StatusContent(
        desired=decision.desired,
        current=decision.current,
        direction=str(decision.direction),
        reason=str(decision.reason),
        limited_by=tuple(dict.fromkeys(clamp.name for clamp in decision.clamps)),
        outcome=None if outcome is None else str(outcome),
        paused=pause is not None,
        fallback=decision.reason is Reason.FALLBACK,
        ready=not problems,
        problem=problem,
        leader=leader,
    )


def encode(content: StatusContent, *, since: float, updated: float) -> str:
    """The annotation's value: compact JSON, sorted keys, times as UTC ``…Z``; at most
    ``MAX_STATUS_BYTES`` (a long problem or leader name is cut to fit)."""
    data = content.as_dict() | {"since": _iso(since), "updated": _iso(updated)}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_STATUS_BYTES:
        data["problem"] = (content.problem or "")[:40]
        data["leader"] = (content.leader or "")[:64]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text


def due(
    content: StatusContent,
    *,
    written: StatusContent | None,
    written_at: float | None,
    now: float,
    min_interval: float,
    refresh: float,
) -> float:
    """When to write ``content`` (loop time; ``<= now``: now): a change at most every
    ``min_interval`` after the last write, the same status again after ``refresh``."""
    if written_at is None:
        return now
    if content != written:
        return max(now, written_at + min_interval)
    return max(now, written_at + refresh)


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
