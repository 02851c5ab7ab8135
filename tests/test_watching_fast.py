"""The watch's performance paths: the msgspec fast path, and streaming answers' unset headers.

The fast path (``parse_fast``) exists only for speed; the checked path
(``parse_checked``) is the reference. Hypothesis feeds both the same bodies: well-formed
answers, and answers with every kind of odd field the checked path handles.

Real Consul 1.14 answers blocking queries from its streaming backend with
``X-Consul-KnownLeader: false``; treating that as "no leader" cost a backoff and a second query
on every change (see docs/performance.md).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.config import parse_config
from bolina_scaler.core.model import ConsulIndex
from bolina_scaler.source import ConsulWatch
from bolina_scaler.source import memo as memo_module
from bolina_scaler.source.memo import EntryMemo
from bolina_scaler.source.parse import parse_checked, parse_fast, parse_health
from bolina_scaler.testing.consul import FakeConsul, Fault

_text = st.one_of(st.sampled_from(["", "b1", "node-1", "10.0.0.1", "_node_maintenance"]), st.text(max_size=4))
_odd = st.one_of(st.none(), st.integers(-5, 70000), st.booleans(), st.floats(allow_nan=False), st.lists(st.none()))
_maybe = st.one_of(_text, _odd)
_meta = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["server_id", "udp_port", "pod", "load", "other"]),
        st.one_of(st.sampled_from(["", "9002", "0", "70000", "x", "0.5", "1.5", "nan", "p1"]), _odd),
        max_size=5,
    ),
)
# Check outputs as the reporter writes them, and odd ones: tokens that are not numbers, out of range,
# without the time stamp, glued to other words, twice, or in the second of two service checks.
_token = st.one_of(
    st.sampled_from(["0.5", "1", "-0.1", "nan", "inf", "1e3", "x", "", "0.25@", "@5"]),
    st.builds(
        lambda v, t: f"{v}@{t}",
        st.sampled_from(["0", "0.6", "1.35", "100", "100.5", "-1", "nan", "1e400", "z"]),
        st.sampled_from(["1712345678", "0", "-5", "inf", "nan", "1.5e9", "t", ""]),
    ),
)
_output = st.one_of(
    _text,
    st.lists(
        st.one_of(
            st.builds("load={}".format, _token),
            st.builds("demand={}".format, _token),
            st.builds("xdemand={}".format, _token),
            st.sampled_from(["available:", "warning (cpu=0.9≥0.85):", "load=", "demand="]),
        ),
        max_size=4,
    ).map(" ".join),
)
_check = st.one_of(
    st.fixed_dictionaries(
        {"Status": st.sampled_from(["passing", "warning", "critical", "maintenance", "weird"])},
        optional={
            "CheckID": st.sampled_from(["serfHealth", "service:b1", "_node_maintenance", "_service_maintenance:b1"]),
            "ServiceID": st.one_of(st.sampled_from(["b1", "", "b2"]), _odd),
            "Output": st.one_of(_output, _odd),
        },
    ),
    _odd,
)
_entry = st.fixed_dictionaries(
    {
        "Node": st.fixed_dictionaries({}, optional={"Node": _maybe, "Address": _maybe, "Meta": _meta, "ID": _text}),
        "Service": st.fixed_dictionaries(
            {},
            optional={
                "ID": _maybe,
                "Address": _maybe,
                "Port": st.one_of(st.integers(-1, 65536), _odd),
                "Meta": _meta,
                "Tags": st.lists(_text, max_size=2),
            },
        ),
        "Checks": st.one_of(st.lists(_check, max_size=3), _odd),
    }
)


def _outcome(parse: Any, body: bytes) -> Any:
    try:
        return parse(body)
    except Exception as exc:  # the same exception type and message count as the same outcome
        return (type(exc), str(exc))


_EDITS = ["flip", "change", "insert", "delete", "move", "duplicate"]


class TestFastPath:
    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(_entry, _odd), max_size=4))
    def test_same_result_as_the_checked_path(self, entries: list[Any]) -> None:
        """Whatever the body, ``parse_health`` answers exactly as the checked path does."""
        body = orjson.dumps(entries)
        assert _outcome(parse_health, body) == _outcome(parse_checked, body)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.lists(st.one_of(_entry, _odd), max_size=4), min_size=1, max_size=4))
    def test_memo_gives_the_same_results_answer_after_answer(self, answers: list[list[Any]]) -> None:
        """One EntryMemo over a sequence of answers (entries kept, changed, broken) changes no result."""
        memo = EntryMemo()
        for entries in answers:
            for body in (orjson.dumps(entries), orjson.dumps(entries[::-1])):
                assert _outcome(lambda b: parse_health(b, memo), body) == _outcome(parse_checked, body)

    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(0, 40),
        st.lists(
            st.lists(
                st.tuples(st.sampled_from(_EDITS), st.integers(0, 10**6)),
                max_size=6,
            ),
            min_size=1,
            max_size=5,
        ),
    )
    def test_memo_follows_registrations_coming_and_going(self, size: int, edits: list[list[tuple[str, int]]]) -> None:
        """Larger fleets edited between answers (shifts, moves, duplicates) give the checked path's result."""
        fleet = [_server_entry(n) for n in range(size)]
        memo = EntryMemo()
        serial = size
        for answer in [[], *edits]:
            for what, at in answer:
                where = at % (len(fleet) + 1)
                if what == "insert" or not fleet:
                    fleet.insert(where, _server_entry(serial))
                    serial += 1
                    continue
                where %= len(fleet)
                if what == "flip":
                    n = int(fleet[where]["Service"]["ID"][1:])
                    fleet[where] = _server_entry(n, status="warning" if "passing" in str(fleet[where]) else "passing")
                elif what == "change":
                    fleet[where] = _server_entry(serial, status="critical")
                    serial += 1
                elif what == "delete":
                    del fleet[where]
                elif what == "move":
                    fleet.append(fleet.pop(where))
                else:
                    fleet.insert(where, fleet[where])
            body = orjson.dumps(fleet)
            assert parse_health(body, memo) == parse_checked(body)

    def test_memo_decodes_only_new_entries(self, monkeypatch: Any) -> None:
        """A change, a new server and a gone one: only the new bytes are decoded; the rest are the same objects."""
        entries = [_server_entry(n) for n in range(6)]
        memo = EntryMemo()
        first = memo.parse(orjson.dumps(entries))
        assert first is not None
        decoded: list[bytes] = []
        real = memo_module.ENTRY

        class Counting:
            def decode(self, data: Any) -> Any:
                decoded.append(bytes(data))
                return real.decode(data)

        monkeypatch.setattr(memo_module, "ENTRY", Counting())
        entries[1]["Checks"][0]["Status"] = "critical"
        second = memo.parse(orjson.dumps(entries))
        assert second is not None
        assert len(decoded) == 1
        assert b'"b1"' in decoded[0]
        assert second[0][0] is first[0][0]
        assert second[0][2] is first[0][2]
        assert second[0][1].status.value == "critical"

        decoded.clear()
        entries.insert(3, _server_entry(6))  # a new server in the middle shifts those after it
        del entries[0]  # and a gone one shifts them all
        third = memo.parse(orjson.dumps(entries))
        assert third is not None
        assert [s.instance_id for s in third[0]] == ["b1", "b2", "b6", "b3", "b4", "b5"]
        assert len(decoded) == 1
        assert b'"b6"' in decoded[0]
        assert third[0][0] is second[0][1]
        assert all(a is b for a, b in zip(third[0][3:], second[0][3:], strict=True))

    def test_well_formed_answer_takes_the_fast_path(self) -> None:
        """A normal Consul answer is decoded by the fast path, with the same servers and notes."""

        def entry(instance: str) -> dict[str, Any]:
            return {
                "Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {"pod": "p0"}, "TaggedAddresses": {"lan": "x"}},
                "Service": {"ID": instance, "Port": 9001, "Address": "", "Meta": {"udp_port": "x", "load": "0.25"}},
                "Checks": [
                    {"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                    {"CheckID": f"service:{instance}", "Status": "warning", "ServiceID": instance},
                ],
            }

        body = orjson.dumps([entry("b1"), entry("b2")])
        fast = parse_fast(body)
        assert fast is not None
        assert fast == parse_checked(body)
        assert len(fast[2]) == 2  # the bad udp_port of each entry is noted

    def test_odd_answers_step_aside(self) -> None:
        """Not JSON, not a list, or a broken entry: the fast path returns None."""
        for body in (b"{", b"{}", b'[{"Node": {}, "Service": {"Port": 1}, "Checks": []}]'):
            assert parse_fast(body) is None


class TestFigures:
    """``load=`` and ``demand=<share>@<unix seconds>`` in the output of a server's own check."""

    def _parse(self, *outputs: str) -> tuple[Any, tuple[str, ...]]:
        entry = _server_entry(1)
        entry["Checks"] = [
            {"CheckID": "serfHealth", "Status": "passing", "Output": "demand=9@9"},  # not the server's check
            *({"CheckID": f"service:b1:{n}", "ServiceID": "b1", "Status": "passing", "Output": o} for n, o in
              enumerate(outputs)),
        ]  # fmt: skip
        body = orjson.dumps([entry])
        fast = parse_fast(body)
        assert fast == parse_checked(body)
        assert fast is not None
        (server,), _, notes = fast
        return server, notes

    def test_load_and_demand(self) -> None:
        server, notes = self._parse("load=0.55 demand=1.30@1712345678 available: cpu=0.4")
        assert (server.load, server.demand, server.demand_at) == (0.55, 1.3, 1712345678.0)
        assert notes == ()

    def test_no_demand(self) -> None:
        server, notes = self._parse("load=0.55 available")
        assert (server.demand, server.demand_at) == (None, None)
        assert notes == ()

    @pytest.mark.parametrize(
        "token", ["1.3", "1.3@", "@1712345678", "x@1712345678", "-0.1@1712345678", "101@1712345678", "1@-5", "1@nan"]
    )
    def test_a_bad_demand_is_dropped_and_noted(self, token: str) -> None:
        server, notes = self._parse(f"load=0.5 demand={token}")
        assert (server.load, server.demand, server.demand_at) == (0.5, None, None)
        assert notes == (f"b1: ignored demand {token!r} (expected <0..100>@<unix seconds>)",)

    def test_the_first_service_check_holding_the_token_wins(self) -> None:
        server, _ = self._parse("available", "xdemand=5@5 demand=2@1712345678", "demand=3@1712345678")
        assert server.demand == 2.0


class TestStreamingHeaders:
    async def test_streaming_answer_with_known_leader_false_is_trusted(self) -> None:
        """Consul 1.14's streaming answers say KnownLeader false on every blocking query: not a problem."""
        headers = {
            "X-Consul-Index": "7",
            "X-Consul-KnownLeader": "false",
            "X-Consul-LastContact": "0",
            "X-Consul-Query-Backend": "streaming",
        }
        async with FakeConsul() as consul:
            consul.inject(Fault.response(200, b"[]", headers))
            async with ConsulWatch(parse_config({"consul": {"address": consul.url}}).consul) as watch:
                snapshot = await watch.fetch(ConsulIndex(1))
        assert snapshot.trusted, snapshot.trust

    async def test_blocking_query_backend_with_known_leader_false_is_untrusted(self) -> None:
        """The same headers from the classic blocking-query backend still mean "no leader"."""
        headers = {"X-Consul-Index": "7", "X-Consul-KnownLeader": "false", "X-Consul-Query-Backend": "blocking-query"}
        async with FakeConsul() as consul:
            consul.inject(Fault.response(200, b"[]", headers))
            async with ConsulWatch(parse_config({"consul": {"address": consul.url}}).consul) as watch:
                snapshot = await watch.fetch(ConsulIndex(1))
        assert not snapshot.trusted
        assert "no leader" in str(snapshot.trust)


class TestTransport:
    """How the answer is read: whole, uncompressed unless asked, and parsed once per distinct body."""

    async def test_identity_by_default_gzip_when_asked(self) -> None:
        """Accept-Encoding is identity by default; consul.compress asks for gzip, with the same fleet."""
        fleets = {}
        async with FakeConsul() as consul:
            for n in range(50):
                consul.add_instance("bolina", instance_id=f"b{n}", node=f"n{n}", port=7000, address="10.0.0.1")
            for compress in (False, True):
                config = parse_config({"consul": {"address": consul.url, "compress": compress}}).consul
                async with ConsulWatch(config) as watch:
                    fleets[compress] = (await watch.fetch()).servers
                assert consul.requests[-1].headers["Accept-Encoding"] == ("gzip" if compress else "identity")
        assert len(fleets[False]) == 50
        assert fleets[True] == fleets[False]

    async def test_a_large_answer_is_read_whole(self) -> None:
        """An answer of many network reads (3,000 servers, ~2.8 MB) arrives whole and decodes (with a
        max_replicas that allows that many servers: the answer's size limit follows it)."""
        async with FakeConsul() as consul:
            for n in range(3000):
                consul.add_instance("bolina", instance_id=f"b{n}", node=f"n{n}", port=7000, address="10.0.0.1")
            config = parse_config({"consul": {"address": consul.url}, "policy": {"max_replicas": 3000}})
            async with ConsulWatch(config.consul) as watch:
                snapshot = await watch.fetch()
        assert snapshot.trusted
        assert sorted(s.instance_id for s in snapshot.servers) == sorted(f"b{n}" for n in range(3000))

    async def test_an_unchanged_answer_is_not_parsed_again(self, monkeypatch: Any) -> None:
        """The same bytes again (a wait that ran out) reuse the last parse; a change is parsed."""
        parsed: list[int] = []

        def counting(body: bytes | bytearray, memo: EntryMemo | None = None) -> Any:
            parsed.append(len(body))
            return parse_health(body, memo)

        monkeypatch.setattr("bolina_scaler.source.parse.parse_health", counting)
        async with FakeConsul() as consul:
            consul.add_instance("bolina", instance_id="b1", node="n1", port=7000, address="10.0.0.1")
            async with ConsulWatch(parse_config({"consul": {"address": consul.url}}).consul) as watch:
                first = await watch.fetch()
                again = await watch.fetch()
                assert len(parsed) == 1
                assert again.servers is first.servers
                consul.set_status("b1", "warning")
                changed = await watch.fetch()
        assert len(parsed) == 2
        assert [s.status.value for s in changed.servers] == ["warning"]


def _server_entry(n: int, *, status: str = "passing") -> dict[str, Any]:
    return {
        "Node": {"Node": f"n{n}", "Address": "10.0.0.1"},
        "Service": {"ID": f"b{n}", "Port": 9001, "Meta": {"udp_port": "x"} if n % 7 == 3 else {}},
        "Checks": [{"CheckID": f"service:b{n}", "ServiceID": f"b{n}", "Status": status}],
    }
