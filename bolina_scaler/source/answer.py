"""What one HTTP answer from Consul means: a usable ``Answer``, or a ``Failure`` that says why not.

Pure (no I/O). The transport hands over the status code, the headers and the raw body; this
module decides whether they can be used and how far they can be trusted:

* not 200, no ``X-Consul-Index`` or one below 1, or a body that is not a JSON list → ``Failure``
  (no usable answer: the watch holds the last known fleet, untrusted);
* ``X-Consul-KnownLeader: false`` (with ``consul.require_known_leader``) or an
  ``X-Consul-LastContact`` above ``consul.max_last_contact`` → usable but *stale*: the answer
  may be old, so the watch re-reads (does not block) after a backoff;
* a structurally broken entry → usable but *broken*: the data is current (keep blocking), the
  snapshot is untrusted until the entry is mended.

The agent's streaming backend (Consul's default for blocking queries) either omits KnownLeader
and LastContact (a missing header means "unknown", not a problem) or, as Consul 1.14 does, sends
them as unset defaults (KnownLeader ``false``, LastContact ``0``): the two headers of an answer
marked ``X-Consul-Query-Backend: streaming`` are ignored. Consul in default consistency answers
500 "No cluster leader" rather than a stale answer, so these two headers matter mostly with
``consistency: stale``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from bolina_scaler.config import ConsulConfig
from bolina_scaler.core.fleet import FleetSnapshot, Trust
from bolina_scaler.core.model import ConsulIndex, Server
from bolina_scaler.source.parse import Parsed, parse_health

__all__ = ["Answer", "Failure", "Response", "read_answer"]


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
    """Freshness problems from the headers: re-read with backoff."""
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
    if raw_index is None or not raw_index.isdigit():
        raise Failure(f"consul answer invalid: X-Consul-Index {raw_index!r} is not an index")
    index = ConsulIndex(int(raw_index))
    if index < 1:
        raise Failure(f"consul answer invalid: X-Consul-Index {index} is below 1")
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
    if headers.get("X-Consul-Query-Backend") == "streaming":
        # Consul 1.14's streaming answers carry KnownLeader "false" and LastContact "0" as unset
        # defaults (agent/http.go setMeta on the materialized view's empty QueryMeta), on every
        # blocking query, leader or not: reading them as "no leader" would make every change
        # cost an untrusted answer, a backoff and a second full query.
        return ()
    problems = []
    if config.require_known_leader and headers.get("X-Consul-KnownLeader", "").lower() == "false":
        problems.append("consul server knows no leader (X-Consul-KnownLeader: false)")
    last_contact = headers.get("X-Consul-LastContact")
    if last_contact is not None and last_contact.isdigit():
        limit_ms = config.max_last_contact * 1000
        if int(last_contact) > limit_ms:
            problems.append(
                f"consul server last heard from the leader {int(last_contact)} ms ago (max {limit_ms:g} ms)"
            )
    return tuple(problems)
