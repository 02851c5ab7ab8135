"""What the running daemon knows right now: written by the daemon, read by the HTTP API and tests.

No I/O. A plain mutable record on purpose: the daemon is its only writer and everything runs on
one event loop, so readers (``/readyz``, ``/v1/servers``, ``/v1/decision``, ``/metrics``) always
see a consistent picture between two awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from bolina_scaler.decision import Decision
from bolina_scaler.fleet import FleetSnapshot
from bolina_scaler.patching import Scale
from bolina_scaler.policy import Memory

__all__ = ["DaemonState"]


@dataclass(slots=True)
class DaemonState:
    """What the daemon knows right now; read by the HTTP server and tests, written by the daemon."""

    snapshot: FleetSnapshot | None = None
    snapshot_changed_at: float | None = None
    """Loop time at which the newest snapshot arrived (start of the reaction-latency clock)."""
    trusted_at: float | None = None
    """``observed_at`` of the newest trusted snapshot (``/readyz``)."""
    scale: Scale | None = None
    scale_read_at: float | None = None
    read_error: str | None = None
    """Why the last read of the scale failed; None once a read succeeded."""
    decision: Decision | None = None
    decided_at: float | None = None
    outcome: str | None = None
    """What the last evaluation did: ``patched``, ``unchanged``, ``dry_run``, ``follower``, ``conflict``,
    ``failed``."""
    memory: Memory = field(default_factory=Memory)
    patches: int = 0
    applied: deque[tuple[float, Decision]] = field(default_factory=lambda: deque(maxlen=100))
    """The last scale changes made (loop time, decision), oldest first."""
    last_patch_error: str | None = None
    evaluations: int = 0
    leader: bool = True
    """Whether this replica may patch (always True without leader election)."""
    identity: str | None = None
    """Our leader-election identity (None without leader election)."""
    holder: str | None = None
    """The Lease holder we last saw."""
    watch_task: asyncio.Task[None] | None = field(default=None, repr=False)
    """The running watch (``/healthz`` fails when it has ended)."""
