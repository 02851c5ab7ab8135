"""What a client of the HTTP port may hold: a bounded number of connections, none of them idle for long.

Does I/O (it closes sockets). 1,100 clients that each sent half a request line and stopped once
kept 1,000 descriptors open for minutes: the daemon's own Kubernetes calls failed with "Too many
open files", no scale write went out for 15 s and ``/healthz`` timed out (the kubelet would have
restarted the pod in a loop). aiohttp's server has no header-read timeout of its own that every
supported version honours, so the rules are kept here, below aiohttp, on every connection:

* a connection is **busy** while a handler runs; otherwise it is **idle** (connecting, sending
  a request, reading an answer, between keep-alive requests). An idle connection is dropped
  ``idle_timeout`` after it became idle: a request line dribbled byte by byte, an answer never
  read, a keep-alive connection nobody uses, all end the same way;
* at most ``limit`` connections. Beyond it, the connection idle longest among those that may be
  dropped is dropped. One that may not: a busy one, one whose whole request head has arrived
  (its handler is about to run), and a **fresh** one, accepted so recently that the loop has not
  read its first bytes yet (two loop iterations: a probe's request is in its socket already,
  but the loop reads it only after it has admitted the connection). So a new connection is
  admitted, up to three times the limit (the kept ones, and two accept bursts of fresh ones,
  each at most the limit: asyncio's accepts per loop iteration), and then the surplus is
  dropped, the probe that has shown a whole request kept. Beyond that, a new connection is
  refused when nothing can be dropped.

Under a flood of connections that send half a request or nothing, a kubelet probe is admitted
and served while the flood's connections are dropped. ``limit`` defaults to a share of the
process's descriptor limit (``connection_limit``), so the HTTP port can never take the
descriptors the Consul watch and the Kubernetes calls need. ``ConnectionGuard.protocol_factory``
wraps aiohttp's low-level server (``web.Server``, a protocol factory) and ``middleware`` marks
the busy time of each request.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "ConnectionGuard", "connection_limit"]

log = structlog.get_logger("bolina_scaler.http")

IDLE_TIMEOUT = 10.0
"""Seconds a connection may spend not handling a request: to send one, or to read an answer."""
MAX_CONNECTIONS = 64
"""Kubelet probes, a metrics scraper and a few load balancers need a handful each."""
_CEILING = 3
"""Connections held at most, in limits: the kept ones and two accept bursts still fresh."""
_HEADERS_END = b"\r\n\r\n"
_REPORT_EVERY = 60.0
"""At most one log line per minute about connections dropped to keep the limit."""


def connection_limit() -> int:
    """``MAX_CONNECTIONS``, or a sixteenth of the descriptor limit when that is smaller (at least 4).

    A sixteenth: the HTTP port may hold up to three times its limit for two loop iterations, plus
    one accept burst being dropped (asyncio accepts ``limit`` per iteration): a quarter of the
    descriptors at the very most, the rest for the daemon's own connections.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 16))


@dataclass(eq=False, slots=True)
class _Connection:
    key: object
    """aiohttp's protocol of the connection (what ``request.protocol`` is)."""
    transport: asyncio.Transport
    idle_since: float
    fresh: bool = True
    """Accepted so recently that its first bytes may not have been read yet."""
    busy: bool = False
    """A handler is running for it."""
    requested: bool = False
    """A whole request head arrived since it became idle: its handler is about to run."""
    tail: bytes = b""
    """The last bytes received (a request head's end may straddle two reads)."""
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def droppable(self) -> bool:
        return not (self.fresh or self.busy or self.requested)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard told when it opens, reads and closes."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard, self._inner = guard, inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self._guard.opened(self._inner, transport):
            self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard.closed(self._inner):
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._guard.received(self._inner, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    """Counts and times the HTTP server's connections; see the module docstring."""

    def __init__(self, *, limit: int | None = None, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.limit = limit if limit is not None else connection_limit()
        self.idle_timeout = idle_timeout
        self._live: dict[object, _Connection] = {}
        """Admitted connections not being dropped, by their aiohttp protocol."""
        self._dropping: set[object] = set()
        """Admitted connections aborted here whose ``connection_lost`` has not come yet."""
        self.dropped_idle = 0
        """Connections dropped for staying idle past ``idle_timeout``."""
        self.evicted = 0
        """Idle connections dropped to keep the limit."""
        self.refused = 0
        """New connections refused at ``_CEILING`` times the limit, with nothing that could be dropped."""
        self.most = 0
        """The most connections held at once."""
        self._reported_at: float | None = None

    @property
    def open(self) -> int:
        """Connections admitted and not (being) dropped."""
        return len(self._live)

    def protocol_factory(self, server: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a protocol factory (``runner.server``) so that each connection is guarded."""
        return lambda: _Guarded(self, server())

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the connection busy while the handler runs (its idle clock stops)."""
        connection = self._live.get(request.protocol)
        if connection is None:  # served by something else (a test client), or being dropped
            return await handler(request)
        connection.busy = True
        if connection.timer is not None:
            connection.timer.cancel()
            connection.timer = None
        try:
            return await handler(request)
        finally:
            connection.busy = False
            if self._live.get(request.protocol) is connection:
                self._start_idle(connection)

    # -- connections -----------------------------------------------------------------------------

    def opened(self, key: object, transport: asyncio.Transport) -> bool:
        """A new connection: admit it (True), or refuse it at the ceiling with nothing to drop."""
        if len(self._live) >= _CEILING * self.limit and not self._drop_one():
            self.refused += 1
            transport.abort()
            self._report()
            return False
        connection = _Connection(key=key, transport=transport, idle_since=0.0)
        self._live[key] = connection
        self.most = max(self.most, len(self._live))
        self._start_idle(connection)
        self._trim()
        loop = asyncio.get_running_loop()
        # Its socket's reader is added in this iteration; the bytes already in it are read in the next.
        loop.call_soon(loop.call_soon, self._settled, connection)
        return True

    def received(self, key: object, data: bytes) -> None:
        """Bytes from a client: note whether a whole request head has arrived."""
        connection = self._live.get(key)
        if connection is None or connection.busy:
            return
        if not connection.requested:
            window = connection.tail + data
            connection.requested = _HEADERS_END in window
            connection.tail = window[-(len(_HEADERS_END) - 1) :]

    def closed(self, key: object) -> bool:
        """A connection ended; False if it was never admitted."""
        if key in self._dropping:
            self._dropping.discard(key)
            return True
        connection = self._live.pop(key, None)
        if connection is None:
            return False
        if connection.timer is not None:
            connection.timer.cancel()
        return True

    def close_all(self) -> None:
        """Drop every connection (the server is stopping)."""
        for key in list(self._live):
            self._drop(key)

    def _settled(self, connection: _Connection) -> None:
        connection.fresh = False
        if self._live.get(connection.key) is connection:
            self._trim()

    def _start_idle(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        connection.requested = False
        connection.tail = b""
        if connection.timer is not None:
            connection.timer.cancel()
        connection.timer = loop.call_later(self.idle_timeout, self._expire, connection)

    def _expire(self, connection: _Connection) -> None:
        connection.timer = None
        if self._live.get(connection.key) is connection and not connection.busy:
            self.dropped_idle += 1
            self._drop(connection.key)

    def _trim(self) -> None:
        """Drop droppable connections while there are more than ``limit``."""
        while len(self._live) > self.limit and self._drop_one():
            pass

    def _drop_one(self) -> bool:
        droppable = [c for c in self._live.values() if c.droppable]
        if not droppable:
            return False
        oldest = min(droppable, key=lambda c: c.idle_since)
        self.evicted += 1
        self._drop(oldest.key)
        self._report()
        return True

    def _drop(self, key: object) -> None:
        connection = self._live.pop(key)
        if connection.timer is not None:
            connection.timer.cancel()
        self._dropping.add(key)
        connection.transport.abort()

    def _report(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._reported_at is None or now - self._reported_at >= _REPORT_EVERY:
            self._reported_at = now
            log.warning(
                "http.connections_dropped",
                message="connection limit reached; dropping idle connections",
                limit=self.limit,
                evicted=self.evicted,
                refused=self.refused,
                dropped_idle=self.dropped_idle,
            )
