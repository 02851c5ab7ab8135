"""The signals that stop the daemon (SIGTERM, SIGINT, SIGHUP), honoured however early they come.

Does I/O in the sense of installing signal handlers. Kubernetes sends SIGTERM to stop a pod and a
rollout may do so while the process is still importing its libraries (about a second on a busy
node), before the event loop exists; a terminal that goes away sends SIGHUP. Left to Python's
defaults, either ends the process at once: no ``stopped`` line, and a held Lease that the other
replica must wait out. So the program's entry point (``bolina_scaler.__main__``) calls ``hold``
first thing for ``run``: a stop signal is noted, and ``cli.run`` honours it as soon as its loop
has its own handlers (``received``). Light on purpose: it imports nothing but the standard library.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["STOP_SIGNALS", "hold", "received"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_received: list[int] = []


def hold() -> None:
    """Note stop signals instead of dying on them, until the event loop's handlers take over."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note)


def received() -> int | None:
    """The first stop signal noted since ``hold``, if any."""
    return _received[0] if _received else None


def _note(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
