"""What the running daemon knows right now: the model ``/readyz``, ``/v1/servers``, ``/v1/decision``,
``/metrics`` and the tests read.

No I/O. A plain mutable record on purpose: the daemon's parts are its only writers and everything
runs on one event loop, so readers always see a consistent picture between two awaits. It is
only a read model: the watch hands snapshots to the evaluator through the ``Mailbox``, and the
policy's memory belongs to the ``Evaluator``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from bolina_scaler.actuator.scale import Scale
from bolina_scaler.core.decision import Decision
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.pause import Pause

__all__ = ["DaemonState"]


@dataclass(slots=True)
class DaemonState:
    """What the daemon knows right now; read by the HTTP server and tests, written by the daemon."""

    snapshot: FleetSnapshot | None = None
    """The newest Consul snapshot (trusted or not)."""
    trusted_at: float | None = None
    """``observed_at`` of the newest trusted snapshot (``/readyz``)."""
    trusted_wall_at: float | None = None
    """The same moment as Unix time (the metric ``last_trusted_snapshot_timestamp_seconds``)."""
    scale: Scale | None = None
    scale_read_at: float | None = None
    read_error: str | None = None
    """Why the last read of the scale failed; None once a read succeeded."""
    decision: Decision | None = None
    decided_at: float | None = None
    outcome: Outcome | None = None
    """What the last evaluation did with its decision."""
    policy_decision: Decision | None = None
    """While paused: what the policy itself decided (``decision`` is what was done instead)."""
    pause: Pause | None = None
    """The pause annotation in force (None: not paused, or not read yet: see ``pause_known``)."""
    pause_known: bool = False
    """Whether the Deployment's pause annotations were read (False before the first read)."""
    pause_error: str | None = None
    """Why the last read of the Deployment failed; None once one succeeded."""
    paused_since: float | None = None
    """When the pause in force began (loop time), as this replica saw it."""
    patch_error: str | None = None
    """Why the last patch failed; None once a patch succeeded."""
    patches: int = 0
    applied: deque[tuple[float, Decision]] = field(default_factory=lambda: deque(maxlen=100))
    """The last scale changes made (loop time, decision), oldest first."""
    evaluations: int = 0
    leader: bool = True
    """Whether this replica may patch (always True without leader election, never in dry run)."""
    shadow: bool = False
    """Dry run: this replica decides and explains, and never patches or touches the Lease."""
    identity: str | None = None
    """Our leader-election identity (None without leader election)."""
    holder: str | None = None
    """The Lease holder we last saw."""
    watch_task: asyncio.Task[None] | None = field(default=None, repr=False)
    """The running watch (``/healthz`` fails when it has ended)."""
