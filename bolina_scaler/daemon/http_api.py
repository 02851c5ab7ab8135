"""The daemon's HTTP API: health, readiness, Prometheus metrics, the servers API and "explain".

Does I/O (an aiohttp server on one port, ``http.port``, default 8080). Every answer is computed
from the daemon's in-memory ``DaemonState``, read once per request: a load balancer polling ``/v1/servers`` never
causes a Consul query, and the servers API's answers are ranked and encoded once per fleet, off
the event loop (``servers_view``). ``build_app`` takes a function that reads the state, so tests
build the app around a state they fill by hand; ``HttpServer`` runs it. The API is described in
``bolina_scaler/openapi.yaml`` (served at ``/openapi.yaml``).

=====================  =====================================================================
``GET /healthz``       liveness: the event loop answers and the Consul watch task is running
``GET /readyz``        the last trusted Consul snapshot is younger than ``http.readiness_max_age``,
                       the Deployment's scale was read, and the daemon is not stuck (a change it
                       wants unmade, or an evaluation waiting on the API server, for longer than
                       ``http.readiness_max_stuck``); otherwise 503 with the reasons
``GET /metrics``       Prometheus text format (the README lists every metric)
``GET /v1/servers``    the seed's JSON list, best candidate first (Available, then Warning, least
                       loaded first); Critical only with ``?all=1``; ``?status=a,b`` filters
``GET /v1/servers/best``  the one server a new client should use; 503 when none is Available
``GET /v1/decision``   the last evaluation: inputs, every clamp, what was done (or, on a
                       follower or a dry-run shadow, what it would do), and the pause in force
=====================  =====================================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from importlib import resources
from types import TracebackType
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from bolina_scaler.config import Config
from bolina_scaler.core.decision import Decision, Direction, Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Status
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.role import Role
from bolina_scaler.daemon.connections import ConnectionGuard
from bolina_scaler.daemon.servers_view import ServersCache
from bolina_scaler.daemon.state import DaemonState
from bolina_scaler.metrics import CONTENT_TYPE, Metrics, StateReading

__all__ = ["HttpServer", "build_app", "readiness_problems", "summary"]

_TRUE: Final = {"1", "true", "yes"}
_NO_STORE: Final = {"Cache-Control": "no-store"}

STATE_KEY: Final = web.AppKey[Callable[[], DaemonState]]("state")
CONFIG_KEY: Final = web.AppKey("config", Config)
METRICS_KEY: Final = web.AppKey("metrics", Metrics)
CLOCK_KEY: Final = web.AppKey[Callable[[], float]]("clock")
SERVERS_KEY: Final = web.AppKey("servers", ServersCache)
_ALL: Final = frozenset(Status)
_SERVING: Final = frozenset({Status.AVAILABLE, Status.WARNING})


def summary(decision: Decision, *, outcome: Outcome | None, role: Role = Role.LEADER) -> str:
    """One sentence for ``/v1/decision``: what was done, or what a follower would do."""
    change = f"{decision.current} → {decision.desired}"
    if decision.changes_scale:
        verb = (
            {
                Outcome.PATCHED: f"scaled {change}",
                Outcome.DRY_RUN: f"dry run: would scale {change}",
                Outcome.CONFLICT: f"tried to scale {change}; the scale changed meanwhile, deciding again",
                Outcome.FAILED: f"failed to scale {change}",
            }.get(outcome, f"would scale {change}")
            if outcome is not None
            else f"would scale {change}"
        )
    elif decision.reason is Reason.PAUSED:
        verb = f"paused at {decision.current}"
    elif decision.direction is Direction.HOLD:
        verb = f"holding at {decision.current}"
    else:
        verb = f"no change at {decision.current}"
    text = f"{verb} ({decision.reason}): {decision.message}"
    return f"follower: {text}" if role is Role.FOLLOWER else text


def build_app(
    *, state: Callable[[], DaemonState], config: Config, metrics: Metrics, clock: Callable[[], float]
) -> web.Application:
    """The aiohttp application serving what ``state()`` says (``Daemon.state``)."""
    app = web.Application()
    app[STATE_KEY], app[CONFIG_KEY], app[METRICS_KEY], app[CLOCK_KEY] = state, config, metrics, clock
    app[SERVERS_KEY] = cache = ServersCache()

    async def close_cache(_: web.Application) -> None:
        cache.close()

    app.on_cleanup.append(close_cache)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/servers", _servers)
    app.router.add_get("/v1/servers/best", _best)
    app.router.add_get("/v1/decision", _decision)
    app.router.add_get("/openapi.yaml", _openapi)
    return app


LISTEN_BACKLOG: Final = 1024
"""Ready connections the kernel may queue for ``accept`` (capped by ``net.core.somaxconn``)."""


async def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket on ``host`` (an address or a name: its first address) and ``port``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address[:2], family=family)


class HttpServer:
    """Serve the API on ``host:port`` (port 0: a free one): ``async with HttpServer(app, ...) as s: s.url``.

    Every connection goes through a ``ConnectionGuard``: at most ``guard.limit`` at once, and
    none idle (sending its request, reading its answer, kept alive) for more than
    ``guard.idle_timeout`` seconds. asyncio accepts at most ``guard.limit`` connections per loop
    iteration (one burst of descriptors before the guard drops the surplus); the kernel queues up
    to ``LISTEN_BACKLOG`` more, which cost the process nothing until accepted.
    """

    def __init__(self, app: web.Application, *, host: str, port: int, guard: ConnectionGuard | None = None) -> None:
        self._app, self._host, self._port = app, host, port
        self.guard = guard if guard is not None else ConnectionGuard()
        self._app.middlewares.append(self.guard.middleware)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in {"0.0.0.0", "", "::"} else self._host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> HttpServer:
        _quiet_bad_requests()
        guard = self.guard
        self._runner = web.AppRunner(
            self._app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=guard.idle_timeout
        )
        await self._runner.setup()
        protocol = self._runner.server
        assert protocol is not None
        loop = asyncio.get_running_loop()
        listening = await _listening_socket(self._host, self._port)
        self._server = await loop.create_server(guard.protocol_factory(protocol), sock=listening, backlog=guard.limit)
        # asyncio accepts at most ``backlog`` connections per loop iteration: one burst of
        # descriptors. The kernel may queue many more ready connections without costing the
        # process one, so that under a flood a probe waits its turn (tried with 1,100 hostile
        # clients: at most ~0.7 s) rather than having its SYN dropped and retried (~2 s).
        listening.listen(LISTEN_BACKLOG)
        self.port = int(listening.getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.guard.close_all()


class _BadRequests(logging.Filter):
    """Drops aiohttp's error line (with a traceback) for a request it could not parse: that is the
    client's problem, answered with a 400, and a flood of junk must not become a flood of log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def _quiet_bad_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequests) for f in logger.filters):
        logger.addFilter(_BadRequests())


# -- handlers --------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    if not request.app[STATE_KEY]().watching:
        return web.json_response({"status": "unhealthy", "problems": ["the Consul watch is not running"]}, status=503)
    return web.json_response({"status": "ok"})


def readiness_problems(state: DaemonState, config: Config, now: float) -> list[str]:
    """Why the daemon is not ready (empty: ready)."""
    problems: list[str] = []
    limit = config.http.readiness_max_age
    snapshot = state.snapshot
    if state.trusted_at is None:
        problems.append("no trusted Consul snapshot yet")
    elif now - state.trusted_at > limit:
        problems.append(f"the last trusted Consul snapshot is {now - state.trusted_at:.0f}s old (limit {limit:g}s)")
    if problems and snapshot is not None and not snapshot.trusted:
        problems.append(f"Consul data is untrusted: {snapshot.trust}")
    if state.read_error is not None:
        problems.append(f"reading the Deployment's scale failed: {state.read_error}")
    elif state.scale_read_at is None:
        problems.append("the Deployment's scale has not been read yet")
    stuck = stuck_for(state, now)
    if stuck is not None and stuck > config.http.readiness_max_stuck:
        what = (
            "a scale change it wants has not been made"
            if state.unapplied_since is not None and now - state.unapplied_since >= stuck
            else "an evaluation has waited for the Kubernetes API server"
        )
        succeeded = state.kube_succeeded_at
        last = (
            "no Kubernetes request has succeeded yet"
            if succeeded is None
            else f"the last Kubernetes request that succeeded was {now - succeeded:.0f}s ago"
        )
        problems.append(
            f"stuck: {what} for {stuck:.0f}s (limit {config.http.readiness_max_stuck:g}s, "
            f"http.readiness_max_stuck); {last}"
        )
    return problems


def stuck_for(state: DaemonState, now: float) -> float | None:
    """How long the daemon has been stuck (``DaemonState.stuck_since``); None when it is not."""
    since = state.stuck_since()
    return None if since is None else max(0.0, now - since)


async def _readyz(request: web.Request) -> web.Response:
    app = request.app
    problems = readiness_problems(app[STATE_KEY](), app[CONFIG_KEY], app[CLOCK_KEY]())
    if problems:
        return web.json_response({"ready": False, "problems": problems}, status=503)
    return web.json_response({"ready": True})


async def _metrics(request: web.Request) -> web.Response:
    app = request.app
    state, metrics = app[STATE_KEY](), app[METRICS_KEY]
    now = app[CLOCK_KEY]()
    succeeded = state.kube_succeeded_at
    reading = StateReading(
        snapshot=state.snapshot,
        stuck_seconds=stuck_for(state, now) or 0.0,
        kube_since_success=None if succeeded is None else max(0.0, now - succeeded),
        last_trusted_at=state.trusted_wall_at,
        current=state.scale.replicas if state.scale is not None else None,
        decision=state.decision,
        leader=state.role is Role.LEADER,
        ready=not readiness_problems(state, app[CONFIG_KEY], now),
        paused=(state.pause is not None) if state.pause_known else None,
    )
    metrics.refresh(reading)
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _snapshot_or_503(request: web.Request) -> FleetSnapshot:
    snapshot = request.app[STATE_KEY]().snapshot
    if snapshot is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "no Consul snapshot yet"}', content_type="application/json", headers=_NO_STORE
        )
    return snapshot


def _headers(request: web.Request, snapshot: FleetSnapshot) -> dict[str, str]:
    age = max(0.0, request.app[CLOCK_KEY]() - snapshot.observed_at)
    return _NO_STORE | {
        "X-Consul-Index": str(snapshot.index),
        "X-Bolina-Trusted": str(snapshot.trusted).lower(),
        "X-Bolina-Snapshot-Age": f"{age:.3f}",
    }


async def _servers(request: web.Request) -> web.Response:
    snapshot = _snapshot_or_503(request)
    wanted: frozenset[Status]
    raw_status = request.query.get("status")
    if raw_status:
        try:
            wanted = frozenset(Status(part.strip().lower()) for part in raw_status.split(",") if part.strip())
        except ValueError:
            raise web.HTTPBadRequest(
                text='{"error": "status must be available, warning or critical (comma-separated)"}',
                content_type="application/json",
            ) from None
    elif request.query.get("all", "").lower() in _TRUE:
        wanted = _ALL
    else:
        wanted = _SERVING
    body = await request.app[SERVERS_KEY].listing(snapshot.servers, wanted)
    return web.Response(body=body, content_type="application/json", headers=_headers(request, snapshot))


async def _best(request: web.Request) -> web.Response:
    snapshot = _snapshot_or_503(request)
    best = await request.app[SERVERS_KEY].best(snapshot.servers)
    if best is None:
        return web.json_response({"error": "no Available server"}, status=503, headers=_headers(request, snapshot))
    return web.Response(body=best, content_type="application/json", headers=_headers(request, snapshot))


async def _decision(request: web.Request) -> web.Response:
    app = request.app
    state, now = app[STATE_KEY](), app[CLOCK_KEY]()
    decision = state.decision
    if decision is None or state.decided_at is None:
        return web.json_response({"error": "no evaluation yet"}, status=503, headers=_NO_STORE)
    body = {
        "summary": summary(decision, outcome=state.outcome, role=state.role),
        "role": state.role,
        "identity": state.identity,
        "lease_holder": state.holder,
        "outcome": state.outcome,
        "dry_run": app[CONFIG_KEY].dry_run,
        "paused": state.pause is not None,
        "pause": _pause(state, now),
        "age_seconds": round(max(0.0, now - state.decided_at), 3),
        "recheck_in_seconds": None if decision.recheck_at is None else round(max(0.0, decision.recheck_at - now), 3),
        "decision": decision.as_dict(),
        "policy_decision": None if state.policy_decision is None else state.policy_decision.as_dict(),
    }
    return web.json_response(body, headers=_NO_STORE, dumps=_dumps)


def _pause(state: DaemonState, now: float) -> dict[str, Any]:
    """The pause annotations as read: in force or not, since when, and whether they could be read."""
    pause = state.pause
    return {
        "known": state.pause_known,
        "annotation": None if pause is None else pause.source,
        "held_replicas": None if pause is None else pause.replicas,
        "problem": None if pause is None else pause.problem,
        "since_seconds": None if state.paused_since is None else round(max(0.0, now - state.paused_since), 3),
        "read_error": state.pause_error,
    }


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str, ensure_ascii=False)


async def _openapi(request: web.Request) -> web.Response:
    text = resources.files("bolina_scaler").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return web.Response(text=text, content_type="application/yaml")
