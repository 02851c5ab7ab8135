"""The Kubernetes actuator: read and patch the Bolina Deployment's ``scale`` subresource.

Does I/O (HTTP to the API server through ``kubernetes_asyncio``). It exists so that the daemon
sees two calls with typed outcomes instead of ``ApiException`` status codes:

* transient failures (429, 5xx, timeouts, dropped connections) are retried here with jittered
  backoff that honours ``Retry-After``, and become ``Unavailable`` only when they persist;
* 401/403 become ``Forbidden``, 404 ``NotFound``, 409 ``Conflict``, immediately; every message
  is one line naming the Deployment, the namespace, the HTTP status and what to do.

Writes are optimistic: ``patch`` sends the ``resourceVersion`` it was given as a precondition
in a JSON *merge* patch (the library would otherwise pick strategic-merge for a dict body), so a
concurrent change — a person running ``kubectl scale`` — fails with ``Conflict`` instead of
being overwritten. The daemon then re-reads and decides again. Every request carries
``_request_timeout`` because the library's default is to wait forever.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from bolina_scaler.config import KubernetesConfig
from bolina_scaler.kube import SERVICE_ACCOUNT_DIR, Connection, KubeConfigError, connect
from bolina_scaler.pacing import Backoff

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MERGE_PATCH",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Scale",
    "ScaleError",
    "ScaleTarget",
    "Unavailable",
]

MERGE_PATCH: Final = "application/merge-patch+json"
DEFAULT_MAX_ATTEMPTS: Final = 5

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """The Deployment's scale subresource: desired and observed replicas, and its version."""

    replicas: int
    status_replicas: int
    resource_version: str
    selector: str | None
    uid: str | None = field(default=None, compare=False)
    """The Deployment's uid (the Scale carries it): Events name their involved object by it."""


class ScaleError(Exception):
    """Reading or patching the scale failed; ``str()`` is one line that says what to do."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Forbidden(ScaleError):
    """401/403: the credentials are wrong or RBAC does not allow the call. Not retried."""


class NotFound(ScaleError):
    """404: the Deployment (or namespace) does not exist. Not retried."""


class Conflict(ScaleError):
    """409: the Deployment changed after the given resourceVersion; re-read and decide again."""


class Unavailable(ScaleError):
    """429/5xx/timeouts/connection errors that persisted through every retry."""


class ScaleTarget:
    """The Bolina Deployment's scale subresource. ``async with ScaleTarget(config) as target:``."""

    def __init__(
        self,
        config: KubernetesConfig,
        *,
        service_account_dir: Path = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        rng: random.Random | None = None,
    ) -> None:
        """``service_account_dir``, ``environ`` and ``rng`` are test hooks; ``max_attempts``
        bounds the tries of one call (including the first)."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._config = config
        self._service_account_dir = service_account_dir
        self._environ = environ
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()
        self._connection: Connection | None = None

    async def __aenter__(self) -> ScaleTarget:
        try:
            self._connection = await connect(
                self._config, service_account_dir=self._service_account_dir, environ=self._environ
            )
        except KubeConfigError as exc:
            raise ScaleError(str(exc)) from exc
        _log.info(
            "kubernetes.connected",
            source=self._connection.source,
            host=self._connection.api_client.configuration.host,
            namespace=self.namespace,
            deployment=self.deployment,
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
            raise RuntimeError("use ScaleTarget inside 'async with'")
        return self._connection

    @property
    def api_client(self) -> Any:
        """The shared ``kubernetes_asyncio`` ``ApiClient`` (events, leases, pods reuse it)."""
        return self._live.api_client

    @property
    def namespace(self) -> str:
        """Configured, else the pod's service-account namespace, else the kubeconfig's, else default."""
        return self._config.namespace or self._live.namespace

    @property
    def deployment(self) -> str:
        return self._config.deployment

    async def read(self) -> Scale:
        """GET the scale subresource."""
        apps = client.AppsV1Api(self.api_client)
        return await self._call(
            "get",
            lambda: apps.read_namespaced_deployment_scale(
                self.deployment, self.namespace, _request_timeout=self._config.request_timeout
            ),
            resource_version=None,
        )

    async def patch(self, replicas: int, *, resource_version: str | None) -> Scale:
        """Set ``spec.replicas``; with ``resource_version``, only if nothing changed since (else Conflict)."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        apps = client.AppsV1Api(self.api_client)
        return await self._call(
            "patch",
            # The .pyi stub omits ``_content_type``; the runtime has accepted it since 30.1.0.
            lambda: apps.patch_namespaced_deployment_scale(  # type: ignore[call-arg]
                self.deployment,
                self.namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self._config.request_timeout,
            ),
            resource_version=resource_version,
        )

    # ------------------------------------------------------------------ internals

    def _what(self, verb: str) -> str:
        return f"{verb} deployments/scale '{self.deployment}' in namespace '{self.namespace}'"

    async def _call(self, verb: str, request: Callable[[], Awaitable[Any]], *, resource_version: str | None) -> Scale:
        backoff = Backoff(initial=self._config.retry_initial, maximum=self._config.retry_max, rng=self._rng)
        for attempt in range(1, self._max_attempts + 1):
            try:
                answer = await request()
            except ApiException as exc:
                status = int(exc.status or 0)
                if status != 429 and status < 500:
                    raise self._failure(verb, exc, resource_version) from exc
                problem = f"HTTP {status} {_status_reason(exc)}"
                retry_after = _retry_after(exc)
                if retry_after is not None and retry_after > self._config.retry_max:
                    raise Unavailable(
                        f"unavailable: could not {self._what(verb)}: {problem}, and the API server asks "
                        f"to wait {retry_after:g}s (more than kubernetes.retry_max); will try again later",
                        status=status,
                    ) from exc
                delay = max(retry_after or 0.0, backoff.next_delay())
                last_status: int | None = status
            except TimeoutError:
                problem = f"no answer within {self._config.request_timeout:g}s (kubernetes.request_timeout)"
                delay, last_status = backoff.next_delay(), None
            except aiohttp.ClientError as exc:
                problem = f"connection error: {' '.join(str(exc).split()) or type(exc).__name__}"
                delay, last_status = backoff.next_delay(), None
            except (ValueError, TypeError) as exc:
                # The library could not turn the body into a V1Scale (e.g. status.replicas missing).
                raise ScaleError(
                    f"malformed answer: {self._what(verb)} returned something that is not a Scale "
                    f"({' '.join(str(exc).split())[:200]})"
                ) from exc
            else:
                return self._scale(verb, answer)
            if attempt == self._max_attempts:
                raise Unavailable(
                    f"unavailable: could not {self._what(verb)} after {attempt} attempts, last: {problem} "
                    "(is the API server overloaded or unreachable? will try again later)",
                    status=last_status,
                )
            _log.warning(
                "kubernetes.retry",
                verb=verb,
                deployment=self.deployment,
                namespace=self.namespace,
                attempt=attempt,
                problem=problem,
                delay=round(delay, 3),
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, verb: str, exc: ApiException, resource_version: str | None) -> ScaleError:
        status = int(exc.status or 0)
        said = _server_message(exc)
        if status == 401:
            return Forbidden(
                f"unauthorized (HTTP 401): the API server rejected our credentials trying to "
                f"{self._what(verb)} (check the service-account token or the kubeconfig user)",
                status=status,
            )
        if status == 403:
            return Forbidden(
                f"forbidden (HTTP 403): the service account cannot {self._what(verb)} "
                f"(check the Role grants '{verb}' on deployments/scale and its RoleBinding)",
                status=status,
            )
        if status == 404:
            return NotFound(
                f"not found (HTTP 404): no deployment '{self.deployment}' in namespace '{self.namespace}' "
                "(check kubernetes.deployment and kubernetes.namespace)",
                status=status,
            )
        if status == 409:
            since = f"after resourceVersion {resource_version} was read" if resource_version else "concurrently"
            return Conflict(
                f"conflict (HTTP 409): deployment '{self.deployment}' in namespace '{self.namespace}' "
                f"changed {since} (re-read it and decide again)",
                status=status,
            )
        return ScaleError(
            f"rejected (HTTP {status} {_status_reason(exc)}): could not {self._what(verb)}: {said}",
            status=status,
        )

    def _scale(self, verb: str, answer: Any) -> Scale:
        spec, status, metadata = (getattr(answer, key, None) for key in ("spec", "status", "metadata"))
        resource_version = getattr(metadata, "resource_version", None)
        # autoscaling/v1 ScaleSpec.replicas is omitempty: a Deployment at 0 answers "spec": {}.
        replicas = getattr(spec, "replicas", None) or 0
        status_replicas = getattr(status, "replicas", None) or 0
        selector = getattr(status, "selector", None) or None
        uid = getattr(metadata, "uid", None) or None
        if (
            spec is None
            or not isinstance(replicas, int)
            or not isinstance(status_replicas, int)
            or not isinstance(resource_version, str)
            or not resource_version
        ):
            raise ScaleError(
                f"malformed answer: {self._what(verb)} returned no spec.replicas or resourceVersion "
                "(is kubernetes.kubeconfig pointing at a Kubernetes API server?)"
            )
        return Scale(
            replicas=replicas,
            status_replicas=status_replicas,
            resource_version=resource_version,
            selector=selector if isinstance(selector, str) else None,
            uid=uid if isinstance(uid, str) else None,
        )


def _status_object(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _status_reason(exc: ApiException) -> str:
    return str(_status_object(exc).get("reason") or exc.reason or "error")


def _server_message(exc: ApiException) -> str:
    message = str(_status_object(exc).get("message") or exc.reason or "no details")
    return " ".join(message.split())[:300]


def _retry_after(exc: ApiException) -> float | None:
    headers: Mapping[str, str] = exc.headers or {}
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the API server sends seconds
    return seconds if seconds >= 0 else None
