"""One way to send a Kubernetes API request: typed errors, retries, metrics, each problem logged once.

Does I/O (through the ``kubernetes_asyncio`` ``ApiClient`` of a ``connection.Connection``). Every
request of the daemon (scale, Lease, Events, pods, the Deployment) goes through ``KubeApi.call``;
a verb module asks ``KubeApi.resource`` for a ``Resource`` (an object, or a collection, at one
path) and says only the operation and the body: ``await leases.item(name).put(UPDATE, body=...,
answer=schema.LEASE)``. A request is sent by ``KubeApi.request`` (or ``open`` for a stream): a
method, a path and a body through the library's REST client, the answer read by its ``schema``
decoder, at most ``MAX_ANSWER_BYTES``. The library's generated API classes and models are never
imported (``lazy_client``: ~37 MB and ~850 modules the daemon does not need). ``call``:

* times the request (retries included) in ``bolina_scaler_kubernetes_request_duration_seconds``
  and counts a failure in ``bolina_scaler_kubernetes_errors_total``, by operation;
* retries transient failures (429, 5xx, timeouts, dropped connections) when the operation allows
  more than one attempt, and honours ``Retry-After`` up to ``kubernetes.retry_after_max`` (5 s
  shipped): no delay a server asks for (``inf``, ``1e9``, an hour, an HTTP-date next year) holds
  a request longer, and when it is up one request probes;
* while the API server fails, lets one request through at a time, every ``retry_initial`` to
  ``retry_max`` (a probe shared by the scale, the Lease, Events and pods: with the shipped
  0.5-1 s, at most two requests a second from the whole daemon), and opens again at the first
  answer (a refusal or a malformed answer is an answer too), waking every request that waits
  for its turn;
* turns every failure into the exception tree of ``errors`` (re-exported here), whose ``str()``
  is one line naming the object, the HTTP status and what to do;
* with a ``ProblemLog``, logs a failure once per distinct problem (an error when an essential
  operation meets 401/403/404, a warning otherwise) and the recovery once; ``expected`` errors
  (a 404 that means "create it", a 409 that means "decide again") are raised without a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import aiohttp
import structlog
from kubernetes_asyncio.client.exceptions import ApiException

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.connection import SERVICE_ACCOUNT_DIR, Connection, KubeConfigError, connect
from bolina_scaler.actuator.errors import (
    Conflict,
    Forbidden,
    KubernetesError,
    Malformed,
    NotFound,
    Refused,
    Subject,
    Unavailable,
    refusal,
)
from bolina_scaler.config import KubernetesConfig
from bolina_scaler.core.pacing import Backoff
from bolina_scaler.logs import ProblemLog
from bolina_scaler.metrics import Metrics

__all__ = [
    "MAX_ANSWER_BYTES",
    "MERGE_PATCH",
    "Conflict",
    "Forbidden",
    "KubeApi",
    "KubernetesError",
    "Malformed",
    "NotFound",
    "Operation",
    "Resource",
    "Subject",
    "Unavailable",
    "read_capped",
]

MERGE_PATCH: Final = "application/merge-patch+json"
"""A JSON merge patch (a strategic-merge patch needs the server to know the schema; ours never do)."""
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
"""The largest answer read: a metadata-only list of 10,000 pods is ~5 MB; etcd caps an object at 1.5 MiB."""

_T = TypeVar("_T")
_TURN_SLACK: Final = 1e-3
_log = structlog.get_logger("bolina_scaler.actuator")


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One kind of request: its metrics label, its RBAC verb, and how many tries it gets."""

    name: str
    """The ``operation`` label of the metrics: ``scale_read``, ``lease_update``, ``pod_patch``, …"""
    verb: str
    """The RBAC verb: ``get``, ``patch``, ``create``, ``update``, ``list``."""
    attempts: int = 1
    expected: tuple[type[KubernetesError], ...] = ()
    """Errors that are a normal answer for this operation: raised, never logged."""
    essential: bool = False
    """The scaler cannot work without it (the scale): a 401/403/404 is logged as an error, not a
    warning, since only a person can mend it. Best-effort operations (Events, pods) warn."""


class KubeApi:
    """The daemon's one Kubernetes connection and ``call``. ``async with KubeApi(config) as api:``."""

    def __init__(
        self,
        config: KubernetesConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``, ``rng``, ``service_account_dir``, ``environ``, ``wall_clock``: test hooks."""
        self.config = config
        self.metrics = metrics
        self.succeeded_at: float | None = None
        """When a request last got a 2xx answer (loop time); None before the first."""
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._service_account_dir = service_account_dir
        self._environ = environ
        self._connection: Connection | None = None
        self._probe = Backoff(config.retry_initial, config.retry_max, self._rng)
        self._not_before: float | None = None
        """While the API server fails: no request of any part before this (loop time)."""
        self._reopened = asyncio.Event()
        """Set by the first answer after a failure: wakes every request waiting for its turn."""

    async def __aenter__(self) -> KubeApi:
        try:
            self._connection = await connect(
                self.config, service_account_dir=self._service_account_dir, environ=self._environ
            )
        except KubeConfigError as exc:
            raise KubernetesError(str(exc)) from exc
        _log.info(
            "kubernetes.connected",
            source=self._connection.source,
            host=self._connection.api_client.configuration.host,
            namespace=self.namespace,
            deployment=self.config.deployment,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    @property
    def _live(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("use KubeApi inside 'async with'")
        return self._connection

    @property
    def api_client(self) -> Any:
        """The shared ``kubernetes_asyncio`` ``ApiClient`` (untyped library)."""
        return self._live.api_client

    @property
    def namespace(self) -> str:
        """Configured, else the pod's service-account namespace, else the kubeconfig's, else default."""
        return self.config.namespace or self._live.namespace

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def resource(self, subject: Subject, path: str, *, problems: ProblemLog | None = None) -> Resource:
        """The requests about ``subject`` at ``path`` (relative to the API server), sent through ``call``."""
        return Resource(api=self, subject=subject, path=path, problems=problems)

    async def request(
        self,
        method: str,
        path: str,
        *,
        answer: schema.Answer[_T],
        limit: int = MAX_ANSWER_BYTES,
        **sending: Any,
    ) -> _T:
        """Send one request (``sending``: as ``open`` takes it) and read its answer with ``answer``:
        a non-2xx answer raises ``Refused``, one that ``answer`` cannot read ``ValueError``."""
        response = await self.open(method, path, **sending)
        async with response:
            data = await read_capped(response, limit)
        return answer.decode(data)

    async def open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
        request_timeout: Any = None,
    ) -> Any:
        """Send one request and return the open ``aiohttp`` response (a 2xx one: else ``Refused``).
        ``request_timeout`` defaults to ``kubernetes.request_timeout``; a watch passes its own."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            response = await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self.config.request_timeout if request_timeout is None else request_timeout,
            )
        except ApiException as exc:  # the library raises it only for a body it cannot encode (ours is JSON)
            raise Refused(status=int(exc.status or 0), reason=exc.reason) from exc
        if not 200 <= response.status <= 299:
            async with response:
                try:
                    text = await read_capped(response, 64 * 1024)
                except (ValueError, aiohttp.ClientError):
                    text = b""  # the status alone says enough
            raise Refused(status=response.status, reason=response.reason, body=text, headers=response.headers)
        return response

    async def call(
        self,
        operation: Operation,
        request: Callable[[], Awaitable[_T]],
        *,
        subject: Subject,
        resource_version: str | None = None,
        problems: ProblemLog | None = None,
    ) -> _T:
        """Send ``request()`` (again on transient failures, up to ``operation.attempts``); see the module doc."""
        if self.metrics is None:
            return await self._attempts(operation, request, subject, resource_version, problems)
        with self.metrics.kube_call(operation.name, self.now):
            return await self._attempts(operation, request, subject, resource_version, problems)

    async def _attempts(
        self,
        operation: Operation,
        request: Callable[[], Awaitable[_T]],
        subject: Subject,
        resource_version: str | None,
        problems: ProblemLog | None,
    ) -> _T:
        try:
            answer = await self._retrying(operation, request, subject, resource_version)
        except KubernetesError as exc:
            if problems is not None and not isinstance(exc, operation.expected):
                level = "error" if operation.essential and isinstance(exc, Forbidden | NotFound) else "warning"
                problems.failed(str(exc), key=operation.name, level=level, operation=operation.name)
            raise
        if problems is not None:
            problems.recovered(key=operation.name, operation=operation.name)
        return answer

    async def _retrying(
        self,
        operation: Operation,
        request: Callable[[], Awaitable[_T]],
        subject: Subject,
        resource_version: str | None,
    ) -> _T:
        doing = subject.doing(operation.verb)
        for attempt in range(1, operation.attempts + 1):
            await self._turn()
            try:
                answer = await request()
            except Refused as exc:
                if not exc.transient:
                    self._answered()
                    raise refusal(exc, subject=subject, verb=operation.verb, resource_version=resource_version) from exc
                problem, last_status = f"HTTP {exc.status} {exc.why}", exc.status
                asked = exc.retry_after(wall_now=self._wall_clock())
                wait = None if asked is None else min(asked, self.config.retry_after_max)
                self._failing(wait)
                self._check_retry_after(doing, problem, exc, asked=asked, wait=wait)
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem, last_status = self._no_answer(exc), None
                self._failing(None)
            except (ValueError, TypeError) as exc:  # an answer all the same: the gate opens
                self._answered()
                raise Malformed(f"malformed answer: {doing} returned {schema.problem(exc)}") from exc
            else:
                self._answered()
                self.succeeded_at = self.now()
                return answer
            if attempt == operation.attempts:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise Unavailable(
                    f"unavailable: could not {doing}{tries}, last: {problem} "
                    "(is the API server overloaded or unreachable? will try again later)",
                    status=last_status,
                )
            _log.warning(
                "kubernetes.retrying",
                message="a transient failure; trying again",
                operation=operation.name,
                object=subject.doing(operation.verb),
                attempt=attempt,
                problem=problem,
                delay=round(max(0.0, (self._not_before or 0.0) - self.now()), 3),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_retry_after(
        self, doing: str, problem: str, refused: Refused, *, asked: float | None, wait: float | None
    ) -> None:
        """A ``Retry-After`` beyond ``kubernetes.retry_max`` is not waited for here: ``Unavailable``,
        carrying the wait (``asked``, capped at ``kubernetes.retry_after_max``) for the caller."""
        if asked is None or wait is None or asked <= self.config.retry_max:
            return
        if asked > wait:
            then = f"waiting kubernetes.retry_after_max ({wait:g}s) instead, then trying again"
        else:
            then = "will try again then"
        raise Unavailable(
            f"unavailable: could not {doing}: {problem}, and the API server asks "
            f"to wait {asked:.6g}s (more than kubernetes.retry_max); {then}",
            status=refused.status,
            retry_after=wait,
        ) from refused

    def _no_answer(self, exc: TimeoutError | aiohttp.ClientError) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.config.request_timeout:g}s (kubernetes.request_timeout)"
        return f"connection error: {' '.join(str(exc).split()) or type(exc).__name__}"

    # -- the probe while the API server fails -------------------------------------------------

    async def _turn(self) -> None:
        """Wait for this request's turn: at once while the API server answers; while it fails,
        one request at a time, ``retry_initial`` to ``retry_max`` apart, whoever sends it."""
        while self._not_before is not None:
            now = self.now()
            # A millisecond of slack: a timer may fire a rounding error early, and waiting that
            # error again would not move a clock that only moves with the timers (looptime).
            if self._not_before - now <= _TURN_SLACK:
                self._not_before = now + self._probe.next_delay()  # the next caller's turn
                return
            # Wait for the turn, or for an answer to someone else's probe (the API server is back:
            # a Lease renewal or a scale read must not sit out the rest of a turn it no longer needs).
            # asyncio.timeout: a 3.11 wait_for cancelled as the event is set swallows the cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._not_before - now):
                    await self._reopened.wait()

    def _failing(self, retry_after: float | None) -> None:
        """No answer (or 429/5xx): from now on, requests take turns; ``Retry-After`` (capped by the
        caller at ``kubernetes.retry_after_max``) is honoured: the gate opens for one probe at most
        that long from now, whatever was asked before."""
        now = self.now()
        earliest = now + (retry_after or 0.0)
        if self._not_before is None:
            earliest = max(earliest, now + self._probe.next_delay())
            self._reopened = asyncio.Event()  # the gate closes: waiters wait for this one
        self._not_before = max(self._not_before or 0.0, earliest)

    def _answered(self) -> None:
        """The API server answered: everyone may send again at once."""
        if self._not_before is not None:
            self._not_before = None
            self._probe.reset()
            self._reopened.set()


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """The requests about one subject at one path (``KubeApi.resource``): each verb sends through
    ``call`` with the subject and the ``ProblemLog``, and reads the answer with its ``schema`` decoder."""

    api: KubeApi
    subject: Subject
    path: str
    problems: ProblemLog | None = None

    def item(self, name: str) -> Resource:
        """The object ``name`` of this collection (same subject: one message for all of them)."""
        return replace(self, path=f"{self.path}/{name}")

    async def get(self, operation: Operation, *, answer: schema.Answer[_T], **sending: Any) -> _T:
        return await self._send(operation, "GET", answer=answer, **sending)

    async def post(self, operation: Operation, *, body: Any, answer: schema.Answer[_T]) -> _T:
        return await self._send(operation, "POST", answer=answer, body=body)

    async def put(self, operation: Operation, *, body: Any, answer: schema.Answer[_T]) -> _T:
        return await self._send(operation, "PUT", answer=answer, body=body)

    async def patch(
        self, operation: Operation, *, body: Any, answer: schema.Answer[_T], resource_version: str | None = None
    ) -> _T:
        """A JSON merge patch; ``resource_version`` names the precondition in a 409's message."""
        return await self._send(
            operation, "PATCH", answer=answer, body=body, content_type=MERGE_PATCH, resource_version=resource_version
        )

    async def watch(self, operation: Operation, *, query: list[tuple[str, str]], request_timeout: Any) -> Any:
        """Open a watch stream: the open ``aiohttp`` response, read by the caller."""
        return await self.api.call(
            operation,
            lambda: self.api.open("GET", self.path, query=query, request_timeout=request_timeout),
            subject=self.subject,
            problems=self.problems,
        )

    async def _send(
        self,
        operation: Operation,
        method: str,
        *,
        answer: schema.Answer[_T],
        resource_version: str | None = None,
        **request: Any,
    ) -> _T:
        return await self.api.call(
            operation,
            lambda: self.api.request(method, self.path, answer=answer, **request),
            subject=self.subject,
            resource_version=resource_version,
            problems=self.problems,
        )


async def read_capped(response: Any, limit: int) -> bytes:
    """The whole body of an ``aiohttp`` response (``content.read(n)`` returns whatever has
    arrived), at most ``limit`` bytes: ``schema.AnswerError`` beyond."""
    body = bytearray()
    while chunk := await response.content.read(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise schema.AnswerError(f"an answer larger than {limit} bytes")
    return bytes(body)
