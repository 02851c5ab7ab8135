"""Keeps the ``bolina-scaler/status`` annotation current while this replica leads.

Does I/O only through its ``StatusAnnotation``. The daemon pokes it after every evaluation and
every change of role; it asks ``content()`` for the status now (None: nothing to write: not the
leader, or no decision yet) and writes it when ``core.scaler_status.due`` says so: a change at
most every ``status.min_interval``, the same status again every ``status.refresh``. A failed
write waits a backoff growing from ``min_interval`` to ``refresh`` (a Role without the rule
costs one request every 5 minutes, and one log line), and never touches scaling or readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

from bolina_scaler.actuator.call import KubernetesError
from bolina_scaler.actuator.status_annotation import StatusAnnotation, Written
from bolina_scaler.config import StatusConfig
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.core.scaler_status import StatusContent, due, encode

__all__ = ["StatusWriter"]

_SLACK = 1e-3


class StatusWriter:
    """``run()`` as a task; ``poke()`` when the status may have changed."""

    def __init__(
        self,
        config: StatusConfig,
        *,
        annotation: StatusAnnotation,
        content: Callable[[], StatusContent | None],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_written: Callable[[Written], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.writes = 0
        """Writes that succeeded."""
        self._annotation = annotation
        self._content = content
        self._clock = clock
        self._wall = wall_clock
        self._on_written = on_written
        self._poked = asyncio.Event()
        self._backoff = Backoff(config.min_interval, config.refresh, rng or random.Random())
        self._written: StatusContent | None = None
        self._written_at: float | None = None
        self._seen: StatusContent | None = None
        self._since: float = wall_clock()
        """When the status last changed (Unix time): the annotation's ``since``."""
        self._not_before: float | None = None
        """After a failed write: nothing before this (loop time)."""

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        while True:
            self._poked.clear()
            at = self._next()
            if at is None or at - self._clock() > _SLACK:
                await self._poked_or(None if at is None else at - self._clock())
                continue
            await self._write()

    def _next(self) -> float | None:
        """When the next write is due (loop time), or None: nothing to write until poked."""
        content = self._content()
        if content is None:
            return None
        if content != self._seen:
            self._seen, self._since = content, self._wall()
        now = self._clock()
        at = due(
            content,
            written=self._written,
            written_at=self._written_at,
            now=now,
            min_interval=self.config.min_interval,
            refresh=self.config.refresh,
        )
        return at if self._not_before is None else max(at, self._not_before)

    async def _poked_or(self, seconds: float | None) -> None:
        """Wait for a poke, or ``seconds`` (None: for ever). ``asyncio.timeout``, not ``wait_for``:
        on Python 3.11 a ``wait_for`` cancelled just as the event is set returns instead of raising,
        and this loop would outlive the daemon's shutdown (a poke comes with the Lease's release)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._poked.wait()

    async def _write(self) -> None:
        content = self._seen
        if content is None:  # pragma: no cover - _next saw one
            return
        text = encode(content, since=self._since, updated=self._wall())
        try:
            written = await self._annotation.write(text)
        except KubernetesError:  # logged once by the annotation's ProblemLog
            self._not_before = self._clock() + self._backoff.next_delay()
            return
        self._backoff.reset()
        self._not_before = None
        self._written, self._written_at = content, self._clock()
        self.writes += 1
        if self._on_written is not None:
            self._on_written(written)
