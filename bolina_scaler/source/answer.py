"""What one HTTP answer from Consul means: a usable ``Answer``, or a ``Failure`` that says why not.

Pure (no I/O). The transport hands over the status code, the headers and the raw body; this
module decides whether they can be used and how far they can be trusted:

* not 200, no ``X-Consul-Index`` or one that is not an index (1 ≤ index < 2^64), or a body that
  is not a JSON list → ``Failure`` (no usable answer: the watch holds the last known fleet,
  untrusted);
* ``X-Consul-KnownLeader: false`` (with ``consul.require_known_leader``), an
  ``X-Consul-LastContact`` above ``consul.max_last_contact``, either header with a value that is
  not one Consul sends, or ``X-Consul-Results-Filtered-By-ACLs: true`` (the token cannot read
  every entry, so the answer is not the whole fleet) → usable but *untrusted*: the watch re-reads
  (does not block) after a backoff, so a mended ACL policy or a leader that is back is seen;
* a structurally broken entry → usable but *broken*: the data is current (keep blocking), the
  snapshot is untrusted until the entry is mended.

The agent's streaming backend (Consul's default for blocking queries) either omits KnownLeader
and LastContact (a missing header means "unknown", not a problem) or, as Consul 1.14 does, sends
them as unset defaults (KnownLeader ``false``, LastContact ``0``): the two headers of an answer
marked ``X-Consul-Query-Backend: streaming`` are ignored. Consul in default consistency answers
500 "No cluster leader" rather than a stale answer, so these two headers matter mostly with
``consistency: stale``.

Every number in a header goes through one strict parser, ``uint64``: ASCII digits only (``²``
passes ``str.isdigit``), at most 20 of them, below 2^64 (Consul's indexes are ``uint64``). A
header is input like any other: no value of one may end the process. Tried on Consul 1.14: the
ACL-filtered header comes with answers of the blocking-query backend (the watch's first,
non-blocking query and every re-read), not with streaming ones; an answer carrying it is never
trusted, so the watch re-reads until the token can read every entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from bolina_scaler.config import ConsulConfig
from bolina_scaler.core.fleet import FleetSnapshot, Trust
from bolina_scaler.core.model import ConsulIndex, Server
from bolina_scaler.source.parse import Parsed, parse_health

__all__ = ["MAX_UINT64", "Answer", "Failure", "Response", "read_answer", "uint64"]

MAX_UINT64 = 2**64 - 1
_MAX_DIGITS = len(str(MAX_UINT64))  # 20


class Response(NamedTuple):
    """One HTTP answer as the transport received it."""

    code: int
    headers: Mapping[str, str]
    body: bytes | bytearray


class Failure(Exception):
    """A query that produced no usable answer; ``str()`` is the snapshot's trust problem."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A usable answer: its index, its servers, and what limits the trust in it."""

    index: ConsulIndex
    servers: tuple[Server, ...]
    stale: tuple[str, ...]
    """Problems the headers show (freshness, entries hidden by ACLs): re-read with backoff."""
    broken: tuple[str, ...]
    """Structural problems of entries: the data is current, keep blocking."""
    notes: tuple[str, ...]
    """Optional fields dropped (bad udp_port/load): logged, still trusted."""
    observed_at: float

    def snapshot(self) -> FleetSnapshot:
        return FleetSnapshot(
            index=self.index,
            servers=self.servers,
            observed_at=self.observed_at,
            trust=Trust(self.stale + self.broken),
        )


def read_answer(
    response: Response,
    config: ConsulConfig,
    observed_at: float,
    parse: Callable[[bytes | bytearray], Parsed] = parse_health,
) -> Answer:
    """Judge one answer; raise ``Failure`` when it cannot be used at all."""
    if response.code != 200:
        text = response.body[:200].decode("utf-8", "replace").strip()
        if response.code == 403:
            raise Failure(f"consul denied access (check the ACL token): HTTP 403: {text}")
        raise Failure(f"consul error: HTTP {response.code}: {text}")
    raw_index = response.headers.get("X-Consul-Index")
    if raw_index is None:
        raise Failure("consul answer invalid: no X-Consul-Index")
    value = uint64(raw_index)
    if value is None:
        raise Failure(f"consul answer invalid: X-Consul-Index {_shown(raw_index)} is not an index")
    if value < 1:
        raise Failure(f"consul answer invalid: X-Consul-Index {value} is below 1")
    index = ConsulIndex(value)
    try:
        servers, broken, notes = parse(response.body)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise Failure(f"consul answer malformed: {exc}") from None
    return Answer(
        index=index,
        servers=servers,
        stale=_header_problems(response.headers, config),
        broken=(f"{len(broken)} malformed entries skipped (first: {broken[0]})",) if broken else (),
        notes=notes,
        observed_at=observed_at,
    )


def _header_problems(headers: Mapping[str, str], config: ConsulConfig) -> tuple[str, ...]:
    problems = []
    filtered = headers.get("X-Consul-Results-Filtered-By-ACLs")
    if filtered is not None and filtered.lower() != "false":
        problems.append(
            "consul hid entries the ACL token may not read (X-Consul-Results-Filtered-By-ACLs: "
            f"{_shown(filtered)}): the answer is not the whole fleet; grant the token read on the "
            'service and on every node (node_prefix "")'
        )
    if headers.get("X-Consul-Query-Backend") == "streaming":
        # Consul 1.14's streaming answers carry KnownLeader "false" and LastContact "0" as unset
        # defaults (agent/http.go setMeta on the materialized view's empty QueryMeta), on every
        # blocking query, leader or not: reading them as "no leader" would make every change
        # cost an untrusted answer, a backoff and a second full query.
        return tuple(problems)
    known_leader = headers.get("X-Consul-KnownLeader")
    if config.require_known_leader and known_leader is not None:
        if known_leader.lower() == "false":
            problems.append("consul server knows no leader (X-Consul-KnownLeader: false)")
        elif known_leader.lower() != "true":
            problems.append(f"consul answer invalid: X-Consul-KnownLeader {_shown(known_leader)} is not true or false")
    raw_contact = headers.get("X-Consul-LastContact")
    if raw_contact is not None:
        last_contact = uint64(raw_contact)
        limit_ms = config.max_last_contact * 1000
        if last_contact is None:
            problems.append(
                f"consul answer invalid: X-Consul-LastContact {_shown(raw_contact)} is not a number of milliseconds"
            )
        elif last_contact > limit_ms:
            problems.append(f"consul server last heard from the leader {last_contact} ms ago (max {limit_ms:g} ms)")
    return tuple(problems)


def uint64(text: str) -> int | None:
    """``text`` as Consul writes a ``uint64`` (ASCII digits, below 2^64), or None.

    The digits are checked before ``int()`` sees them: ``str.isdigit`` accepts ``²`` and other
    digits ``int()`` refuses, and ``int()`` itself refuses more than 4,300 digits with an error.
    """
    if not 0 < len(text) <= _MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_UINT64 else None


def _shown(value: str, limit: int = 40) -> str:
    """A header value for a message: quoted, and cut when long (a header may be kilobytes)."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"
