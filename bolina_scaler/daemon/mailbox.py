"""The hand-over between the watch and the evaluator: only the newest snapshot is kept.

No I/O (an ``asyncio.Event`` to wake the evaluator). Bursts coalesce: the evaluator never works
on a snapshot that is already outdated. It owns the newest snapshot and the moment of the newest
trusted one (``/readyz``). It also remembers when the data last *changed*
(``FleetSnapshot.differs_from``), which starts the reaction-latency clock; an answer that only
confirms the fleet (a blocking query whose wait ran out) wakes the evaluator without restarting it.
"""

from __future__ import annotations

import asyncio
import contextlib

from bolina_scaler.core.fleet import FleetSnapshot

__all__ = ["Mailbox"]


class Mailbox:
    """``put`` from the watch, ``wait`` then ``take`` in the evaluator."""

    def __init__(self) -> None:
        self.snapshot: FleetSnapshot | None = None
        """The newest snapshot (trusted or not)."""
        self.trusted_at: float | None = None
        """``observed_at`` of the newest trusted snapshot."""
        self.changed_at: float | None = None
        """Loop time at which the newest snapshot that changed something arrived."""
        self._taken_change: float | None = None
        self._wake = asyncio.Event()

    def put(self, snapshot: FleetSnapshot, *, now: float) -> None:
        previous = self.snapshot
        if previous is None or snapshot.differs_from(previous):
            self.changed_at = now
        self.snapshot = snapshot
        if snapshot.trusted:
            self.trusted_at = snapshot.observed_at
        self._wake.set()

    def poke(self) -> None:
        """Wake the evaluator without new data (leadership changed: re-read and decide)."""
        self._wake.set()

    async def wait(self, *, within: float | None) -> None:
        """Until something was put or poked, or ``within`` seconds (None: forever)."""
        if self._wake.is_set():
            return
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, one more
        # loop turn between the watch's set() and this task running.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._wake.wait()

    def take(self) -> tuple[FleetSnapshot | None, float | None]:
        """The newest snapshot, and when its change arrived if no evaluation has reacted to it yet."""
        self._wake.clear()
        changed_at = self.changed_at
        reacting_to = changed_at if changed_at != self._taken_change else None
        self._taken_change = changed_at
        return self.snapshot, reacting_to
