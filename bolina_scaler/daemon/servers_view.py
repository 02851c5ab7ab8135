"""The servers API's answers, ranked and encoded once per fleet, in a worker thread.

No I/O. ``GET /v1/servers`` at 10,000 servers re-sorted and re-encoded the fleet on every
request, on the daemon's only event loop: ~50-60 ms each, and with 8 clients polling, the
reaction to a Consul change went from a median of 59 ms to 4.9 s. Now:

* a ``ServersView`` belongs to one fleet (the snapshot's ``servers`` tuple: the watch hands the
  same tuple on while nothing changes), ranks it once and encodes each kind of answer (the
  statuses asked for; ``best``) once, on first use;
* the ranking and encoding run in one worker thread of their own, in slices of
  ``_SLICE`` servers, so the event loop gets the interpreter back between slices: a change in
  Consul is decided on while the answers to it are being prepared;
* every later request for the same fleet gets the same bytes: no work on the loop at all.

Thread safety: a view only reads its fleet (immutable ``Server`` values); what it computes is
published under a lock, once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import msgspec

from bolina_scaler.core.model import Server, Status

__all__ = ["ServersCache", "ServersView"]

_SLICE = 500
"""Servers encoded per call into msgspec, which holds the interpreter for the whole call."""


class _Port(msgspec.Struct, gc=False):
    TCP: int
    UDP: int | None


class _Address(msgspec.Struct, gc=False):
    IP: str
    Port: _Port


class _Metadata(msgspec.Struct, gc=False):
    ServerID: str
    Status: str


class _ServerJson(msgspec.Struct, gc=False):
    """One server in the seed's shape (``UDP`` is null when the server registers none)."""

    Address: _Address
    Metadata: _Metadata


_ENCODER = msgspec.json.Encoder()


def _shape(server: Server) -> _ServerJson:
    return _ServerJson(
        _Address(server.address, _Port(server.tcp_port, server.udp_port)),
        _Metadata(server.server_id, server.status.value),
    )


def encode_list(servers: Iterable[Server]) -> bytes:
    """A JSON list of servers in the seed's shape, encoded ``_SLICE`` at a time."""
    parts: list[bytes] = []
    batch: list[_ServerJson] = []
    for server in servers:
        batch.append(_shape(server))
        if len(batch) == _SLICE:
            parts.append(_ENCODER.encode(batch)[1:-1])
            batch = []
    if batch:
        parts.append(_ENCODER.encode(batch)[1:-1])
    return b"[" + b",".join(parts) + b"]"


def encode_one(server: Server) -> bytes:
    return _ENCODER.encode(_shape(server))


class ServersView:
    """The answers for one fleet; each built at most once (call from the worker thread)."""

    def __init__(self, servers: tuple[Server, ...]) -> None:
        self.servers = servers
        self._lock = threading.Lock()
        self._ranked: list[Server] | None = None
        self._listings: dict[frozenset[Status], bytes] = {}
        self._best: tuple[bytes | None] | None = None

    def ranked(self) -> list[Server]:
        """Best candidate first: Available, then Warning, then Critical; least loaded first.

        The order of ``FleetSnapshot.ranked`` (the simulator's load balancer uses that one).
        """
        with self._lock:
            if self._ranked is None:
                self._ranked = sorted(
                    self.servers,
                    key=lambda s: (s.status.rank, s.load if s.load is not None else 0.5, s.server_id),
                )
            return self._ranked

    def listing(self, wanted: frozenset[Status]) -> bytes:
        """The JSON list of the servers whose status is in ``wanted``, best first."""
        body = self._listings.get(wanted)
        if body is None:
            body = encode_list(s for s in self.ranked() if s.status in wanted)
            with self._lock:
                body = self._listings.setdefault(wanted, body)
        return body

    def best(self) -> bytes | None:
        """The best Available server as JSON, or None when none is Available."""
        if self._best is None:
            best = next((s for s in self.ranked() if s.status is Status.AVAILABLE), None)
            self._best = (None if best is None else encode_one(best),)
        return self._best[0]


class ServersCache:
    """The view of the newest fleet, and the worker thread that builds its answers.

    ``listing``/``best`` are awaited on the event loop: an answer already built is returned at
    once; one being built is awaited by every request that wants it (built once).
    """

    def __init__(self) -> None:
        self._view: ServersView | None = None
        self._pending: dict[object, asyncio.Future[bytes | None]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def view(self, servers: tuple[Server, ...]) -> ServersView:
        """The view of this fleet (a new one when the fleet changed)."""
        if self._view is None or self._view.servers is not servers:
            self._view = ServersView(servers)
            self._pending = {}
        return self._view

    async def listing(self, servers: tuple[Server, ...], wanted: frozenset[Status]) -> bytes:
        view = self.view(servers)
        return await self._built(view, wanted, lambda: view.listing(wanted)) or b"[]"

    async def best(self, servers: tuple[Server, ...]) -> bytes | None:
        view = self.view(servers)
        return await self._built(view, "best", view.best)

    async def _built(self, view: ServersView, key: object, build: Callable[[], bytes | None]) -> bytes | None:
        future = self._pending.get(key)
        if future is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="servers-api")
            future = asyncio.get_running_loop().run_in_executor(self._executor, build)
            self._pending[key] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            if self._view is view:
                self._pending.pop(key, None)  # the next request tries again
            raise

    def close(self) -> None:
        """Stop the worker thread (the HTTP server's cleanup)."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False, cancel_futures=True)
