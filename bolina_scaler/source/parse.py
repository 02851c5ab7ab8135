"""From the bytes of a health answer to ``Server`` values: one result, two paths.

Pure (no I/O). ``parse_health`` is what the watch calls. A well-formed answer (every entry has
the shape ``schema`` describes) is decoded by msgspec straight from the bytes into typed
structs holding only the fields the scaler reads (far faster than building every dict of the
answer, and it allocates far less: ``docs/performance.md``). Anything else goes to ``parse_checked``, the reference
path, which checks every field one by one and names every problem. Both give the same result
for every body (a hypothesis test holds them to it).

A broken entry (no ``Service.ID``, no port, no address, a check without a status or with one
Consul does not have, a second entry for the same node and ``Service.ID``) is skipped and
reported as a problem: the snapshot is then untrusted. A bad optional field (``udp_port``,
``load``, ``demand``) is dropped to ``None`` and reported as a note only.

The load and the demand come from the output of the server's own check (the first of its service
checks whose output holds the token), as ``bolina-scaler report`` writes them:
``load=<0..1>`` (else ``Service.Meta.load``) and ``demand=<0..100>@<unix seconds>`` (no fallback).

A server is its node and its ``Service.ID`` (``Server.key``): Consul keeps IDs unique per agent
only, so ten servers registered as ``bolina`` on ten nodes are ten servers.

A server's status is the worst of *all* its checks, node checks included (``serfHealth``,
``_node_maintenance``, ``_service_maintenance:<id>``), as Consul aggregates them
(``api/health.go``, ``AggregatedStatus``): maintenance > critical > warning > passing; passing
is Available, warning is Warning, critical and maintenance are Critical. A status that is none
of these (``PASSING``, ``ok``) makes the entry broken: Consul's own aggregation has no answer for
it either. An entry with no check of its own (none whose ``ServiceID`` is its ``Service.ID``)
does not report its status, which the convention requires: it counts as Critical (never as
capacity) and is noted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
import orjson

from bolina_scaler.core.model import MAX_DEMAND, InstanceId, Server, ServerId, Status
from bolina_scaler.source.schema import ENTRIES, HealthEntry, HealthNode, HealthNodeMeta, HealthServiceMeta

__all__ = [
    "Memo",
    "Parsed",
    "check_severity",
    "distinct",
    "parse_checked",
    "parse_fast",
    "parse_health",
    "server_of",
]

Parsed = tuple[tuple[Server, ...], tuple[str, ...], tuple[str, ...]]
"""What a parse returns: servers, structural problems, normalisation notes."""

_MAINTENANCE = 3
_SEVERITY = {"passing": 0, "warning": 1, "critical": 2, "maintenance": _MAINTENANCE}
_CRITICAL = 2
_STATUS_OF_SEVERITY = (Status.AVAILABLE, Status.WARNING, Status.CRITICAL, Status.CRITICAL)
_NO_META = HealthServiceMeta()
_NO_NODE_META = HealthNodeMeta()


class Memo(Protocol):
    """A fast path that remembers the last answer (``memo.EntryMemo``)."""

    def parse(self, body: bytes | bytearray) -> Parsed | None: ...


class _BrokenEntry(ValueError):
    """One entry whose structure is not Consul's: it is skipped and the snapshot untrusted."""


def check_severity(check_id: str, status: str) -> int | None:
    """How bad one check is: 0 passing, 1 warning, 2 critical, 3 maintenance; None: not a status.

    Consul reports maintenance as a critical check with a reserved ID (``api/health.go``).
    """
    severity = _SEVERITY.get(status)
    if severity is not None and (check_id == "_node_maintenance" or check_id.startswith("_service_maintenance:")):
        return _MAINTENANCE
    return severity


def parse_health(body: bytes | bytearray, memo: Memo | None = None) -> Parsed:
    """Decode a health answer into servers, structural problems, and normalisation notes.

    Raises ``ValueError`` when the body as a whole is unusable (not JSON, not a list). With a
    ``memo`` (the watch keeps one), only the entries that were not in the memo's last answer
    are decoded (``EntryMemo``).
    """
    fast = parse_fast(body) if memo is None else memo.parse(body)
    return fast if fast is not None else parse_checked(body)


def parse_fast(body: bytes | bytearray) -> Parsed | None:
    """``parse_checked``'s result for a well-formed answer, or ``None`` (take the checked path)."""
    try:
        entries = ENTRIES.decode(body)
    except msgspec.DecodeError:  # also ValidationError: not JSON, not a list, an odd entry
        return None
    servers: list[Server] = []
    notes: list[str] = []
    append = servers.append
    for entry in entries:
        server = server_of(entry, notes)
        if server is None:
            return None
        append(server)
    if not distinct(servers):
        return None
    return tuple(servers), (), tuple(notes)


def distinct(servers: list[Server]) -> bool:
    """Whether no two servers share a node and a ``Service.ID`` (Consul never answers that)."""
    return len({(server.node, server.instance_id) for server in servers}) == len(servers)


def server_of(entry: HealthEntry, notes: list[str]) -> Server | None:
    """The server of one decoded entry, or ``None`` for a broken entry (the checked path names it)."""
    service, node = entry.Service, entry.Node
    instance_id, node_name, port = service.ID, node.Node, service.Port
    address = service.Address or node.Address
    if not instance_id or not node_name or not 0 <= port <= 65535 or not address:
        return None
    worst = 0
    own = False
    output_load: str | None = None
    output_demand: str | None = None
    for check in entry.Checks:
        if check.ServiceID == instance_id:
            own = True
            output = check.Output
            if output_load is None and "load=" in output:
                output_load = _token(_OUTPUT_LOAD, output)
            if output_demand is None and "demand=" in output:
                output_demand = _token(_OUTPUT_DEMAND, output)
        severity = check_severity(check.CheckID, check.Status)
        if severity is None:
            return None
        if severity > worst:
            worst = severity
    if not own:
        notes.append(_no_check_of_its_own(instance_id))
        worst = max(worst, _CRITICAL)
    meta = service.Meta or _NO_META
    udp_port = meta.udp_port
    load = output_load or meta.load
    demand, demand_at = _demand(instance_id, output_demand, notes)
    return Server(
        instance_id=InstanceId(instance_id),
        server_id=ServerId(meta.server_id or instance_id),
        address=address,
        tcp_port=port,
        udp_port=None if udp_port is None else _udp_port(instance_id, udp_port, notes),
        node=node_name,
        pod=_pod(meta, node),
        status=_STATUS_OF_SEVERITY[worst],
        load=None if load is None else _load(instance_id, load, notes),
        demand=demand,
        demand_at=demand_at,
    )


def _pod(meta: HealthServiceMeta, node: HealthNode) -> str | None:
    """``Service.Meta.pod``, else ``Node.Meta.pod``; an empty name is none."""
    return meta.pod or (node.Meta or _NO_NODE_META).pod or None


def parse_checked(body: bytes | bytearray) -> Parsed:
    """The reference path: every field checked one by one, every problem named."""
    data = orjson.loads(body)
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of entries, got {type(data).__name__}")
    servers: list[Server] = []
    problems: list[str] = []
    notes: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for position, raw in enumerate(data):
        entry_notes: list[str] = []
        try:
            server = _checked_entry(raw, entry_notes)
        except _BrokenEntry as exc:
            problems.append(f"entry {position}: {exc}")
            continue
        first = seen.setdefault((server.node, server.instance_id), position)
        if first != position:
            problems.append(
                f"entry {position}: {server.instance_id}: a second entry for node {server.node!r} "
                f"(the first is entry {first})"
            )
            continue
        servers.append(server)
        notes += entry_notes
    return tuple(servers), tuple(problems), tuple(notes)


def _checked_entry(raw: Any, notes: list[str]) -> Server:
    if not isinstance(raw, dict):
        raise _BrokenEntry(f"expected an object, got {type(raw).__name__}")
    node, service, checks = raw.get("Node"), raw.get("Service"), raw.get("Checks")
    if not isinstance(node, dict) or not isinstance(service, dict) or not isinstance(checks, list):
        raise _BrokenEntry("expected Node and Service objects and a Checks list")
    instance_id = _text(service, "ID")
    node_name = _text(node, "Node")
    port = service.get("Port")
    if not instance_id or not node_name:
        raise _BrokenEntry("Service.ID and Node.Node must be non-empty strings")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise _BrokenEntry(f"{instance_id}: Service.Port must be an integer port, got {port!r}")
    address = _text(service, "Address") or _text(node, "Address")
    if not address:
        raise _BrokenEntry(f"{instance_id}: neither Service.Address nor Node.Address is set")
    meta = _meta(service.get("Meta"))
    node_meta = _meta(node.get("Meta"))
    worst = max((_checked_severity(instance_id, check) for check in checks), default=0)
    demand, demand_at = _demand(instance_id, _checks_token(instance_id, checks, _OUTPUT_DEMAND), notes)
    if not any(isinstance(check, dict) and check.get("ServiceID") == instance_id for check in checks):
        notes.append(_no_check_of_its_own(instance_id))
        worst = max(worst, _CRITICAL)
    return Server(
        instance_id=InstanceId(instance_id),
        server_id=ServerId(meta.get("server_id") or instance_id),
        address=address,
        tcp_port=port,
        udp_port=_udp_port(instance_id, meta.get("udp_port"), notes),
        node=node_name,
        pod=meta.get("pod") or node_meta.get("pod") or None,
        status=_STATUS_OF_SEVERITY[worst],
        load=_load(instance_id, _checks_token(instance_id, checks, _OUTPUT_LOAD) or meta.get("load"), notes),
        demand=demand,
        demand_at=demand_at,
    )


def _checked_severity(instance_id: str, check: Any) -> int:
    if not isinstance(check, dict) or not isinstance(check.get("Status"), str):
        raise _BrokenEntry(f"{instance_id}: a check without a Status")
    check_id = check.get("CheckID")
    status = check["Status"]
    severity = check_severity(check_id if isinstance(check_id, str) else "", status)
    if severity is None:
        raise _BrokenEntry(
            f"{instance_id}: check {check_id!r} has Status {status[:40]!r}, not passing, warning or critical"
        )
    return severity


def _no_check_of_its_own(instance_id: str) -> str:
    return f"{instance_id}: no health check of its own (its status is unknown): counted as Critical"


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _meta(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _udp_port(instance_id: str, value: str | None, notes: list[str]) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        notes.append(f"{instance_id}: ignored Meta.udp_port {value!r} (not a port number)")
        return None
    return port


_OUTPUT_LOAD = re.compile(r"(?:^|\s)load=(\S+)")
_OUTPUT_DEMAND = re.compile(r"(?:^|\s)demand=(\S+)")


def _token(pattern: re.Pattern[str], output: str) -> str | None:
    """The value of a ``name=<value>`` token of a check's output (``bolina-scaler report`` writes them first)."""
    match = pattern.search(output)
    return match.group(1) if match else None


def _checks_token(instance_id: str, checks: list[Any], pattern: re.Pattern[str]) -> str | None:
    """A token of the first service check of this instance whose output holds it, if any."""
    for check in checks:
        if isinstance(check, dict) and check.get("ServiceID") == instance_id:
            output = check.get("Output")
            if isinstance(output, str):
                value = _token(pattern, output)
                if value is not None:
                    return value
    return None


def _demand(instance_id: str, token: str | None, notes: list[str]) -> tuple[float | None, float | None]:
    """``(demand, measured at)`` from a ``<share>@<unix seconds>`` token; (None, None) if absent or bad."""
    if token is None:
        return None, None
    value, _, at = token.partition("@")
    try:
        demand, when = float(value), float(at)
    except ValueError:
        demand = when = math.nan
    if not (0.0 <= demand <= MAX_DEMAND and math.isfinite(when) and when > 0):  # NaN fails this too
        notes.append(f"{instance_id}: ignored demand {token!r} (expected <0..{MAX_DEMAND:g}>@<unix seconds>)")
        return None, None
    return demand, when


def _load(instance_id: str, value: str | None, notes: list[str]) -> float | None:
    if value is None or value == "":
        return None
    try:
        load = float(value)
    except ValueError:
        load = math.nan
    if not 0.0 <= load <= 1.0:  # NaN fails this too
        notes.append(f"{instance_id}: ignored load {value!r} (not a number in 0..1)")
        return None
    return load
