"""A faithful in-process fake of the Consul HTTP API parts Bolina uses (health + agent).

Does I/O: a real aiohttp server on ``127.0.0.1`` (port 0), so the clients under test go through
their whole HTTP stack. It follows the documented Consul semantics the scaler relies on:

* a Raft-like global index that grows on every write, and a per-service ``ModifyIndex``:
  ``GET /v1/health/service/<name>`` answers with the index of the last change relevant to that
  service (never 0), and with ``index=N`` it parks until that index exceeds ``N`` or ``wait``
  elapses (an ``asyncio`` event per write, no polling; ``index`` 0 or absent never blocks);
* ``wait`` is a Go duration with units (``wait=1`` is a 400), capped at 10 minutes; Consul's
  random extra wait of up to wait/16 is available with ``jitter=True`` (off: deterministic);
* ``stale`` / ``consistent`` / ``cached`` with Consul's conflicts (400), ``dc`` (500 for an
  unknown one), ``passing``, and a small ``filter`` subset (400 for anything else);
* without a known leader, default and consistent reads fail with 500 "No cluster leader", as in
  Consul; stale reads still answer with ``X-Consul-KnownLeader: false`` and ``LastContact``;
* with ``streaming=True``, blocking queries answer ``X-Consul-Query-Backend: streaming`` with
  ``X-Consul-KnownLeader: false`` and ``X-Consul-LastContact: 0`` whatever the leader, as Consul
  1.14's streaming backend does (unset defaults, checked against the real agent);
* agent endpoints: service register/deregister, TTL checks (update, pass/warn/fail, expiry to
  critical, ``DeregisterCriticalServiceAfter`` reaping), all driven by the loop clock with
  scheduled callbacks, so ``looptime`` fast-forwards them;
* answers are gzipped when the request's ``Accept-Encoding`` allows it, as Consul's do;
* ACL: with ``token=...`` every request needs it (``X-Consul-Token``, ``Authorization: Bearer``
  or ``?token=``), else 403 "Permission denied".

Python-side controls (not HTTP) script the scenarios: ``add_instance``, ``set_status``,
``set_node_health``, maintenance modes, ``set_index`` (a snapshot restore: the index goes
backwards), ``known_leader``, ``last_contact_ms``, ``inject(Fault...)`` and ``wait_parked()``.
Non-TTL checks (HTTP, TCP, ...) are accepted but never probed: they keep the status they were
given. The reaper deregisters exactly at the deadline; Consul's reaper runs every 30 s, so a real
agent may lag by up to 30 s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import re
import socket
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import orjson
from aiohttp import web

from bolina_scaler.testing.server import LocalServer

__all__ = ["CHECK_STATUSES", "FakeConsul", "Fault", "RecordedRequest"]

CHECK_STATUSES = ("passing", "warning", "critical")
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0
MIN_DEREGISTER_AFTER = 60.0
NODE_MAINTENANCE = "_node_maintenance"
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"

_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("5m", "1m30s", "250ms", "0"); ``ValueError`` without units."""
    if text == "0":
        return 0.0
    if not _GO_DURATION.match(text):
        raise ValueError(f"time: missing unit in duration {text!r}")
    return sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_PART.findall(text))


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """One injected misbehaviour for the next matching request (see ``FakeConsul.inject``)."""

    kind: Literal["status", "reset", "malformed", "truncated", "slow", "body", "unblocked"]
    status: int = 500
    body: bytes = b""
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def http_error(cls, status: int = 500, body: str = "rpc error: internal error") -> Fault:
        """Answer with this HTTP status and a plain-text body, as Consul does for RPC errors."""
        return cls("status", status=status, body=body.encode())

    @classmethod
    def connection_reset(cls) -> Fault:
        """Drop the TCP connection (RST) without answering.

        aiohttp's client silently retries an idempotent request once when a *reused* keep-alive
        connection drops, so inject this twice (``times=2``) to make a client see the error.
        """
        return cls("reset")

    @classmethod
    def malformed_json(cls, body: bytes = b'[{"Node": {"Node": "n1"}, "Service": ') -> Fault:
        """Answer 200 with the usual headers but a body that is not JSON."""
        return cls("malformed", body=body)

    @classmethod
    def truncated_body(cls) -> Fault:
        """Announce the real body's length, send half of it, then drop the connection."""
        return cls("truncated")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Hold the request ``seconds`` (loop time) before handling it normally."""
        return cls("slow", delay=seconds)

    @classmethod
    def unblocked(cls) -> Fault:
        """Answer a blocking query at once, with the index and entries it would have waited on
        (a proxy that drops ``?index=``, or an agent whose blocking queries do not block)."""
        return cls("unblocked")

    @classmethod
    def response(cls, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Fault:
        """Answer exactly this (e.g. a 200 with a wrong JSON shape, or headers missing)."""
        return cls("body", status=status, body=body, headers=tuple((headers or {}).items()))


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the fake received (the last 1000 are kept in ``FakeConsul.requests``)."""

    endpoint: str
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


@dataclasses.dataclass(slots=True)
class _Node:
    name: str
    id: str
    address: str
    meta: dict[str, str]


@dataclasses.dataclass(slots=True)
class _Instance:
    id: str
    service: str
    node: str
    address: str
    port: int
    tags: list[str]
    meta: dict[str, str]
    create_index: int
    modify_index: int


@dataclasses.dataclass(slots=True)
class _Check:
    id: str
    node: str
    name: str
    status: str
    output: str = ""
    notes: str = ""
    service_id: str = ""
    type: str = ""
    ttl: float | None = None
    deregister_after: float | None = None
    create_index: int = 0
    modify_index: int = 0
    ttl_timer: asyncio.TimerHandle | None = None
    reap_timer: asyncio.TimerHandle | None = None


class _Signal:
    """Wake every waiter on ``fire()``; each waiter then re-checks its own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class FakeConsul(LocalServer):
    """An in-process Consul agent + server: ``async with FakeConsul() as consul: consul.url``."""

    def __init__(
        self,
        *,
        datacenter: str = "dc1",
        agent_node: str = "agent-1",
        token: str | None = None,
        jitter: bool = False,
        streaming: bool = False,
        initial_index: int = 1,
        rng: random.Random | None = None,
    ) -> None:
        if initial_index < 1:
            raise ValueError("Consul never uses index 0: initial_index must be >= 1")
        self.datacenter = datacenter
        self.agent_node = agent_node
        self.token = token
        self.jitter = jitter
        self.streaming = streaming
        self.known_leader = True
        self.last_contact_ms = 0
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=1000)
        self._rng = rng or random.Random(0)
        self._index = initial_index
        self._catalog_index = initial_index
        self._service_index: dict[str, int] = {}
        self._nodes: dict[str, _Node] = {}
        self._instances: dict[str, _Instance] = {}
        self._checks: dict[str, _Check] = {}
        self._faults: collections.deque[tuple[str, Fault]] = collections.deque()
        self._parked: collections.Counter[str] = collections.Counter()
        self._changed: _Signal | None = None
        self._parked_changed: _Signal | None = None
        self._closing = False
        self._restores = 0

    # ----------------------------------------------------------------------------- lifecycle

    async def build_app(self) -> web.Application:
        self._changed = _Signal()
        self._parked_changed = _Signal()
        self._closing = False
        app = web.Application()
        app.router.add_get("/v1/health/service/{service}", self._health_service)
        app.router.add_put("/v1/agent/service/register", self._agent_register)
        app.router.add_put("/v1/agent/service/deregister/{service_id}", self._agent_deregister)
        app.router.add_put("/v1/agent/check/update/{check_id}", self._agent_check_update)
        app.router.add_put("/v1/agent/check/{verb:pass|warn|fail}/{check_id}", self._agent_check_ttl)
        app.router.add_put("/v1/agent/service/maintenance/{service_id}", self._agent_service_maintenance)
        app.router.add_put("/v1/agent/maintenance", self._agent_node_maintenance)
        for check in self._checks.values():  # checks added before start() get their timers now
            self._arm_ttl(check)
            self._arm_reaper(check)
        return app

    async def on_stop(self) -> None:
        """Release parked queries (they answer at once) and cancel timers."""
        self._closing = True
        self._fire()
        for check in self._checks.values():
            _cancel(check)

    # ------------------------------------------------------------------------------ controls

    @property
    def index(self) -> int:
        """The global (Raft) index: the index of the last write."""
        return self._index

    def service_index(self, service: str) -> int:
        """What ``X-Consul-Index`` a health query for ``service`` would carry now."""
        return max(1, self._service_index.get(service) or self._catalog_index)

    def add_node(self, name: str, *, address: str | None = None, meta: Mapping[str, str] | None = None) -> None:
        """Register (or update) a node with a passing ``serfHealth`` check."""
        number = len(self._nodes) + 1
        if name in self._nodes:
            node = self._nodes[name]
            node.address = address or node.address
            node.meta = dict(meta) if meta is not None else node.meta
        else:
            self._nodes[name] = _Node(
                name=name,
                id=str(uuid.UUID(int=self._rng.getrandbits(128))),
                address=address or f"10.0.{number // 250}.{number % 250 + 1}",
                meta=dict(meta or {}),
            )
            self._put_check(_Check(id="serfHealth", node=name, name="Serf Health Status", status="passing"))
        self._write(self._services_on(name), catalog=True)

    def add_instance(
        self,
        service: str,
        *,
        instance_id: str | None = None,
        node: str | None = None,
        address: str = "",
        port: int = 0,
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        status: str | None = "passing",
        check_id: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """Register a service instance (on ``node``, default the agent's); return its ID.

        ``status`` creates one service check ``service:<id>`` with that status (``None``: no check);
        ``ttl`` makes it a TTL check that turns critical unless updated in time.
        """
        instance_id = instance_id or service
        node = node or self.agent_node
        if node not in self._nodes:
            self.add_node(node)
        self._remove_checks_of(instance_id)
        self._index += 1
        previous = self._instances.get(instance_id)
        self._instances[instance_id] = _Instance(
            id=instance_id,
            service=service,
            node=node,
            address=address,
            port=port,
            tags=list(tags),
            meta=dict(meta or {}),
            create_index=previous.create_index if previous else self._index,
            modify_index=self._index,
        )
        if status is not None:
            if status not in CHECK_STATUSES:
                raise ValueError(f"invalid check status {status!r}")
            check = _Check(
                id=check_id or f"service:{instance_id}",
                node=node,
                name=f"Service '{service}' check",
                status=status,
                service_id=instance_id,
                type="ttl" if ttl is not None else "script",
                ttl=ttl,
            )
            self._put_check(check)
        services = {service} | ({previous.service} if previous else set())
        self._write(services, catalog=True)
        return instance_id

    def remove_instance(self, instance_id: str) -> None:
        """Deregister an instance and its checks (``KeyError`` if unknown)."""
        instance = self._instances.pop(instance_id)
        self._remove_checks_of(instance_id)
        self._write({instance.service}, catalog=True)

    def instances(self, service: str | None = None) -> list[str]:
        """IDs of the registered instances (of one service, or all)."""
        return [i.id for i in self._instances.values() if service is None or i.service == service]

    def set_status(self, instance_id: str, status: str, *, output: str = "") -> None:
        """Set every service check of an instance (creating ``service:<id>`` if it has none)."""
        instance = self._instances[instance_id]
        checks = [c for c in self._checks.values() if c.service_id == instance_id]
        checks = [c for c in checks if not c.id.startswith(SERVICE_MAINTENANCE_PREFIX)]
        if not checks:
            check = _Check(id=f"service:{instance_id}", node=instance.node, name="check", status=status)
            check.service_id = instance_id
            self._put_check(check)
            checks = [check]
        for check in checks:
            self._set_check(check, status, output)

    def set_check(self, check_id: str, status: str, *, output: str = "", node: str | None = None) -> None:
        """Set one check's status directly, as its probe would (``node``: default the agent's)."""
        self._set_check(self._check(check_id, node), status, output)

    def check_status(self, check_id: str, *, node: str | None = None) -> str:
        """The current status of one check (``KeyError`` if it does not exist)."""
        return self._check(check_id, node).status

    def _check(self, check_id: str, node: str | None) -> _Check:
        return self._checks[_check_key(node or self.agent_node, check_id)]

    def set_node_health(self, node: str, status: str) -> None:
        """Set the node's ``serfHealth`` check (``critical``: the node is gone from the gossip pool)."""
        self._set_check(self._checks[_check_key(node, "serfHealth")], status, "")

    def set_node_maintenance(self, node: str, enabled: bool, *, reason: str = "") -> None:
        """Add/remove the ``_node_maintenance`` check (status critical, as Consul does)."""
        self._maintenance(node, NODE_MAINTENANCE, "", enabled, reason, "Node Maintenance Mode")

    def set_service_maintenance(self, instance_id: str, enabled: bool, *, reason: str = "") -> None:
        """Add/remove the ``_service_maintenance:<id>`` check of one instance."""
        node = self._instances[instance_id].node
        check_id = SERVICE_MAINTENANCE_PREFIX + instance_id
        self._maintenance(node, check_id, instance_id, enabled, reason, "Service Maintenance Mode")

    def set_index(self, index: int) -> None:
        """Pretend a snapshot restore: every index becomes ``index`` (may go backwards).

        Like Consul's state-store abandon, all parked blocking queries wake up and answer.
        """
        if index < 1:
            raise ValueError("Consul never uses index 0")
        self._index = self._catalog_index = index
        self._restores += 1
        for name in self._service_index:
            self._service_index[name] = index
        self._fire()

    def touch(self, service: str) -> None:
        """A write relevant to ``service`` that changes nothing visible (Consul: return != change)."""
        self._write({service})

    def inject(self, fault: Fault, *, times: int = 1, path_prefix: str = "/v1/health/") -> None:
        """Make the next ``times`` requests whose path starts with ``path_prefix`` misbehave."""
        for _ in range(times):
            self._faults.append((path_prefix, fault))

    def clear_faults(self) -> None:
        """Forget every injected fault not used up yet: Consul answers normally again."""
        self._faults.clear()

    def parked(self, service: str | None = None) -> int:
        """How many blocking queries are waiting right now (on one service, or in total)."""
        return self._parked[service] if service is not None else sum(self._parked.values())

    async def wait_parked(self, service: str | None = None, *, count: int = 1) -> None:
        """Return once at least ``count`` blocking queries are parked: sync tests without sleeps."""
        assert self._parked_changed is not None, "start() the fake first"
        while self.parked(service) < count:
            await self._parked_changed.wait()

    # ------------------------------------------------------------------------- state helpers

    def _fire(self) -> None:
        if self._changed is not None:
            self._changed.fire()

    def _write(self, services: Iterable[str], *, catalog: bool = False) -> None:
        self._index += 1
        for name in services:
            self._service_index[name] = self._index
        if catalog:
            self._catalog_index = self._index
        self._fire()

    def _services_on(self, node: str) -> set[str]:
        return {i.service for i in self._instances.values() if i.node == node}

    def _services_of(self, check: _Check) -> set[str]:
        if check.service_id:
            instance = self._instances.get(check.service_id)
            return {instance.service} if instance else set()
        return self._services_on(check.node)

    def _put_check(self, check: _Check) -> None:
        key = _check_key(check.node, check.id)
        if key in self._checks:
            _cancel(self._checks[key])
        self._index += 1
        check.create_index = check.modify_index = self._index
        self._checks[key] = check
        self._arm_ttl(check)
        self._arm_reaper(check)
        self._write(self._services_of(check))

    def _remove_checks_of(self, instance_id: str) -> None:
        for key, check in list(self._checks.items()):
            if check.service_id == instance_id:
                _cancel(check)
                del self._checks[key]

    def _set_check(self, check: _Check, status: str, output: str, *, refresh_ttl: bool = True) -> None:
        if status not in CHECK_STATUSES:
            raise ValueError(f"invalid check status {status!r}")
        if refresh_ttl:
            self._arm_ttl(check)
        if (check.status, check.output) == (status, output):
            return  # Consul does not write (nor bump the index) when nothing changed
        check.status, check.output = status, output
        self._arm_reaper(check)
        self._write(self._services_of(check))
        check.modify_index = self._index

    def _maintenance(self, node: str, check_id: str, service_id: str, enabled: bool, reason: str, name: str) -> None:
        key = _check_key(node, check_id)
        if enabled:
            notes = reason or "Maintenance mode is enabled for this node or service."
            check = _Check(id=check_id, node=node, name=name, status="critical", notes=notes)
            check.service_id, check.type = service_id, "maintenance"
            self._put_check(check)
        elif key in self._checks:
            check = self._checks.pop(key)
            self._write(self._services_of(check))

    def _arm_ttl(self, check: _Check) -> None:
        if check.ttl is None or self._changed is None:
            return
        if check.ttl_timer is not None:
            check.ttl_timer.cancel()
        loop = asyncio.get_running_loop()
        check.ttl_timer = loop.call_later(check.ttl, self._ttl_expired, check)

    def _ttl_expired(self, check: _Check) -> None:
        check.ttl_timer = None
        if self._checks.get(_check_key(check.node, check.id)) is check:
            output = f"TTL expired (last output before timeout follows): {check.output}"
            self._set_check(check, "critical", output, refresh_ttl=False)

    def _arm_reaper(self, check: _Check) -> None:
        if check.status != "critical":
            if check.reap_timer is not None:
                check.reap_timer.cancel()
                check.reap_timer = None
            return
        if check.deregister_after is None or check.reap_timer is not None or self._changed is None:
            return
        loop = asyncio.get_running_loop()
        check.reap_timer = loop.call_later(check.deregister_after, self._reap, check)

    def _reap(self, check: _Check) -> None:
        check.reap_timer = None
        if check.status == "critical" and check.service_id in self._instances:
            self.remove_instance(check.service_id)

    # -------------------------------------------------------------------------------- HTTP

    def _record(self, endpoint: str, request: web.Request) -> None:
        self.request_counts[endpoint] += 1
        self.requests.append(
            RecordedRequest(endpoint, request.method, request.path, dict(request.query), dict(request.headers))
        )

    def _check_token(self, request: web.Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("X-Consul-Token") or request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if not given and auth.startswith("Bearer "):
            given = auth.removeprefix("Bearer ").strip()
        if given != self.token:
            raise web.HTTPForbidden(text="Permission denied")

    def _next_fault(self, path: str) -> Fault | None:
        for position, (prefix, fault) in enumerate(self._faults):
            if path.startswith(prefix):
                del self._faults[position]
                return fault
        return None

    async def _health_service(self, request: web.Request) -> web.StreamResponse:
        self._record("health.service", request)
        self._check_token(request)
        fault = self._next_fault(request.path)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            fault = None
        if fault is not None and fault.kind in ("status", "reset", "body"):
            return await _apply_fault(fault, request, b"")
        query = request.query
        service = request.match_info["service"]
        index, wait = _blocking_params(query)
        consistency = _consistency(query)
        if query.get("dc", self.datacenter) != self.datacenter:
            raise web.HTTPInternalServerError(text=f"No path to datacenter {query['dc']!r}")
        keep = _compile_filter(query.get("filter", ""))
        if not self.known_leader and consistency != "stale":
            raise web.HTTPInternalServerError(text="No cluster leader")
        if index > 0 and not self._closing and (fault is None or fault.kind != "unblocked"):
            await self._park(service, index, wait)
        passing = "passing" in query and query["passing"].lower() not in ("0", "false")
        body = orjson.dumps([e for e in self._entries(service, passing=passing) if keep(e)])
        headers = self._headers(service, consistency, blocking=index > 0, cached="cached" in query)
        if fault is not None and fault.kind != "unblocked":
            return await _apply_fault(fault, request, body, headers)
        response = web.Response(body=body, headers=headers, content_type="application/json")
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)  # Consul gzips every answer if asked
        return response

    async def _park(self, service: str, index: int, wait: float) -> None:
        assert self._changed is not None, "start() the fake first"
        assert self._parked_changed is not None
        if self.jitter:
            wait += self._rng.uniform(0, wait / 16)
        self._parked[service] += 1
        self._parked_changed.fire()
        restores = self._restores
        try:
            async with asyncio.timeout(wait):
                while self.service_index(service) <= index and not self._closing and restores == self._restores:
                    await self._changed.wait()
        except TimeoutError:
            pass
        finally:
            self._parked[service] -= 1
            self._parked_changed.fire()

    def _headers(self, service: str, consistency: str, *, blocking: bool, cached: bool) -> dict[str, str]:
        headers = {
            "X-Consul-Index": str(self.service_index(service)),
            "X-Consul-Effective-Consistency": consistency,
            "X-Consul-Query-Backend": "streaming" if self.streaming and blocking else "blocking-query",
        }
        if self.streaming and blocking:
            headers["X-Consul-KnownLeader"], headers["X-Consul-LastContact"] = "false", "0"
        elif not cached:
            headers["X-Consul-KnownLeader"] = "true" if self.known_leader else "false"
            headers["X-Consul-LastContact"] = str(self.last_contact_ms if consistency == "stale" else 0)
        if cached:
            headers["X-Cache"], headers["Age"] = "MISS", "0"
        return headers

    def _entries(self, service: str, *, passing: bool) -> list[dict[str, Any]]:
        checks_by_node: dict[str, list[_Check]] = collections.defaultdict(list)
        for check in self._checks.values():
            checks_by_node[check.node].append(check)
        entries = []
        for instance in self._instances.values():
            if instance.service != service:
                continue
            node = self._nodes[instance.node]
            checks = [c for c in checks_by_node[node.name] if c.service_id in ("", instance.id)]
            if passing and any(c.status != "passing" for c in checks):
                continue
            entries.append(
                {
                    "Node": {
                        "ID": node.id,
                        "Node": node.name,
                        "Address": node.address,
                        "Datacenter": self.datacenter,
                        "TaggedAddresses": {"lan": node.address, "wan": node.address},
                        "Meta": node.meta,
                    },
                    "Service": {
                        "ID": instance.id,
                        "Service": instance.service,
                        "Tags": instance.tags,
                        "Address": instance.address,
                        "TaggedAddresses": {},
                        "Meta": instance.meta,
                        "Port": instance.port,
                        "Weights": {"Passing": 1, "Warning": 1},
                        "EnableTagOverride": False,
                        "CreateIndex": instance.create_index,
                        "ModifyIndex": instance.modify_index,
                    },
                    "Checks": [
                        {
                            "Node": c.node,
                            "CheckID": c.id,
                            "Name": c.name,
                            "Status": c.status,
                            "Notes": c.notes,
                            "Output": c.output,
                            "ServiceID": c.service_id,
                            "ServiceName": instance.service if c.service_id else "",
                            "ServiceTags": instance.tags if c.service_id else [],
                            "Type": c.type,
                            "CreateIndex": c.create_index,
                            "ModifyIndex": c.modify_index,
                        }
                        for c in checks
                    ],
                }
            )
        return entries

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="Request decode failed: invalid JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="Request decode failed: expected an object")
        return data

    async def _agent_register(self, request: web.Request) -> web.Response:
        self._record("agent.service.register", request)
        self._check_token(request)
        body = await self._read_json(request)
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise web.HTTPBadRequest(text="Missing service name")
        instance_id = str(body.get("ID") or name)
        raw_checks = list(body.get("Checks") or [])
        if body.get("Check"):
            raw_checks.insert(0, body["Check"])
        checks = [self._parse_check(c, instance_id, n, len(raw_checks)) for n, c in enumerate(raw_checks, 1)]
        self.add_instance(
            name,
            instance_id=instance_id,
            address=str(body.get("Address") or ""),
            port=int(body.get("Port") or 0),
            tags=[str(t) for t in body.get("Tags") or []],
            meta={str(k): str(v) for k, v in (body.get("Meta") or {}).items()},
            status=None,
        )
        for check in checks:
            self._put_check(check)
        return web.Response()

    def _parse_check(self, raw: Any, instance_id: str, number: int, total: int) -> _Check:
        if not isinstance(raw, dict):
            raise web.HTTPBadRequest(text="Invalid check: expected an object")
        status = raw.get("Status") or "critical"
        if status not in CHECK_STATUSES:
            raise web.HTTPBadRequest(text=f"Invalid check status: {status!r}")
        try:
            ttl = parse_go_duration(raw["TTL"]) if raw.get("TTL") else None
            after = raw.get("DeregisterCriticalServiceAfter")
            deregister_after = max(MIN_DEREGISTER_AFTER, parse_go_duration(after)) if after else None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"Invalid check: {exc}") from None
        default_id = f"service:{instance_id}" if total == 1 else f"service:{instance_id}:{number}"
        return _Check(
            id=str(raw.get("CheckID") or raw.get("ID") or default_id),
            node=self.agent_node,
            name=str(raw.get("Name") or f"Service '{instance_id}' check"),
            status=status,
            notes=str(raw.get("Notes") or ""),
            service_id=instance_id,
            type="ttl" if ttl is not None else "http" if raw.get("HTTP") else "tcp" if raw.get("TCP") else "",
            ttl=ttl,
            deregister_after=deregister_after,
        )

    async def _agent_deregister(self, request: web.Request) -> web.Response:
        self._record("agent.service.deregister", request)
        self._check_token(request)
        service_id = request.match_info["service_id"]
        if service_id not in self._instances:
            raise web.HTTPNotFound(text=f'Unknown service ID "{service_id}". Ensure that the service ID is ...')
        self.remove_instance(service_id)
        return web.Response()

    def _ttl_check(self, check_id: str) -> _Check:
        check = self._checks.get(_check_key(self.agent_node, check_id))
        if check is None:
            raise web.HTTPNotFound(text=f'Unknown check ID "{check_id}"')
        if check.ttl is None:
            raise web.HTTPInternalServerError(text=f'CheckID "{check_id}" does not have associated TTL')
        return check

    async def _agent_check_update(self, request: web.Request) -> web.Response:
        self._record("agent.check.update", request)
        self._check_token(request)
        body = await self._read_json(request)
        status = body.get("Status")
        if status not in CHECK_STATUSES:
            raise web.HTTPBadRequest(text=f"Invalid check status: {status!r}")
        check = self._ttl_check(request.match_info["check_id"])
        self._set_check(check, str(status), str(body.get("Output") or ""))
        return web.Response()

    async def _agent_check_ttl(self, request: web.Request) -> web.Response:
        verb = request.match_info["verb"]
        self._record(f"agent.check.{verb}", request)
        self._check_token(request)
        check = self._ttl_check(request.match_info["check_id"])
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[verb]
        self._set_check(check, status, request.query.get("note", ""))
        return web.Response()

    async def _agent_service_maintenance(self, request: web.Request) -> web.Response:
        self._record("agent.service.maintenance", request)
        self._check_token(request)
        service_id = request.match_info["service_id"]
        if service_id not in self._instances:
            raise web.HTTPNotFound(text=f'Unknown service ID "{service_id}"')
        enabled = _enable_param(request.query)
        self.set_service_maintenance(service_id, enabled, reason=request.query.get("reason", ""))
        return web.Response()

    async def _agent_node_maintenance(self, request: web.Request) -> web.Response:
        self._record("agent.maintenance", request)
        self._check_token(request)
        enabled = _enable_param(request.query)
        self.set_node_maintenance(self.agent_node, enabled, reason=request.query.get("reason", ""))
        return web.Response()


# --------------------------------------------------------------------------------- helpers


def _check_key(node: str, check_id: str) -> str:
    # Check IDs are unique per node (agent), not globally: "serfHealth" exists on every node.
    return f"{node}/{check_id}"


def _cancel(check: _Check) -> None:
    for timer in (check.ttl_timer, check.reap_timer):
        if timer is not None:
            timer.cancel()
    check.ttl_timer = check.reap_timer = None


def _enable_param(query: Mapping[str, str]) -> bool:
    value = query.get("enable")
    if value not in ("true", "false"):
        raise web.HTTPBadRequest(text="Missing value for enable")
    return value == "true"


def _blocking_params(query: Mapping[str, str]) -> tuple[int, float]:
    index = 0
    if "index" in query:
        try:
            index = int(query["index"])
        except ValueError:
            raise web.HTTPBadRequest(text="Invalid index") from None
        if index < 0:
            raise web.HTTPBadRequest(text="Invalid index")
    wait = DEFAULT_WAIT
    if "wait" in query:
        try:
            wait = parse_go_duration(query["wait"]) or DEFAULT_WAIT
        except ValueError:
            raise web.HTTPBadRequest(text="Invalid wait time") from None
    return index, min(wait, MAX_WAIT)


def _consistency(query: Mapping[str, str]) -> str:
    stale, consistent, cached = ("stale" in query), ("consistent" in query), ("cached" in query)
    if stale and consistent:
        raise web.HTTPBadRequest(text="Cannot specify ?stale with ?consistent, conflicting semantics.")
    if cached and consistent:
        raise web.HTTPBadRequest(text="Cannot specify ?cached with ?consistent, conflicting semantics.")
    return "stale" if stale else "consistent" if consistent else "leader"


_SELECTOR = r"(?P<sel>(?:Node|Service)\.[A-Za-z]+(?:\.[\w.-]+)?)"
_VALUE = r'"(?P<val>[^"]*)"'
_CLAUSES = (
    re.compile(rf"^{_SELECTOR}\s*(?P<op>==|!=)\s*{_VALUE}$"),
    re.compile(rf"^{_VALUE}\s+(?P<op>in|not in)\s+{_SELECTOR}$"),
    re.compile(rf"^{_SELECTOR}\s+(?P<op>contains|not contains)\s+{_VALUE}$"),
)
_FIELDS = {
    "Node": {"ID", "Node", "Address", "Datacenter", "Meta", "TaggedAddresses"},
    "Service": {"ID", "Service", "Tags", "Address", "Meta", "Port", "TaggedAddresses"},
}


def _compile_filter(expression: str) -> Callable[[dict[str, Any]], bool]:
    """A tiny subset of go-bexpr: clauses joined by ``and``; anything else is a 400, like Consul's."""
    if not expression.strip():
        return lambda entry: True
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for clause in re.split(r"\s+and\s+", expression.strip()):
        match = next((m for p in _CLAUSES if (m := p.match(clause.strip()))), None)
        if match is None:
            raise web.HTTPBadRequest(text=f"Failed to create boolean expression evaluator: {clause!r}")
        path = match["sel"].split(".", 2)
        if path[1] not in _FIELDS[path[0]] or (len(path) == 3) != (path[1] in ("Meta", "TaggedAddresses")):
            raise web.HTTPBadRequest(text=f"Selector {match['sel']!r} is not valid")
        tests.append(_clause(path, match["op"], match["val"]))
    return lambda entry: all(test(entry) for test in tests)


def _clause(path: list[str], op: str, value: str) -> Callable[[dict[str, Any]], bool]:
    def get(entry: dict[str, Any]) -> Any:
        found: Any = entry
        for part in path:
            found = found.get(part) if isinstance(found, dict) else None
        return found

    def test(entry: dict[str, Any]) -> bool:
        found = get(entry)
        if op in ("==", "!="):
            return (str(found) == value if found is not None else False) == (op == "==")
        contained = value in found if isinstance(found, list | str | dict) else False
        return contained == (op in ("in", "contains"))

    return test


async def _apply_fault(
    fault: Fault, request: web.Request, body: bytes, headers: Mapping[str, str] | None = None
) -> web.StreamResponse:
    if fault.kind == "status":
        return web.Response(status=fault.status, body=fault.body, content_type="text/plain")
    if fault.kind == "body":
        return web.Response(status=fault.status, body=fault.body, headers=dict(fault.headers))
    if fault.kind == "malformed":
        return web.Response(body=fault.body, headers=headers, content_type="application/json")
    transport = request.transport
    if fault.kind == "reset":
        _abort(transport)
        return web.Response(status=500)  # never sent: the connection is gone
    # truncated: promise the full body, send half of it, drop the connection.
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    response.content_length = max(len(body), 2)
    await response.prepare(request)
    await response.write(body[: len(body) // 2] or b"[")
    _abort(transport)
    return response


def _abort(transport: asyncio.BaseTransport | None) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:  # SO_LINGER 0: close() sends an RST, as a crashed server would
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
