"""A flood of hostile HTTP clients, in a process of its own (as an attacker is): ``python -m
tests.integration.flood PORT SECONDS`` prints what it did as one JSON line when it stops.

``HALF_OPEN`` connections that send half a request line (one that is dropped is opened again at
once), one in 20 of them asking for ``/v1/servers?all=1`` and never reading, and short
connections that send odd bytes. In a process of its own, so that it does not take the
interpreter from the test's probe, which must behave as a kubelet does (its request sent the
moment it is connected).
"""

from __future__ import annotations

import contextlib
import json
import random
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HALF_OPEN = 1100

_JUNK = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"GET /\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
    b"POST /v1/servers HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc",
    b"GET /v1/servers?status=" + b"%ff" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n" * 1000,
    bytes(range(256)) * 8,
]


@dataclass
class Flood:
    """Hostile clients in two threads: ``HALF_OPEN`` connections that send half a request line (one
    that is dropped is opened again at once), slow readers that ask for ``/v1/servers?all=1`` and
    never read, and short connections that send odd bytes."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    opened: int = 0
    dropped: int = 0
    junk_sent: int = 0
    most_held: int = 0
    errors: list[str] = field(default_factory=list)

    def __enter__(self) -> Flood:
        self._threads = [
            threading.Thread(target=self._guarded, args=(work,), daemon=True) for work in (self._hold, self._junk)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # pragma: no cover - shows in the assertion on errors
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _connect(self, selector: selectors.BaseSelector, payload: bytes) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", self.port))
        selector.register(sock, selectors.EVENT_WRITE, payload)
        self.opened += 1

    def _hold(self) -> None:
        selector = selectors.DefaultSelector()
        parked: dict[socket.socket, float] = {}  # slow readers: asked, and never read
        slow = b"GET /v1/servers?all=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            while not self.stop.is_set():
                while len(selector.get_map()) + len(parked) < HALF_OPEN:
                    self._connect(selector, slow if self.opened % 20 == 0 else b"GET /heal")
                self.most_held = max(self.most_held, len(selector.get_map()) + len(parked))
                now = time.monotonic()
                for sock, since in list(parked.items()):
                    if now - since > 12:  # beyond the daemon's idle timeout: it has dropped it
                        del parked[sock]
                        sock.close()
                for key, mask in selector.select(timeout=0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if key.data:  # connected (or failed): send the request
                        if not mask & selectors.EVENT_WRITE:
                            continue
                        try:
                            sock.send(key.data)
                        except OSError:
                            self._close(selector, sock)
                            continue
                        if key.data == slow:
                            selector.unregister(sock)
                            parked[sock] = now
                        else:
                            selector.modify(sock, selectors.EVENT_READ, b"")
                    else:  # half a request line sent: the daemon may only close it
                        try:
                            data = sock.recv(4096)
                        except OSError:
                            data = b""
                        if not data:
                            self._close(selector, sock)
        finally:
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
            for sock in parked:
                sock.close()

    def _close(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()
        self.dropped += 1

    def _junk(self) -> None:
        rng = random.Random(13)
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(rng.choice(_JUNK) + bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
                    sock.settimeout(0.5)
                    with contextlib.suppress(OSError):
                        sock.recv(65536)
                self.junk_sent += 1
            except OSError:
                pass
            time.sleep(0.02)


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    with Flood(port) as flood:
        time.sleep(seconds)
    print(json.dumps({"opened": flood.opened, "dropped": flood.dropped, "junk_sent": flood.junk_sent,
                      "most_held": flood.most_held, "errors": flood.errors}))  # fmt: skip


if __name__ == "__main__":
    main()
