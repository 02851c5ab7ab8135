"""The signals that stop the daemon (SIGTERM, SIGINT, SIGHUP), honoured however early or late they come.

Does I/O in the sense of installing signal handlers and masking signals. Kubernetes sends SIGTERM
to stop a pod and a rollout may do so while the process is still importing its libraries (about a
second on a busy node), before the event loop exists; a terminal that goes away sends SIGHUP. Left
to Python's defaults, either ends the process at once: no ``stopped`` line, and a held Lease that
the other replica must wait out. So the program's entry point (``bolina_scaler.__main__``) calls
``hold`` first thing for ``run`` and ``report``: a stop signal is noted, and the command honours it
as soon as its loop has its own handlers (``received``).

The same holds at the other end. Closing an event loop puts the defaults back for the signals it
handled, and so does Python's own finalization for every signal with a Python handler, while the
process is still finishing; a second SIGTERM or SIGINT then killed it (exit −15 or −2) after a
clean stop. ``run_held`` is ``asyncio.run`` without that window: when the command's coroutine is
done the stop signals are blocked, and they stay blocked until the process exits (it is stopping
anyway: one that comes meanwhile is dropped with it). Light on purpose: it imports nothing but the
standard library, and ``asyncio`` only when ``run_held`` is called.
"""

from __future__ import annotations

import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

__all__ = ["STOP_SIGNALS", "hold", "received", "run_held"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_T = TypeVar("_T")

_received: list[int] = []


def hold() -> None:
    """Note stop signals instead of dying on them, until the event loop's handlers take over."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note)


def received() -> int | None:
    """The first stop signal noted since ``hold``, if any."""
    return _received[0] if _received else None


def run_held(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)`` after which no stop signal is fatal, until the process has exited.

    ``main`` installs the loop's own handlers (``loop.add_signal_handler``) and checks ``received``
    for a signal noted before them. Once ``main`` is done the stop signals are blocked, for the
    loop's teardown and the interpreter's: this returns with them still blocked, for a caller that
    is about to exit (the ``run`` and ``report`` commands).
    """
    import asyncio

    async def blocking_when_done() -> _T:
        try:
            return await main
        finally:
            _block()

    hold()
    try:
        return asyncio.run(blocking_when_done())
    finally:
        hold()  # the closed loop put the defaults back; where signals cannot be blocked, this is all


def _block() -> None:
    # This thread's mask: once the loop is closed its executor's threads are gone, and it is the only one.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _note(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
