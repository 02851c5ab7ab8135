"""The HTTP port under hostile clients: half requests, answers never read, too many connections, odd bytes.

Real sockets on 127.0.0.1 against ``HttpServer`` (the daemon's server, with its ``ConnectionGuard``)
serving the real API around a hand-filled state, plus a ``/slow`` route that the test releases
when it wants handlers to stay busy. The timeouts run on looptime's clock: a 10 s idle timeout
passes in no real time. The fuzz run against the real daemon process, with a lowered file limit,
is in ``tests/integration/test_hostile.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bolina_scaler.config import parse_config
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import InstanceId, Server, ServerId, Status
from bolina_scaler.daemon.connections import ConnectionGuard, connection_limit
from bolina_scaler.daemon.http_api import HttpServer, build_app
from bolina_scaler.daemon.state import DaemonState
from bolina_scaler.metrics import Metrics

LIMIT = 4
IDLE = 10.0
GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _state(servers: int = 3) -> DaemonState:
    fleet = [
        Server(
            instance_id=InstanceId(f"b{n}"),
            server_id=ServerId(str(n)),
            address="10.0.0.1",
            tcp_port=9001,
            udp_port=None,
            node=f"n{n}",
            pod=None,
            status=Status.AVAILABLE,
        )
        for n in range(servers)
    ]
    return DaemonState(snapshot=FleetSnapshot.of(fleet, index=7, observed_at=0.0), watching=True)


@contextlib.asynccontextmanager
async def serving(
    *, limit: int = LIMIT, servers: int = 3, release: asyncio.Event | None = None
) -> AsyncIterator[HttpServer]:
    state = _state(servers)
    app = build_app(state=lambda: state, config=parse_config({}), metrics=Metrics(), clock=lambda: 1.0)
    gate = release or asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done")

    app.router.add_get("/slow", slow)
    async with HttpServer(app, host="127.0.0.1", port=0, guard=ConnectionGuard(limit=limit, idle_timeout=IDLE)) as s:
        yield s


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def ask(server: HttpServer, request: bytes = GET_HEALTHZ) -> bytes:
    reader, writer = await connect(server)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def dropped(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed this connection (EOF or reset), without sending an answer."""
    try:
        return await reader.read() == b""
    except ConnectionError:
        return True


@pytest.mark.looptime
class TestIdleConnections:
    async def test_half_a_request_line_is_dropped_after_the_idle_timeout(self) -> None:
        """A client that sends 'GET /heal' and stops is dropped idle_timeout later, not kept forever."""
        loop = asyncio.get_running_loop()
        async with serving() as server:
            reader, writer = await connect(server)
            writer.write(b"GET /heal")
            opened = loop.time()
            assert await dropped(reader)
            assert IDLE <= loop.time() - opened < IDLE + 1
            assert server.guard.dropped_idle == 1
            writer.close()

    async def test_a_request_dribbled_byte_by_byte_is_dropped_too(self) -> None:
        """Bytes that keep coming do not extend the deadline: the whole request must arrive in time."""
        loop = asyncio.get_running_loop()
        async with serving() as server:
            reader, writer = await connect(server)
            opened = loop.time()
            for byte in GET_HEALTHZ[:30]:
                writer.write(bytes([byte]))
                await asyncio.sleep(1)
                if reader.at_eof():
                    break
            assert await dropped(reader)
            assert loop.time() - opened < IDLE + 2
            writer.close()

    async def test_an_answer_never_read_is_dropped(self) -> None:
        """A client that asks for 10,000 servers and never reads: dropped, its buffers freed."""
        async with serving(servers=10_000) as server:
            _reader, writer = await connect(server)
            writer.write(b"GET /v1/servers HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(IDLE + 1)
            assert server.guard.open == 0
            writer.close()

    async def test_a_keep_alive_connection_is_closed_when_unused(self) -> None:
        """After an answer, a kept-alive connection has idle_timeout to send its next request."""
        async with serving() as server:
            reader, writer = await connect(server)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(IDLE + 1)
            assert server.guard.open == 0
            writer.close()


@pytest.mark.looptime
class TestConnectionLimit:
    async def test_a_probe_gets_through_a_full_house_of_idle_clients(self) -> None:
        """LIMIT idle clients hold every slot; a probe's connection drops the longest idle one and is served."""
        async with serving() as server:
            idle = []
            for _ in range(LIMIT):
                reader, writer = await connect(server)
                writer.write(b"GET /")
                idle.append((reader, writer))
                await asyncio.sleep(0.1)
            assert (await ask(server)).startswith(b"HTTP/1.1 200")
            assert await dropped(idle[0][0])  # the oldest
            assert server.guard.evicted == 1
            for _, writer in idle:
                writer.close()

    async def test_every_busy_and_a_newcomer_that_says_nothing(self) -> None:
        """LIMIT requests being handled: a new connection that sends nothing is dropped as soon as
        its bytes could have been read; the busy ones finish."""
        release = asyncio.Event()
        async with serving(release=release) as server:
            busy = []
            for _ in range(LIMIT):
                reader, writer = await connect(server)
                writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                busy.append((reader, writer))
            await asyncio.sleep(0.5)
            reader, writer = await connect(server)
            assert await dropped(reader)
            assert server.guard.evicted == 1
            writer.close()
            release.set()
            for reader, writer in busy:
                assert (await reader.read()).endswith(b"done")
                writer.close()

    async def test_thousands_of_connections_never_hold_more_than_the_limit(self) -> None:
        """300 clients connect and stall: the server holds at most three times LIMIT, and that only
        until their first bytes are read; a probe is served in the middle of them."""
        async with serving() as server:
            clients = []
            most = 0
            for _ in range(300):
                _reader, writer = await connect(server)
                writer.write(b"GET / HTTP/1.1\r\n")
                clients.append(writer)
                await asyncio.sleep(0)
                most = max(most, server.guard.open)
            assert most <= 3 * LIMIT
            assert server.guard.most <= 3 * LIMIT
            assert (await ask(server)).startswith(b"HTTP/1.1 200")
            for writer in clients:
                writer.close()

    def test_the_default_limit_leaves_most_descriptors_to_the_daemon(self) -> None:
        """The limit is at most a sixteenth of the process's descriptor limit (and at most 64)."""
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert 4 <= connection_limit() <= max(4, soft // 16)
        assert connection_limit() <= 64


class _Transport:
    """Just enough of a transport for the guard: it records being aborted."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class TestGuardRules:
    async def test_a_burst_is_kept_until_its_bytes_are_read_then_trimmed(self) -> None:
        """A burst of 3 x LIMIT new connections in one iteration is admitted (a probe may be among
        them); once their first bytes could have been read, those beyond LIMIT that sent nothing or
        half a request are dropped, oldest first, and the one that sent a whole request head is kept."""
        guard = ConnectionGuard(limit=LIMIT, idle_timeout=IDLE)
        transports = [_Transport() for _ in range(3 * LIMIT)]
        for n, transport in enumerate(transports):
            assert guard.opened(n, transport)  # type: ignore[arg-type]
        assert not any(t.aborted for t in transports)
        probe = 3 * LIMIT - 1  # the newest: the first to go if it were judged by age alone
        guard.received(probe, b"GET /healthz HTTP/1.1\r")  # its head, in two reads
        guard.received(probe, b"\nHost: x\r\n\r\n")
        guard.received(0, b"GET /hea")  # half a request line
        await _iterations(3)
        assert guard.open == LIMIT
        assert not transports[probe].aborted
        assert transports[0].aborted
        assert guard.evicted == 2 * LIMIT
        guard.close_all()

    async def test_beyond_three_times_the_limit_with_nothing_to_drop_a_newcomer_is_refused(self) -> None:
        """Three times the limit, all with whole requests waiting: a new connection is refused."""
        guard = ConnectionGuard(limit=LIMIT, idle_timeout=IDLE)
        for n in range(3 * LIMIT):
            assert guard.opened(n, _Transport())  # type: ignore[arg-type]
            guard.received(n, GET_HEALTHZ)
        newcomer = _Transport()
        assert not guard.opened("late", newcomer)  # type: ignore[arg-type]
        assert newcomer.aborted
        assert guard.refused == 1
        guard.close_all()


_junk = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
            b"GET /\r\n\r\n",  # HTTP/0.9
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20_000 + b"\r\n\r\n",
            b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
            b"POST /v1/servers HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc",
            b"BREW /v1/servers?status=" + b"%ff" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/servers?status=" + b"available," * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\n" * 1000,
        ]
    ),
    st.builds(lambda head, tail: head + tail, st.sampled_from([b"GET / HTTP/1.1\r\n", b"GET "]), st.binary()),
)


class TestOddBytes:
    async def test_a_request_aiohttp_cannot_parse_is_not_an_error_line(self, caplog: pytest.LogCaptureFixture) -> None:
        """A 400 for junk is the client's problem: no error line with a traceback per bad request."""
        async with serving() as server:
            with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
                answer = await ask(server, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 400")
        assert [r for r in caplog.records if r.name == "aiohttp.server"] == []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(_junk, min_size=1, max_size=5))
    def test_any_bytes_leave_the_server_answering(self, requests: list[bytes]) -> None:
        """Whatever a client sends (and then closes): /healthz still answers 200 right after."""

        async def scenario() -> None:
            async with serving() as server:
                for junk in requests:
                    reader, writer = await connect(server)
                    writer.write(junk)
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    with contextlib.suppress(ConnectionError, TimeoutError):
                        await asyncio.wait_for(reader.read(65536), 0.2)
                    writer.close()
                assert (await ask(server)).startswith(b"HTTP/1.1 200")

        asyncio.run(scenario())
