"""Hostile Consul answers: every header and every body is input.

No answer may end the process (an exception other than ``Failure`` out of ``read_answer``), and
an answer that cannot be trusted never changes the scale. Hypothesis generates the headers both
from the values Consul sends and from any text at all (``²`` passes ``str.isdigit`` but not
``int()``; 5,000 digits pass ``isdigit`` but exceed ``int()``'s limit; ``2**64 + 7`` is no index).
"""

from __future__ import annotations

import contextlib
import json
import re
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bolina_scaler.config import ConsulConfig, PolicyConfig, parse_config
from bolina_scaler.core.decision import Direction
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.memory import Memory
from bolina_scaler.core.policy import decide
from bolina_scaler.source import ConsulWatch
from bolina_scaler.source.answer import MAX_UINT64, Failure, Response, read_answer, uint64
from bolina_scaler.source.transport import _inflate_into, _inflater
from bolina_scaler.testing.server import LocalServer

CONFIG = ConsulConfig(address="http://127.0.0.1:8500", max_last_contact=10)
POLICY = PolicyConfig(min_replicas=1, max_replicas=20, target_available_ratio=0.5, scale_down_ratio=0.8)


def _entry(n: int, status: str = "passing") -> dict[str, Any]:
    return {
        "Node": {"Node": f"node-{n}", "Address": f"10.0.0.{n + 1}"},
        "Service": {"ID": f"bolina-{n}", "Port": 9001},
        "Checks": [{"CheckID": f"service:bolina-{n}", "ServiceID": f"bolina-{n}", "Status": status}],
    }


# One Available server of four: share 0.25 < 0.5, so a trusted answer scales up.
BODY = orjson.dumps([_entry(0), _entry(1, "warning"), _entry(2, "warning"), _entry(3, "critical")])

_numbers = st.one_of(
    st.integers(min_value=-5, max_value=2**70).map(str),
    st.sampled_from(["²", "٣", "1_000", " 7", "7 ", "+7", "1e3", "0x10", "", "9" * 5000, "0" * 25 + "7"]),
    st.text(max_size=30),
)
_flags = st.one_of(st.sampled_from(["true", "false", "True", "FALSE", "", "yes", "1"]), st.text(max_size=10))


def _header(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), values)


_headers = st.fixed_dictionaries(
    {
        "X-Consul-Index": _header(_numbers),
        "X-Consul-KnownLeader": _header(_flags),
        "X-Consul-LastContact": _header(_numbers),
        "X-Consul-Results-Filtered-By-ACLs": _header(_flags),
        "X-Consul-Query-Backend": _header(st.sampled_from(["streaming", "blocking-query", "x"])),
    }
)


def _digits(text: str) -> int | None:
    """A uint64 as Consul writes one (Go's ``strconv.FormatUint``: at most 20 ASCII digits), judged
    independently of ``uint64``."""
    if not re.fullmatch(r"[0-9]{1,20}", text, flags=re.ASCII):
        return None
    return int(text) if int(text) <= MAX_UINT64 else None


def _consul_would_send(headers: dict[str, str]) -> bool:
    """Whether every header carries a value Consul sends, and none of them limits the trust."""
    index = _digits(headers["X-Consul-Index"]) if "X-Consul-Index" in headers else None
    if index is None or index < 1:
        return False
    if headers.get("X-Consul-Results-Filtered-By-ACLs", "false").lower() != "false":
        return False
    if headers.get("X-Consul-Query-Backend") == "streaming":
        return True
    if headers.get("X-Consul-KnownLeader", "true").lower() != "true":
        return False
    contact = headers.get("X-Consul-LastContact")
    return contact is None or ((ms := _digits(contact)) is not None and ms <= 10_000)


class TestUint64:
    @given(st.one_of(_numbers, st.text()))
    @example("²")
    @example("9" * 5000)
    @example(str(2**64 + 7))
    def test_any_text_is_a_uint64_or_none(self, text: str) -> None:
        """Never raises; gives exactly the ASCII-digit values below 2^64."""
        assert uint64(text) == _digits(text)

    @pytest.mark.parametrize(
        ("text", "value"),
        [("1", 1), ("0", 0), (str(MAX_UINT64), MAX_UINT64), (str(2**64), None), ("²", None), ("", None)],
    )
    def test_bounds(self, text: str, value: int | None) -> None:
        """0 and 2^64 - 1 are uint64s; 2^64, superscripts and nothing are not."""
        assert uint64(text) == value


class TestReadAnswer:
    @settings(max_examples=500, deadline=None)
    @given(_headers)
    @example({"X-Consul-Index": "²"})
    @example({"X-Consul-Index": "9" * 5000})
    @example({"X-Consul-Index": "7", "X-Consul-LastContact": "²"})
    @example({"X-Consul-Index": str(2**64 + 7)})
    @example({"X-Consul-Index": "7", "X-Consul-Results-Filtered-By-ACLs": "true"})
    def test_untrusted_headers_never_change_the_scale(self, headers: dict[str, str | None]) -> None:
        """Any headers: a Failure or an answer; trusted only when Consul could have sent them all,
        and an untrusted answer holds the scale."""
        present = {k: v for k, v in headers.items() if v is not None}
        try:
            answer = read_answer(Response(200, present, BODY), CONFIG, observed_at=0.0)
        except Failure as failure:
            problem = str(failure)
        else:
            problem = None
        if problem is not None:
            assert "X-Consul-Index" in problem
            assert not _consul_would_send(present)
            return
        snapshot = answer.snapshot()
        assert snapshot.trusted == _consul_would_send(present)
        assert 1 <= snapshot.index <= MAX_UINT64
        decision, _ = decide(fleet=snapshot, current=4, config=POLICY, memory=Memory(), now=1.0)
        if snapshot.trusted:
            assert decision.direction is Direction.UP
        else:
            assert decision.desired == 4
            assert decision.direction is Direction.HOLD

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.integers(100, 599))
    def test_any_body_and_status_give_an_answer_or_a_failure(self, body: bytes, code: int) -> None:
        """Whatever the body and status code, the answer is judged, never an exception."""
        with contextlib.suppress(Failure):
            read_answer(Response(code, {"X-Consul-Index": "5"}, body), CONFIG, observed_at=0.0)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.builds(_entry, st.integers(0, 5), st.sampled_from(["passing", "warning", "critical"])),
                st.builds(_entry, st.integers(0, 5), st.text(max_size=8)),  # any status at all
                st.builds(  # any port at all, 2^70 included
                    lambda n, port: {**_entry(n), "Service": {"ID": f"bolina-{n}", "Port": port}},
                    st.integers(0, 5),
                    st.integers(),
                ),
                st.fixed_dictionaries({"Node": st.none(), "Service": st.just({}), "Checks": st.just([])}),
                st.integers(),
                st.text(max_size=5),
            ),
            max_size=8,
        )
    )
    def test_untrusted_bodies_never_change_the_scale(self, entries: list[Any]) -> None:
        """Any list of entries, some broken or duplicated, numbers beyond 64 bits: an untrusted
        snapshot holds the scale."""
        body = json.dumps(entries).encode()  # the standard library writes integers of any size
        try:
            answer = read_answer(Response(200, {"X-Consul-Index": "9"}, body), CONFIG, observed_at=0.0)
        except Failure:
            return
        snapshot = answer.snapshot()
        decision, _ = decide(fleet=snapshot, current=4, config=POLICY, memory=Memory(), now=1.0)
        if not snapshot.trusted:
            assert (decision.desired, decision.direction) == (4, Direction.HOLD)

    def test_acl_filtered_answer_names_the_fix(self) -> None:
        """Entries hidden by ACLs: untrusted, and the problem says what the token lacks."""
        headers = {"X-Consul-Index": "7", "X-Consul-Results-Filtered-By-ACLs": "true"}
        answer = read_answer(Response(200, headers, BODY), CONFIG, observed_at=0.0)
        assert answer.stale
        assert "node_prefix" in answer.stale[0]

    def test_long_header_values_are_cut_in_messages(self) -> None:
        """A kilobyte header is named, not copied whole into the trust problem."""
        with pytest.raises(Failure) as failure:
            read_answer(Response(200, {"X-Consul-Index": "x" * 10_000}, BODY), CONFIG, observed_at=0.0)
        assert len(str(failure.value)) < 200


# ----------------------------------------------------------------------------- the body's size


class _Scripted(LocalServer):
    """A health endpoint that answers what the test scripts: headers, and chunks made on demand
    (a 200 MB answer is never held by the test either)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.chunks: Callable[[], Iterator[bytes]] = lambda: iter([BODY])
        self.sent = 0

    async def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/health/service/bolina", self._health)
        return app

    async def _health(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Consul-Index": "7", **self.headers})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for chunk in self.chunks():
                await response.write(chunk)
                self.sent += len(chunk)
            await response.write_eof()
        return response


def _padded(total: int) -> Callable[[], Iterator[bytes]]:
    """A JSON list padded with spaces to ``total`` bytes, made 64 KiB at a time."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        left = total - 2
        while left > 0:
            yield b" " * min(left, 65536)
            left -= 65536
        yield b"]"

    return chunks


def _gzipped(total: int) -> Callable[[], Iterator[bytes]]:
    """``total`` bytes of padding, gzipped as it is made (a ~1000:1 'bomb')."""

    def chunks() -> Iterator[bytes]:
        squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
        yield squeeze.compress(b"[")
        for _ in range(total // 1_048_576):
            yield squeeze.compress(b" " * 1_048_576)
        yield squeeze.compress(b"]") + squeeze.flush()

    return chunks


LIMIT = 1_048_576  # the derived limit at the default max_replicas


@pytest.fixture
async def scripted() -> AsyncIterator[_Scripted]:
    async with _Scripted() as server:
        yield server


async def _fetch_peak(server: _Scripted, **consul: Any) -> tuple[FleetSnapshot, int]:
    """One query; returns the snapshot and the peak of Python memory allocated while it ran."""
    config = parse_config({"consul": {"address": server.url, **consul}}).consul
    async with ConsulWatch(config) as watch:
        tracemalloc.start()
        try:
            snapshot = await watch.fetch()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return snapshot, peak


class TestBodyLimit:
    def test_the_limit_follows_max_replicas(self) -> None:
        """Unset, consul.max_answer_bytes is derived from policy.max_replicas (and shown as such)."""
        assert parse_config({}).consul.max_answer_bytes == LIMIT
        assert parse_config({"policy": {"max_replicas": 1000}}).consul.max_answer_bytes == 1000 * 16 * 1024
        assert parse_config({"consul": {"max_answer_bytes": 123456}}).consul.max_answer_bytes == 123456
        assert parse_config({}).redacted()["consul"]["max_answer_bytes"] == LIMIT

    @pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
    async def test_an_answer_beyond_the_limit_is_refused_early(self, scripted: _Scripted, declared: bool) -> None:
        """200 MB: a failed query after about one limit's worth was read, and memory to match."""
        total = 200 * 1_048_576
        scripted.chunks = _padded(total)
        if declared:
            scripted.headers = {"Content-Length": str(total)}
        snapshot, peak = await _fetch_peak(scripted)
        assert not snapshot.trusted
        assert "consul answer too large" in str(snapshot.trust)
        assert "max_answer_bytes (1048576 bytes" in str(snapshot.trust)
        assert peak < 4 * LIMIT, peak

    async def test_a_gzip_bomb_is_inflated_only_to_the_limit(self, scripted: _Scripted) -> None:
        """~200 KB of gzip inflating to 200 MB, unasked for: inflated up to the limit, then refused."""
        scripted.chunks = _gzipped(200 * 1_048_576)
        scripted.headers = {"Content-Encoding": "gzip"}
        snapshot, peak = await _fetch_peak(scripted)
        assert "consul answer too large" in str(snapshot.trust)
        assert peak < 4 * LIMIT, peak

    async def test_gzip_within_the_limit_is_read(self, scripted: _Scripted) -> None:
        """A gzip answer (consul.compress, or a proxy's) within the limit gives the fleet."""
        squeeze = zlib.compressobj(6, zlib.DEFLATED, 31)
        scripted.chunks = lambda: iter([squeeze.compress(BODY) + squeeze.flush()])
        scripted.headers = {"Content-Encoding": "gzip"}
        snapshot, _ = await _fetch_peak(scripted, compress=True)
        assert snapshot.trusted
        assert snapshot.registered == 4

    @pytest.mark.parametrize(
        ("encoding", "chunks", "problem"),
        [
            ("br", lambda: iter([BODY]), "does not decode"),
            ("gzip", lambda: iter([b"not gzip at all"]), "cannot inflate"),
            ("gzip", lambda: iter([zlib.compress(BODY)[:20]]), "ends early"),
        ],
        ids=["brotli", "not-gzip", "cut-short"],
    )
    async def test_bad_encodings_are_failed_queries(
        self, scripted: _Scripted, encoding: str, chunks: Callable[[], Iterator[bytes]], problem: str
    ) -> None:
        """An encoding the scaler does not decode, or a broken stream: untrusted, never a crash."""
        scripted.chunks, scripted.headers = chunks, {"Content-Encoding": encoding}
        snapshot, _ = await _fetch_peak(scripted)
        assert problem in str(snapshot.trust)

    async def test_the_next_answer_is_read_normally(self, scripted: _Scripted) -> None:
        """After an answer cut at the limit, the watch's next query gets the whole fleet."""
        config = parse_config({"consul": {"address": scripted.url}}).consul
        async with ConsulWatch(config) as watch:
            scripted.chunks = _padded(50 * 1_048_576)
            assert "too large" in str((await watch.fetch()).trust)
            scripted.chunks = lambda: iter([BODY])
            assert (await watch.fetch()).registered == 4

    @settings(max_examples=200, deadline=None)
    @given(
        size=st.integers(0, 3 * 65536),
        limit=st.integers(1, 2 * 65536),
        cut=st.lists(st.integers(1, 5000), min_size=1, max_size=20),
        level=st.integers(0, 9),
    )
    def test_inflating_never_passes_the_limit(self, size: int, limit: int, cut: list[int], level: int) -> None:
        """Any gzip stream, cut into any chunks: the buffer stays within limit + 1 byte, and 'too
        large' is said exactly when the inflated body is larger than the limit."""
        squeeze = zlib.compressobj(level, zlib.DEFLATED, 31)
        stream = squeeze.compress(b"x" * size) + squeeze.flush()
        inflate = _inflater("gzip")
        body = bytearray()
        position, n = 0, 0
        while position < len(stream) and len(body) <= limit:
            step = cut[n % len(cut)]
            _inflate_into(body, inflate, stream[position : position + step], limit)
            position, n = position + step, n + 1
            assert len(body) <= limit + 1
        assert (len(body) > limit) == (size > limit)
        if size <= limit:
            assert bytes(body) == b"x" * size
