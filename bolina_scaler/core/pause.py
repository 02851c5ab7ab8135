"""The pause switch: annotations on the scaled Deployment that stop the scaler from changing it.

Pure: annotations in, a ``Pause`` out; a decision and a pause in, the decision taken while paused
out. Modelled on KEDA's ``autoscaling.keda.sh/paused`` and ``paused-replicas``::

    kubectl -n bolina annotate deploy bolina bolina-scaler/paused=true          # hold where it is
    kubectl -n bolina annotate deploy bolina bolina-scaler/paused-replicas=3    # go to 3, hold there
    kubectl -n bolina annotate deploy bolina bolina-scaler/paused- bolina-scaler/paused-replicas-

While paused the daemon keeps watching Consul, evaluating and explaining (the policy's own
decision is in the message), and patches nothing, or only to the held count. ``paused-replicas``
wins over ``paused`` (as in KEDA); ``paused: "false"`` alone resumes.

Bounds apply to the held count too: one above ``max_replicas`` is held at ``max_replicas`` (a
typo, ``30000`` for ``3``, is not carried out), and the clamp says so in the log line and in
``/v1/decision``. ``min_replicas`` does not apply: ``paused-replicas: "0"`` is how a person takes
the fleet down on purpose.

A value that cannot be read still pauses: a person who wrote a pause annotation wanted the
scaler to stop, and not scaling is the safe reading. The ``problem`` says what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from bolina_scaler.core.decision import Clamp, Decision, Direction, Reason

__all__ = ["MAX_HELD_REPLICAS", "PAUSED", "PAUSED_REPLICAS", "Pause", "pause_of", "paused_decision"]

PAUSED: Final = "bolina-scaler/paused"
PAUSED_REPLICAS: Final = "bolina-scaler/paused-replicas"
MAX_HELD_REPLICAS: Final = 2**31 - 1
"""``spec.replicas`` is an int32."""

_COUNT: Final = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() accepts "²"


@dataclass(frozen=True, slots=True)
class Pause:
    """Scaling is paused. ``replicas``: the count to hold (None: whatever it is now)."""

    source: str
    """The annotation that paused it, as a person would type it: ``bolina-scaler/paused=true``."""
    replicas: int | None = None
    problem: str | None = None
    """What was wrong with an annotation that paused anyway (e.g. ``paused-replicas: "many"``)."""

    def describe(self) -> str:
        held = f"holding at {self.replicas}" if self.replicas is not None else "holding at the current count"
        return f"paused by {self.source}: {held}" + (f" ({self.problem})" if self.problem else "")


def pause_of(annotations: Mapping[str, str] | None) -> Pause | None:
    """The pause the Deployment's annotations ask for, or None (scaling goes on)."""
    annotations = annotations or {}
    held = annotations.get(PAUSED_REPLICAS)
    if held is not None:
        text = held.strip()
        source = f"{PAUSED_REPLICAS}={_cut(held)}"
        if _COUNT.fullmatch(text) and int(text) <= MAX_HELD_REPLICAS:
            return Pause(source, replicas=int(text))
        return Pause(
            source,
            problem=f"{PAUSED_REPLICAS}: {_shown(held)} is not a replica count (0 to {MAX_HELD_REPLICAS}); "
            "paused at the current count instead",
        )
    paused = annotations.get(PAUSED)
    if paused is None:
        return None
    value = paused.strip().lower()
    if value == "false":
        return None
    source = f"{PAUSED}={_cut(paused)}"
    if value == "true":
        return Pause(source)
    return Pause(source, problem=f'{PAUSED}: {_shown(paused)} is not "true" or "false"; paused anyway')


def paused_decision(decision: Decision, pause: Pause, *, max_replicas: int) -> Decision:
    """What is done while paused: hold (or go to the held count, at most ``max_replicas``); the
    policy's view in the message."""
    current = decision.current
    target = current if pause.replicas is None else pause.replicas
    clamps: tuple[Clamp, ...] = ()
    if target > max_replicas and pause.replicas is not None:
        clamps = (Clamp("max_replicas", target, max_replicas, detail=f"the held count of {PAUSED_REPLICAS}"),)
        target = max_replicas
    if decision.changes_scale:
        wanted = f"the policy would scale {current} → {decision.desired}"
    else:
        wanted = f"the policy would keep {current}"
    policy = f"{wanted} ({decision.reason}: {decision.message})"
    if target == current:
        direction, done = Direction.HOLD, f"holding at {current}"
    else:
        direction = Direction.UP if target > current else Direction.DOWN
        done = f"scaling to the held count {target}"
    if clamps:
        done += f" ({PAUSED_REPLICAS} asks for {pause.replicas}, above max_replicas {max_replicas})"
    problem = f"; {pause.problem}" if pause.problem else ""
    return replace(
        decision,
        desired=target,
        direction=direction,
        reason=Reason.PAUSED,
        message=f"paused by {pause.source}: {done}{problem}; {policy}",
        clamps=clamps,
    )


def _cut(value: str) -> str:
    """An annotation value as logs show it: one line, cut if a person pasted a novel into it."""
    value = " ".join(value.split())
    return value if len(value) <= 40 else value[:40] + "…"


def _shown(value: str) -> str:
    return repr(_cut(value))
