"""Hostile Consul answers: every header and every body is input.

No answer may end the process (an exception other than ``Failure`` out of ``read_answer``), and
an answer that cannot be trusted never changes the scale. Hypothesis generates the headers both
from the values Consul sends and from any text at all (``²`` passes ``str.isdigit`` but not
``int()``; 5,000 digits pass ``isdigit`` but exceed ``int()``'s limit; ``2**64 + 7`` is no index).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bolina_scaler.config import ConsulConfig, PolicyConfig
from bolina_scaler.core.decision import Direction
from bolina_scaler.core.memory import Memory
from bolina_scaler.core.policy import decide
from bolina_scaler.source.answer import MAX_UINT64, Failure, Response, read_answer, uint64

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
