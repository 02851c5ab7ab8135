"""The server's local Consul agent: register, update the TTL check, deregister.

Does I/O (HTTP to the agent with aiohttp: py-consul has no wrapper for
``/v1/agent/check/update``). ``registration`` builds the register body under the convention the
scaler's source reads (``bolina_scaler.source.schema``): ``Name`` = the service (default
``bolina``), ``ID`` = unique per server (the pod name), ``Address`` = server IP, ``Port`` = TCP
port, ``Meta``: ``server_id``, ``udp_port``, ``pod``, optionally ``load`` (0..1). The TTL check's
status is the stage: passing = Available, warning = Warning, critical = Critical.

Whatever the agent answers is input: a refusal's body is read for its first line only, at most
``ERROR_BODY_BYTES`` of it, never inflated (the requests ask for ``identity``) and decoded with
``errors="replace"``, so no answer (an endless 500, non-UTF-8 bytes, a gzip bomb) can grow the
sidecar's memory or end it with anything but a ``ConsulAgentError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

import aiohttp
import orjson

from bolina_scaler.core.model import Status
from bolina_scaler.reporter.settings import ReporterSettings
from bolina_scaler.source.wire import go_duration

__all__ = ["ERROR_BODY_BYTES", "AgentClient", "ConsulAgentError", "check_status", "registration"]

ERROR_BODY_BYTES = 4096
"""The most of a refusal's body read: its first line is all an error message needs."""
_DETAIL_CHARS = 300

_CHECK_STATUS = {Status.AVAILABLE: "passing", Status.WARNING: "warning", Status.CRITICAL: "critical"}


def check_status(status: Status) -> str:
    """The Consul check status that means ``status`` to the scaler."""
    return _CHECK_STATUS[status]


class _RegisterCheck(TypedDict, total=False):
    CheckID: str
    Name: str
    TTL: str
    Status: str
    Notes: str
    DeregisterCriticalServiceAfter: str


class _Registration(TypedDict):
    Name: str
    ID: str
    Address: str
    Port: int
    Meta: dict[str, str]
    Check: _RegisterCheck


def registration(settings: ReporterSettings, *, status: Status, load: float | None) -> _Registration:
    """The ``PUT /v1/agent/service/register`` body under the convention the scaler reads.

    A registered check has no ``Output``: the reporter sends it with a check update right after.
    """
    meta = {"server_id": settings.server_id, "pod": settings.pod}
    if settings.udp_port is not None:
        meta["udp_port"] = str(settings.udp_port)
    if load is not None and not math.isnan(load):
        meta["load"] = f"{min(1.0, max(0.0, load)):.3f}"
    check: _RegisterCheck = {
        "CheckID": settings.check_id,
        "Name": "Bolina availability",
        "TTL": go_duration(settings.ttl),
        "Status": check_status(status),
        "Notes": "stage reported by bolina-scaler report: passing=available, warning, critical",
    }
    if settings.deregister_critical_after:
        check["DeregisterCriticalServiceAfter"] = go_duration(settings.deregister_critical_after)
    return {
        "Name": settings.service,
        "ID": settings.instance_id,
        "Address": settings.address,
        "Port": settings.tcp_port,
        "Meta": meta,
        "Check": check,
    }


class ConsulAgentError(RuntimeError):
    """The local Consul agent refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def _first_line(response: aiohttp.ClientResponse) -> str:
    """The first line of a refusal's body, from at most ``ERROR_BODY_BYTES`` of it, printable."""
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        return f"({encoding}-encoded body not read)"
    head = bytearray()
    while len(head) < ERROR_BODY_BYTES and b"\n" not in head.lstrip():
        chunk = await response.content.read(ERROR_BODY_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    lines = head.decode("utf-8", errors="replace").strip().splitlines()
    line = "".join(c if c.isprintable() else "\ufffd" for c in lines[0]) if lines else ""
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 1] + "…"


class AgentClient:
    """The three agent endpoints a reporter needs, over aiohttp."""

    def __init__(self, session: aiohttp.ClientSession, *, address: str, token: str | None, timeout: float) -> None:
        self._session = session
        self._base = address.rstrip("/")
        self._headers = {"Accept-Encoding": "identity"}
        if token:
            self._headers["X-Consul-Token"] = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _put(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        url = f"{self._base}{path}"
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.put(
                url, data=data, headers=self._headers, timeout=self._timeout, auto_decompress=False
            ) as response:
                if response.status != 200:
                    detail = await _first_line(response)
                    raise ConsulAgentError(f"PUT {path}: {response.status} {detail}", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConsulAgentError(f"PUT {path}: {type(exc).__name__}: {exc}") from None

    async def register(self, body: Mapping[str, Any]) -> None:
        await self._put("/v1/agent/service/register", body)

    async def update_check(self, check_id: str, *, status: str, output: str) -> None:
        await self._put(f"/v1/agent/check/update/{check_id}", {"Status": status, "Output": output})

    async def deregister(self, instance_id: str) -> None:
        await self._put(f"/v1/agent/service/deregister/{instance_id}")
