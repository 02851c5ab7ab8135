"""A faithful in-process fake of the slice of the Kubernetes API the scaler uses.

Does I/O: it is a real aiohttp HTTP(S) server on 127.0.0.1 (port 0), so the real
``kubernetes_asyncio`` client, its kubeconfig / in-cluster loading and its error handling are
all exercised. It follows the real API server where the scaler depends on it:

* ``/apis/apps/v1/.../deployments/{name}/scale`` (GET, PUT, PATCH) and the Deployment (GET, and
  WATCH with ``fieldSelector=metadata.name=...``, authorized as ``watch`` on that name, as the real
  API server does; events are JSON lines, ``timeoutSeconds`` ends the stream). ``break_watches``
  makes watches misbehave the ways a real one can, again and again: an ``ERROR`` event with the
  410 ``Expired`` Status the API server sends for a resourceVersion too old, a stream a proxy
  closes at once, a line that is not JSON.
  The Scale's ``resourceVersion`` is the Deployment's; ``spec.replicas`` is ``omitempty`` (a
  Deployment scaled to 0 answers ``"spec": {}``); a PATCH's or PUT's
  ``metadata.resourceVersion`` is a precondition (409 Conflict); a write that changes nothing
  keeps the resourceVersion, every other write bumps it (a global, etcd-like revision).
* PATCH content types: merge, strategic-merge and JSON patch (apply needs ``fieldManager``);
  anything else is 415. Each PATCH is recorded with its content type and outcome.
* Errors are ``Status`` objects with the real reasons and messages: 401 (wrong token), 403
  (RBAC denials set by the test), 404, 409, 415, 422, 429 with ``Retry-After``, 5xx.
* A ReplicaSet-like controller: pods ``<deployment>-<hash>-<n>`` follow ``spec.replicas``;
  scale-down deletes not-ready pods first, then the lowest
  ``controller.kubernetes.io/pod-deletion-cost``, then the newest.
* Core (with PATCH, for ``count``) and ``events.k8s.io/v1`` Events, ``coordination.k8s.io/v1`` Leases (with
  resourceVersion conflicts), pod list with ``labelSelector`` and pod PATCH.

Tests steer it with plain methods (``scale_by_hand``, ``deny``, ``inject_error``,
``delay_next``, ``drop_next``, ``break_watches``...) and inspect ``requests``, ``patches`` and ``next_request()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypedDict

from aiohttp import web

from bolina_scaler.testing.server import LocalServer

__all__ = [
    "DELETION_COST",
    "Arrival",
    "FakeKubernetes",
    "RecordedRequest",
]

DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
_PATCH_TYPES: Final = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

_REASONS: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MESSAGES: Final = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected by the test",
    502: "bad gateway",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing",
}
_GROUPS: Final = {
    "deployments": "apps",
    "pods": "",
    "events": "",
    "leases": "coordination.k8s.io",
}
_VERBS: Final = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

Json = dict[str, Any]
WatchFault = Literal["gone", "close", "garbage", "unavailable"]
"""How ``FakeKubernetes.break_watches`` answers a Deployment watch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """A request as it arrived, before the fake answered it."""

    method: str
    path: str
    query: Mapping[str, str]
    content_type: str | None
    body: Any
    at: float = 0.0
    """Loop time of the arrival (``looptime``'s clock in component tests)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """A request and the fake's answer (``status`` 0: the connection was dropped)."""

    method: str
    path: str
    query: Mapping[str, str]
    content_type: str | None
    body: Any
    status: int
    reason: str


_METADATA_LIST_TYPE = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def _wants_metadata_only(accept: str) -> bool:
    """Whether the Accept header's first JSON media range asks for ``PartialObjectMetadataList``."""
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind in ("application/json", "*/*"):
            values = dict(param.partition("=")[::2] for param in params)
            return values.get("as") == "PartialObjectMetadataList" and values.get("g") == "meta.k8s.io"
    return False


class _ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Json | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        status: Json = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return web.json_response(status, status=self.code, headers=self.headers)


@dataclass(slots=True, kw_only=True)
class _Fault:
    status: int  # 0 = drop the connection, -1 = answer normally (after the delay)
    method: str | None
    path_contains: str | None
    remaining: int
    retry_after: int | float | str | None = None
    """The ``Retry-After`` header sent, as given (a string: sent verbatim, ``inf``, an HTTP-date, …)."""
    delay: float = 0.0
    body: Any = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


class _Where(TypedDict):
    method: str | None
    path_contains: str | None
    remaining: int


def _where(method: str | None, path_contains: str | None, count: int) -> _Where:
    """Which requests a fault applies to, and to how many."""
    return {"method": method, "path_contains": path_contains, "remaining": count}


@dataclass(slots=True, kw_only=True)
class _Deployment:
    namespace: str
    name: str
    uid: str
    replicas: int
    status_replicas: int
    resource_version: str
    generation: int
    labels: dict[str, str]
    created: str
    template_hash: str
    annotations: dict[str, str] = field(default_factory=dict)
    next_pod: int = 0
    status_task: asyncio.TimerHandle | None = None

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


@dataclass(slots=True)
class _Store:
    deployments: dict[tuple[str, str], _Deployment] = field(default_factory=dict)
    pods: dict[tuple[str, str], Json] = field(default_factory=dict)
    leases: dict[tuple[str, str], Json] = field(default_factory=dict)
    events: list[Json] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` deletes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _json_patch(target: Json, operations: Any) -> Json:
    """RFC 6902 JSON patch: add, replace, remove, test (enough for the objects we serve)."""
    if not isinstance(operations, list):
        raise _ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise _ApiError(400, f"invalid JSON patch operation: {op!r}")
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise _ApiError(422, f"the server rejected our request: path {op['path']!r} does not exist")
            node = node[part]
        if not isinstance(node, dict):
            raise _ApiError(422, f"the server rejected our request: path {op['path']!r} is not an object")
        kind = op.get("op")
        if kind in {"add", "replace"}:
            if kind == "replace" and last not in node:
                raise _ApiError(422, f"the server rejected our request: replace of missing {op['path']!r}")
            node[last] = copy.deepcopy(op.get("value"))
        elif kind == "remove":
            if last not in node:
                raise _ApiError(422, f"the server rejected our request: remove of missing {op['path']!r}")
            del node[last]
        elif kind == "test":
            if node.get(last) != op.get("value"):
                raise _ApiError(422, f"the server rejected our request: test of {op['path']!r} failed")
        else:
            raise _ApiError(400, f"unsupported JSON patch operation {kind!r}")
    return doc


def _matches_selector(labels: Mapping[str, str], selector: str) -> bool:
    """Equality- and existence-based label selectors: ``a=b,c==d,e!=f,g,!h``."""
    for raw in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in raw:
            key, value = (s.strip() for s in raw.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in raw:
            key, value = (s.strip() for s in raw.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif raw.startswith("!"):
            if raw[1:].strip() in labels:
                return False
        elif raw not in labels:
            return False
    return True


def _is_ready(pod: Json) -> bool:
    for condition in pod.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def _deletion_cost(pod: Json) -> int:
    try:
        return int(pod["metadata"].get("annotations", {}).get(DELETION_COST, "0"))
    except ValueError:
        return 0


class FakeKubernetes(LocalServer):
    """The fake API server. ``async with FakeKubernetes() as kube:`` starts and stops it."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        user: str = "system:serviceaccount:default:bolina-scaler",
        tls: bool = False,
        status_delay: float | None = 0.0,
    ) -> None:
        """``status_delay``: seconds until ``status.replicas`` follows ``spec.replicas``
        (0 = with the same write, ``None`` = only when the test calls ``settle``)."""
        self.token = token
        self.user = user
        self.status_delay = status_delay
        self._tls = tls
        self._store = _Store()
        self._revision = 1000
        self._denials: set[tuple[str, str, str | None, str | None]] = set()
        self._faults: list[_Fault] = []
        self._waiters: list[tuple[Callable[[Arrival], bool], asyncio.Future[Arrival]]] = []
        self._tmpdir: Path | None = None
        self._stopping = asyncio.Event()
        self.arrivals: list[Arrival] = []
        self.requests: list[RecordedRequest] = []
        self.deleted_pods: list[str] = []
        self.deletion_costs: dict[str, int] = {}
        """The pod-deletion-cost each deleted pod had when the ReplicaSet controller chose it."""
        self._watchers: list[tuple[str, str, asyncio.Queue[Json]]] = []
        self._watch_faults: tuple[tuple[WatchFault, ...], int | None] | None = None
        self._watch_turn = 0
        self._watch_requests: list[web.Request] = []

    # ----------------------------------------------------------------- lifecycle

    async def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._route)
        return app

    async def on_stop(self) -> None:
        """In-flight slow answers are abandoned."""
        self._stopping.set()
        for _, _, queue in self._watchers:
            queue.put_nowait({})  # wake the watches: they end
        for handle in (d.status_task for d in self._store.deployments.values()):
            if handle is not None:
                handle.cancel()
        for _, future in self._waiters:
            future.cancel()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def ssl_context(self) -> ssl.SSLContext | None:
        if not self._tls:
            return None
        self._tmpdir = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        cert, key = self._tmpdir / "ca.crt", self._tmpdir / "tls.key"
        process = await asyncio.create_subprocess_exec(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=fake-kubernetes",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"openssl could not make a certificate: {stderr.decode().strip()}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate (its own CA) when started with ``tls=True``."""
        if self._tmpdir is None:
            raise RuntimeError("the fake serves TLS only with tls=True, after start()")
        return self._tmpdir / "ca.crt"

    # ----------------------------------------------------------- client config

    def kubeconfig(
        self,
        path: Path | str,
        *,
        namespace: str | None = None,
        context: str = "fake",
        token: str | None = None,
    ) -> Path:
        """Write a kubeconfig (bearer token) pointing at this server; return its path."""
        if not self.url:
            raise RuntimeError("start() the fake before writing a kubeconfig")
        path = Path(path)
        cluster: Json = {"server": self.url}
        if self._tls:
            cluster["certificate-authority"] = str(self.ca_file)
        ctx: Json = {"cluster": "fake", "user": "fake"}
        if namespace is not None:
            ctx["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": ctx}],
            "current-context": context,
        }
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")  # JSON is YAML
        return path

    def service_account(self, directory: Path | str, *, namespace: str) -> dict[str, str]:
        """Write a pod's service-account files (token, ca.crt, namespace) into ``directory``;
        return the environment variables a pod gets. Needs ``tls=True`` (in-cluster is HTTPS)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(self.token, encoding="utf-8")
        shutil.copyfile(self.ca_file, directory / "ca.crt")
        (directory / "namespace").write_text(namespace, encoding="utf-8")
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    # ------------------------------------------------------------ test controls

    def _bump(self) -> str:
        self._revision += 1
        return str(self._revision)

    def add_deployment(
        self, namespace: str, name: str, *, replicas: int = 1, labels: Mapping[str, str] | None = None
    ) -> None:
        """Create (or re-create with a new uid) a Deployment and its pods."""
        self.delete_deployment(namespace, name)
        uid = str(uuid.uuid4())
        deployment = _Deployment(
            namespace=namespace,
            name=name,
            uid=uid,
            replicas=replicas,
            status_replicas=0,
            resource_version=self._bump(),
            generation=1,
            labels=dict(labels or {"app": name}),
            created=_now(),
            template_hash=hashlib.sha256(uid.encode()).hexdigest()[:10],
        )
        self._store.deployments[namespace, name] = deployment
        self._spec_changed(deployment)

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        """``kubectl annotate deploy NAME KEY=VALUE KEY-``: set (a string) or remove (None) annotations."""
        deployment = self._deployment(namespace, name)
        for key, value in annotations.items():
            if value is None:
                deployment.annotations.pop(key, None)
            else:
                deployment.annotations[key] = value
        deployment.resource_version = self._bump()
        self._notify(deployment, "MODIFIED")

    def cut_watches(self) -> int:
        """Abort every open Deployment watch mid-stream (an API server restart); returns how many."""
        cut = 0
        for request in list(self._watch_requests):
            if request.transport is not None and not request.transport.is_closing():
                request.transport.abort()
                cut += 1
        return cut

    def break_watches(self, how: WatchFault | Sequence[WatchFault] | None, *, count: int | None = None) -> None:
        """How the next Deployment watches answer (``None``: as the API server does, again).

        ``gone``: one ``ERROR`` event holding the 410 ``Expired`` Status a real API server sends
        for a resourceVersion too old ("too old resource version"), then the end of the stream;
        ``close``: the stream ends at once, without an event (a proxy cutting watches);
        ``garbage``: one line that is not JSON, then the end; ``unavailable``: a 503 Status
        instead of the stream. A sequence is used in turn, one watch each, round and round.
        ``count``: for that many watches (``None``: every one, until ``break_watches(None)``).
        """
        hows = (how,) if isinstance(how, str) else tuple(how or ())
        self._watch_faults = (hows, count) if hows else None
        self._watch_turn = 0

    def _take_watch_fault(self) -> WatchFault | None:
        if self._watch_faults is None:
            return None
        hows, left = self._watch_faults
        if left is not None:
            self._watch_faults = (hows, left - 1) if left > 1 else None
        self._watch_turn += 1
        return hows[(self._watch_turn - 1) % len(hows)]

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment (and its pods), as ``kubectl delete deployment`` would."""
        deployment = self._store.deployments.pop((namespace, name), None)
        if deployment is None:
            return
        self._notify(deployment, "DELETED")
        if deployment.status_task is not None:
            deployment.status_task.cancel()
        for key in [k for k, pod in self._store.pods.items() if self._owner(pod) == deployment.uid]:
            del self._store.pods[key]

    def scale_by_hand(self, namespace: str, name: str, replicas: int) -> None:
        """What ``kubectl scale --replicas=N`` does: a write that bumps the resourceVersion."""
        deployment = self._deployment(namespace, name)
        if replicas != deployment.replicas:
            deployment.replicas = replicas
            self._spec_changed(deployment)

    def deployment(self, namespace: str, name: str) -> Json:
        """The Deployment as the API would return it."""
        return self._deployment_json(self._deployment(namespace, name))

    def settle(self, namespace: str, name: str) -> None:
        """Let ``status.replicas`` catch up with ``spec.replicas`` now (a status write)."""
        deployment = self._deployment(namespace, name)
        if deployment.status_replicas != deployment.replicas:
            deployment.status_replicas = deployment.replicas
            deployment.resource_version = self._bump()
            self._notify(deployment, "MODIFIED")

    def deny(self, verb: str, resource: str, *, name: str | None = None, namespace: str | None = None) -> None:
        """RBAC: forbid ``verb`` on ``resource`` (e.g. ``"patch", "deployments/scale"``)."""
        self._denials.add((verb, resource, name, namespace))

    def allow_all(self) -> None:
        """Remove every RBAC denial."""
        self._denials.clear()

    def inject_error(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: int | float | str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (a Status object)."""
        self._faults.append(_Fault(status=status, retry_after=retry_after, **_where(method, path_contains, count)))

    def inject_response(
        self,
        body: Any,
        *,
        status: int = 200,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``body`` as JSON (e.g. a malformed Scale);
        ``bytes`` are sent as they are (an answer that is not JSON at all)."""
        self._faults.append(_Fault(status=status, body=body, **_where(method, path_contains, count)))

    def delay_next(
        self, seconds: float, *, count: int = 1, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` before answering them."""
        self._faults.append(_Fault(status=-1, delay=seconds, **_where(method, path_contains, count)))

    def drop_next(self, *, count: int = 1, method: str | None = None, path_contains: str | None = None) -> None:
        """Close the connection of the next ``count`` matching requests without answering."""
        self._faults.append(_Fault(status=0, **_where(method, path_contains, count)))

    @property
    def patches(self) -> list[RecordedRequest]:
        """Every PATCH answered so far, with content type, body and outcome, but those of a
        Deployment's annotations (the status writes: ``annotation_patches``)."""
        return [r for r in self.requests if r.method == "PATCH" and not _is_deployment(r.path)]

    @property
    def annotation_patches(self) -> list[RecordedRequest]:
        """Every PATCH of a Deployment itself (not its scale): the scaler's status writes."""
        return [r for r in self.requests if r.method == "PATCH" and _is_deployment(r.path)]

    def clear_faults(self) -> None:
        """Forget every injected fault not used up yet: the server answers normally again."""
        self._faults.clear()

    def request_count(self, *, method: str | None = None, path_contains: str | None = None) -> int:
        """How many matching requests arrived (answered or not)."""
        return sum(
            1
            for a in self.arrivals
            if (method is None or a.method == method) and (path_contains is None or path_contains in a.path)
        )

    def next_request(self, *, method: str | None = None, path_contains: str | None = None) -> Awaitable[Arrival]:
        """An awaitable for the next matching request to arrive (registered when called)."""

        def predicate(arrival: Arrival) -> bool:
            return (method is None or arrival.method == method) and (
                path_contains is None or path_contains in arrival.path
            )

        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        return future

    def pods(self, namespace: str, *, selector: str | None = None) -> list[Json]:
        """The live pods in ``namespace`` (copies), oldest first."""
        found = [
            copy.deepcopy(pod)
            for (ns, _), pod in self._store.pods.items()
            if ns == namespace and (selector is None or _matches_selector(pod["metadata"]["labels"], selector))
        ]
        return sorted(found, key=lambda pod: int(pod["metadata"]["resourceVersion"]))

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip a pod's Ready condition (as its readiness probe would)."""
        pod = self._store.pods[namespace, name]
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        pod["metadata"]["resourceVersion"] = self._bump()

    def events(self, namespace: str | None = None) -> list[Json]:
        """Every Event created (core ``v1`` and ``events.k8s.io/v1``), in creation order."""
        return [copy.deepcopy(e) for e in self._store.events if namespace in {None, e["metadata"]["namespace"]}]

    def lease(self, namespace: str, name: str) -> Json | None:
        """The stored Lease, or None."""
        lease = self._store.leases.get((namespace, name))
        return copy.deepcopy(lease) if lease is not None else None

    def set_lease(self, namespace: str, name: str, spec: Json) -> None:
        """Another candidate writes the Lease (creating it if needed); bumps its resourceVersion."""
        lease = self._store.leases.setdefault(
            (namespace, name),
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": _now(),
                },
                "spec": {},
            },
        )
        lease["spec"] = copy.deepcopy(spec)
        lease["metadata"]["resourceVersion"] = self._bump()

    # ----------------------------------------------------------- the controller

    def _deployment(self, namespace: str, name: str) -> _Deployment:
        try:
            return self._store.deployments[namespace, name]
        except KeyError:
            raise KeyError(f"no deployment {namespace}/{name} in the fake") from None

    @staticmethod
    def _owner(pod: Json) -> str:
        return str(pod["metadata"]["ownerReferences"][0]["uid"])

    def _spec_changed(self, deployment: _Deployment) -> None:
        deployment.generation += 1
        self._reconcile_pods(deployment)
        if deployment.status_task is not None:
            deployment.status_task.cancel()
            deployment.status_task = None
        if self.status_delay == 0:
            deployment.status_replicas = deployment.replicas
        elif self.status_delay is not None:
            deployment.status_task = asyncio.get_running_loop().call_later(
                self.status_delay, self.settle, deployment.namespace, deployment.name
            )
        deployment.resource_version = self._bump()
        self._notify(deployment, "MODIFIED")

    def _notify(self, deployment: _Deployment, kind: str) -> None:
        """Send a watch event to every watcher of this Deployment."""
        for namespace, name, queue in self._watchers:
            if (namespace, name) == (deployment.namespace, deployment.name):
                queue.put_nowait({"type": kind, "object": self._deployment_json(deployment)})

    def _reconcile_pods(self, deployment: _Deployment) -> None:
        mine = [pod for pod in self._store.pods.values() if self._owner(pod) == deployment.uid]
        for _ in range(deployment.replicas - len(mine)):
            self._create_pod(deployment)
        if len(mine) > deployment.replicas:
            # ReplicaSet controller order (getPodsToDelete): not ready first, then the lowest
            # pod-deletion-cost, then the newest.
            mine.sort(key=lambda p: (_is_ready(p), _deletion_cost(p), -int(p["metadata"]["resourceVersion"])))
            for pod in mine[: len(mine) - deployment.replicas]:
                del self._store.pods[deployment.namespace, pod["metadata"]["name"]]
                self.deleted_pods.append(pod["metadata"]["name"])
                self.deletion_costs[pod["metadata"]["name"]] = _deletion_cost(pod)

    def _create_pod(self, deployment: _Deployment) -> None:
        deployment.next_pod += 1
        name = f"{deployment.name}-{deployment.template_hash}-{deployment.next_pod}"
        self._store.pods[deployment.namespace, name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": deployment.namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self._bump(),
                "creationTimestamp": _now(),
                "labels": {**deployment.labels, "pod-template-hash": deployment.template_hash},
                "annotations": {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{deployment.name}-{deployment.template_hash}",
                        "uid": deployment.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "bolina", "image": "bolina:fake"}]},
            "status": {
                "phase": "Running",
                "podIP": f"10.0.{deployment.next_pod // 250}.{deployment.next_pod % 250 + 1}",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    def _scale_json(self, deployment: _Deployment) -> Json:
        spec: Json = {"replicas": deployment.replicas} if deployment.replicas else {}  # omitempty
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": deployment.name,
                "namespace": deployment.namespace,
                "uid": deployment.uid,
                "resourceVersion": deployment.resource_version,
                "creationTimestamp": deployment.created,
            },
            "spec": spec,
            "status": {"replicas": deployment.status_replicas, "selector": deployment.selector},
        }

    def _deployment_json(self, deployment: _Deployment) -> Json:
        status: Json = {"observedGeneration": deployment.generation}
        if deployment.status_replicas:
            status |= {
                "replicas": deployment.status_replicas,
                "updatedReplicas": deployment.status_replicas,
                "readyReplicas": deployment.status_replicas,
                "availableReplicas": deployment.status_replicas,
            }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment.name,
                "namespace": deployment.namespace,
                "uid": deployment.uid,
                "resourceVersion": deployment.resource_version,
                "generation": deployment.generation,
                "creationTimestamp": deployment.created,
                "labels": dict(deployment.labels),
                **({"annotations": dict(deployment.annotations)} if deployment.annotations else {}),
            },
            "spec": {
                "replicas": deployment.replicas,
                "selector": {"matchLabels": dict(deployment.labels)},
                "template": {
                    "metadata": {"labels": dict(deployment.labels)},
                    "spec": {"containers": [{"name": "bolina", "image": "bolina:fake"}]},
                },
            },
            "status": status,
        }

    # -------------------------------------------------------------- HTTP plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await _body(request)
        arrival = Arrival(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            content_type=request.headers.get("Content-Type"),
            body=body,
            at=asyncio.get_running_loop().time(),
        )
        self.arrivals.append(arrival)
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate(arrival):
                future.set_result(arrival)
                self._waiters.remove(waiter)
        status, response = 0, None
        try:
            response = await self._answer(request, handler)
            status = response.status
            return response
        finally:
            self.requests.append(
                RecordedRequest(
                    method=arrival.method,
                    path=arrival.path,
                    query=arrival.query,
                    content_type=arrival.content_type,
                    body=body,
                    status=status,
                    reason=_REASONS.get(status, "OK" if 200 <= status < 300 else "Dropped"),
                )
            )

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.delay)
            if self._stopping.is_set():
                raise asyncio.CancelledError
            fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.status == 0:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        try:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise _ApiError(401, "Unauthorized")
            if fault is not None and isinstance(fault.body, bytes):
                return web.Response(body=fault.body, status=fault.status, content_type="application/json")
            if fault is not None and fault.body is not None:
                return web.json_response(fault.body, status=fault.status)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                seconds = fault.retry_after
                details = {"retryAfterSeconds": seconds} if isinstance(seconds, int) else None
                raise _ApiError(
                    fault.status,
                    _MESSAGES.get(fault.status, f"injected error {fault.status}"),
                    details=details,
                    headers=headers,
                )
            return await handler(request)
        except _ApiError as error:
            return error.response()

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _authorize(self, request: web.Request, resource: str, namespace: str, name: str | None) -> None:
        verb = "list" if request.method == "GET" and name is None else _VERBS[request.method]
        self._authorize_verb(verb, resource, namespace, name)

    def _authorize_verb(self, verb: str, resource: str, namespace: str, name: str | None) -> None:
        for d_verb, d_resource, d_name, d_namespace in self._denials:
            if (
                d_verb in {verb, "*"}
                and d_resource == resource
                and d_name in {None, name}
                and d_namespace in {None, namespace}
            ):
                base = resource.split("/")[0]
                group = _GROUPS.get(base, "")
                qualified = f"{base}.{group}" if group else base
                what = f'{qualified} "{name}"' if name else qualified
                raise _ApiError(
                    403,
                    f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
                    f'in API group "{group}" in the namespace "{namespace}"',
                    details={"name": name or "", "group": group, "kind": base},
                )

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.strip("/").split("/")
        for (prefix, method), handler in self._routes().items():
            if method != request.method:
                continue
            match = _match(prefix, parts)
            if match is not None:
                return await handler(request, **match)
        if any(_match(prefix, parts) is not None for prefix, _ in self._routes()):
            raise _ApiError(405, f"the server does not allow this method on the requested resource: {request.method}",
                            reason="MethodNotAllowed")  # fmt: skip
        raise _ApiError(404, "the server could not find the requested resource")

    def _routes(self) -> dict[tuple[str, str], Callable[..., Awaitable[web.StreamResponse]]]:
        deployments = "apis/apps/v1/namespaces/{ns}/deployments/{name}"
        leases = "apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        return {
            (f"{deployments}/scale", "GET"): self._get_scale,
            (f"{deployments}/scale", "PATCH"): self._write_scale,
            (f"{deployments}/scale", "PUT"): self._write_scale,
            (deployments, "GET"): self._get_deployment,
            (deployments, "PATCH"): self._patch_deployment,
            ("apis/apps/v1/namespaces/{ns}/deployments", "GET"): self._watch_deployments,
            ("api/v1/namespaces/{ns}/pods", "GET"): self._list_pods,
            ("api/v1/namespaces/{ns}/pods/{name}", "GET"): self._get_pod,
            ("api/v1/namespaces/{ns}/pods/{name}", "PATCH"): self._patch_pod,
            ("api/v1/namespaces/{ns}/events", "GET"): self._list_events,
            ("api/v1/namespaces/{ns}/events", "POST"): self._create_event,
            ("api/v1/namespaces/{ns}/events/{name}", "PATCH"): self._patch_event,
            ("apis/events.k8s.io/v1/namespaces/{ns}/events", "GET"): self._list_events,
            ("apis/events.k8s.io/v1/namespaces/{ns}/events", "POST"): self._create_event,
            (leases, "POST"): self._create_lease,
            (f"{leases}/{{name}}", "GET"): self._get_lease,
            (f"{leases}/{{name}}", "PUT"): self._replace_lease,
        }

    # ------------------------------------------------------------------ handlers

    def _found(self, namespace: str, name: str) -> _Deployment:
        deployment = self._store.deployments.get((namespace, name))
        if deployment is None:
            raise _ApiError(
                404,
                f'deployments.apps "{name}" not found',
                details={"name": name, "group": "apps", "kind": "deployments"},
            )
        return deployment

    async def _get_scale(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "deployments/scale", ns, name)
        return web.json_response(self._scale_json(self._found(ns, name)))

    async def _get_deployment(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "deployments", ns, name)
        return web.json_response(self._deployment_json(self._found(ns, name)))

    async def _patch_deployment(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        """A patch of the Deployment's annotations (the scaler's status); any other field is 422 here."""
        self._authorize(request, "deployments", ns, name)
        deployment = self._found(ns, name)
        current = self._deployment_json(deployment)
        updated = await _apply_patch(request, current)
        meta = dict(updated.get("metadata") or {})
        annotations = meta.pop("annotations", None) or {}
        precondition = meta.pop("resourceVersion", None)
        _check_precondition(deployment, precondition)
        if _without_annotations(updated) != _without_annotations(current):
            raise _ApiError(422, "the fake patches only metadata.annotations of a Deployment")
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise _ApiError(400, "metadata.annotations: expected a map of strings")
        if annotations != deployment.annotations:
            deployment.annotations = dict(annotations)
            deployment.resource_version = self._bump()
            self._notify(deployment, "MODIFIED")
        return web.json_response(self._deployment_json(deployment))

    async def _watch_deployments(self, request: web.Request, ns: str) -> web.StreamResponse:
        """``?watch=true&fieldSelector=metadata.name=NAME``: only what the scaler asks (no list)."""
        field_selector = request.query.get("fieldSelector", "")
        name = field_selector.removeprefix("metadata.name=") if field_selector.startswith("metadata.name=") else None
        if request.query.get("watch") not in {"true", "1"}:
            self._authorize(request, "deployments", ns, None)
            raise _ApiError(405, "the fake serves only watches of deployments", reason="MethodNotAllowed")
        self._authorize_verb("watch", "deployments", ns, name)
        if name is None:
            raise _ApiError(400, "the fake watches one Deployment: fieldSelector=metadata.name=NAME")
        since = request.query.get("resourceVersion")
        fault = self._take_watch_fault()
        if fault is not None:
            return await self._broken_watch(request, fault, since)
        queue: asyncio.Queue[Json] = asyncio.Queue()
        deployment = self._store.deployments.get((ns, name))
        if deployment is not None and since and int(since) < int(deployment.resource_version):
            queue.put_nowait({"type": "MODIFIED", "object": self._deployment_json(deployment)})
        watcher = (ns, name, queue)
        self._watchers.append(watcher)
        self._watch_requests.append(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        ends = loop.time() + float(request.query.get("timeoutSeconds") or 1800)
        try:
            while (left := ends - loop.time()) > 0 and not self._stopping.is_set():
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away (aiohttp does not cancel the handler)
                try:
                    event = await asyncio.wait_for(queue.get(), min(left, 1.0))
                except TimeoutError:
                    continue
                if event:
                    await response.write(json.dumps(event).encode() + b"\n")
        except ConnectionResetError:
            return response  # the client went away
        finally:
            self._watchers.remove(watcher)
            self._watch_requests.remove(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _broken_watch(self, request: web.Request, fault: WatchFault, since: str | None) -> web.StreamResponse:
        """A watch answered 200, then ``fault`` (``break_watches``), then the end of the stream."""
        if fault == "unavailable":
            raise _ApiError(503, _MESSAGES[503])
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        lines = {
            "gone": json.dumps(
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": f"too old resource version: {since} ({self._revision})",
                        "reason": "Expired",
                        "code": 410,
                    },
                }
            ).encode()
            + b"\n",
            "close": b"",
            "garbage": b"<html>502 Bad Gateway</html>\n",
            "unavailable": b"",
        }
        with contextlib.suppress(ConnectionResetError):
            if lines[fault]:
                await response.write(lines[fault])
            await response.write_eof()
        return response

    async def _write_scale(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "deployments/scale", ns, name)
        deployment = self._found(ns, name)
        current = self._scale_json(deployment)
        body = await _body(request)
        if request.method == "PATCH":
            updated = await _apply_patch(request, current)
        elif not isinstance(body, dict):
            raise _ApiError(400, "the body of the request was not a Scale object")
        else:
            updated = merge_patch(current, {"spec": None}) | {"spec": body.get("spec") or {}}
            updated["metadata"] = current["metadata"] | {
                "resourceVersion": (body.get("metadata") or {}).get("resourceVersion")
            }
        precondition = (updated.get("metadata") or {}).get("resourceVersion")
        _check_precondition(deployment, precondition)
        replicas = (updated.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _ApiError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {json.dumps(replicas)}: '
                "must be greater than or equal to 0",
                details={"name": name, "group": "autoscaling", "kind": "Scale"},
            )
        if replicas != deployment.replicas:
            deployment.replicas = replicas
            self._spec_changed(deployment)
        return web.json_response(self._scale_json(deployment))

    async def _list_pods(self, request: web.Request, ns: str) -> web.StreamResponse:
        self._authorize(request, "pods", ns, None)
        items = self.pods(ns, selector=request.query.get("labelSelector"))
        list_meta = {"resourceVersion": str(self._revision)}
        if _wants_metadata_only(request.headers.get("Accept", "")):
            # What the API server answers a metadata informer: the objects' metadata only.
            partial = {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": list_meta,
                "items": [
                    {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": item["metadata"]}
                    for item in items
                ],
            }
            return web.Response(text=json.dumps(partial), headers={"Content-Type": _METADATA_LIST_TYPE})
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": list_meta, "items": items})

    def _pod(self, ns: str, name: str) -> Json:
        pod = self._store.pods.get((ns, name))
        if pod is None:
            raise _ApiError(404, f'pods "{name}" not found', details={"name": name, "kind": "pods"})
        return pod

    async def _get_pod(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "pods", ns, name)
        return web.json_response(self._pod(ns, name))

    async def _patch_pod(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "pods", ns, name)
        pod = self._pod(ns, name)
        updated = await _apply_patch(request, pod)
        precondition = updated["metadata"].get("resourceVersion")
        if precondition and precondition != pod["metadata"]["resourceVersion"]:
            raise _ApiError(
                409,
                f'Operation cannot be fulfilled on pods "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                details={"name": name, "kind": "pods"},
            )
        cost = (updated["metadata"].get("annotations") or {}).get(DELETION_COST)
        if cost is not None:
            try:
                valid = isinstance(cost, str) and -(2**31) <= int(cost) < 2**31
            except ValueError:
                valid = False
            if not valid:
                raise _ApiError(
                    422,
                    f'Pod "{name}" is invalid: metadata.annotations[{DELETION_COST}]: Invalid value: '
                    f"{json.dumps(cost)}: must be a 32bit integer",
                    details={"name": name, "kind": "Pod"},
                )
        if updated != pod:
            # Only metadata is patchable here; spec and status stay the server's.
            pod["metadata"] = updated["metadata"] | {"resourceVersion": self._bump()}
        return web.json_response(pod)

    async def _list_events(self, request: web.Request, ns: str) -> web.StreamResponse:
        self._authorize(request, "events", ns, None)
        api = "events.k8s.io/v1" if request.path.startswith("/apis/") else "v1"
        items = [e for e in self.events(ns) if e["apiVersion"] == api]
        return web.json_response({"apiVersion": api, "kind": "EventList", "metadata": {}, "items": items})

    async def _create_event(self, request: web.Request, ns: str) -> web.StreamResponse:
        self._authorize(request, "events", ns, None)
        body = await _body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "the body of the request was not an Event object")
        api = "events.k8s.io/v1" if request.path.startswith("/apis/") else "v1"
        metadata = dict(body.get("metadata") or {})
        name = metadata.get("name") or (
            f"{metadata['generateName']}{uuid.uuid4().hex[:5]}" if metadata.get("generateName") else ""
        )
        if not name:
            raise _ApiError(422, 'Event "" is invalid: metadata.name: Required value: name or generateName is required')
        if api == "events.k8s.io/v1":
            missing = [k for k in ("eventTime", "reportingController", "reportingInstance", "action", "reason")
                       if not body.get(k)]  # fmt: skip
            if missing:
                raise _ApiError(422, f'Event.events.k8s.io "{name}" is invalid: {missing[0]}: Required value')
        if any(e["metadata"]["name"] == name and e["metadata"]["namespace"] == ns for e in self._store.events):
            raise _ApiError(409, f'events "{name}" already exists', reason="AlreadyExists")
        event = dict(body) | {"apiVersion": api, "kind": "Event"}
        event["metadata"] = metadata | {
            "name": name,
            "namespace": ns,
            "uid": str(uuid.uuid4()),
            "resourceVersion": self._bump(),
            "creationTimestamp": _now(),
        }
        self._store.events.append(event)
        return web.json_response(event, status=201)

    async def _patch_event(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        """PATCH a core/v1 Event (what client-go's EventCorrelator does to bump ``count``)."""
        self._authorize(request, "events", ns, name)
        for index, event in enumerate(self._store.events):
            meta = event["metadata"]
            if meta["name"] == name and meta["namespace"] == ns and event["apiVersion"] == "v1":
                updated = await _apply_patch(request, event)
                updated["metadata"] = meta | {"resourceVersion": self._bump()}
                self._store.events[index] = updated
                return web.json_response(updated)
        raise _ApiError(404, f'events "{name}" not found', details={"name": name, "kind": "events"})

    async def _get_lease(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "leases", ns, name)
        lease = self._store.leases.get((ns, name))
        if lease is None:
            raise _ApiError(
                404,
                f'leases.coordination.k8s.io "{name}" not found',
                details={"name": name, "group": "coordination.k8s.io", "kind": "leases"},
            )
        return web.json_response(lease)

    async def _create_lease(self, request: web.Request, ns: str) -> web.StreamResponse:
        self._authorize(request, "leases", ns, None)
        body = await _body(request)
        name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not name:
            raise _ApiError(
                422, 'Lease.coordination.k8s.io "" is invalid: metadata.name: Required value: name is required'
            )
        if (ns, name) in self._store.leases:
            raise _ApiError(
                409,
                f'leases.coordination.k8s.io "{name}" already exists',
                reason="AlreadyExists",
                details={"name": name, "group": "coordination.k8s.io", "kind": "leases"},
            )
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": body.get("spec") or {}}
        lease["metadata"] = dict(body["metadata"]) | {
            "namespace": ns,
            "uid": str(uuid.uuid4()),
            "resourceVersion": self._bump(),
            "creationTimestamp": _now(),
        }
        self._store.leases[ns, name] = lease
        return web.json_response(lease, status=201)

    async def _replace_lease(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        self._authorize(request, "leases", ns, name)
        lease = self._store.leases.get((ns, name))
        if lease is None:
            raise _ApiError(404, f'leases.coordination.k8s.io "{name}" not found',
                            details={"name": name, "group": "coordination.k8s.io", "kind": "leases"})  # fmt: skip
        body = await _body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "the body of the request was not a Lease object")
        precondition = (body.get("metadata") or {}).get("resourceVersion")
        if not precondition:
            raise _ApiError(
                422,
                f'Lease.coordination.k8s.io "{name}" is invalid: metadata.resourceVersion: Invalid value: '
                "0x0: must be specified for an update",
            )
        if precondition != lease["metadata"]["resourceVersion"]:
            raise _ApiError(
                409,
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                details={"name": name, "group": "coordination.k8s.io", "kind": "leases"},
            )
        metadata = body["metadata"]
        lease["spec"] = body.get("spec") or {}
        for key in ("labels", "annotations"):
            if key in metadata:
                lease["metadata"][key] = metadata[key]
        lease["metadata"]["resourceVersion"] = self._bump()
        return web.json_response(lease)


def _match(pattern: str, parts: list[str]) -> dict[str, str] | None:
    template = pattern.split("/")
    if len(template) != len(parts):
        return None
    found: dict[str, str] = {}
    for expected, actual in zip(template, parts, strict=True):
        if expected.startswith("{") and expected.endswith("}"):
            found[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return found


async def _body(request: web.Request) -> Any:
    """The request body as JSON (aiohttp caches the bytes, so every reader sees the same)."""
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _check_precondition(deployment: _Deployment, precondition: object) -> None:
    """A write that names a resourceVersion other than the Deployment's: 409, as the API server says it."""
    if precondition and precondition != deployment.resource_version:
        raise _ApiError(
            409,
            f'Operation cannot be fulfilled on deployments.apps "{deployment.name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            details={"name": deployment.name, "group": "apps", "kind": "deployments"},
        )


def _without_annotations(obj: Json) -> Json:
    """``obj`` but its annotations and resourceVersion: what an annotations-only patch must not change."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in {"annotations", "resourceVersion"}}
    return {**obj, "metadata": meta}


def _is_deployment(path: str) -> bool:
    """``…/deployments/<name>`` itself, not a subresource."""
    head, _, name = path.rstrip("/").rpartition("/")
    return head.endswith("/deployments") and bool(name)


async def _apply_patch(request: web.Request, current: Json) -> Json:
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type not in _PATCH_TYPES:
        raise _ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(_PATCH_TYPES),
        )
    body = await _body(request)
    if content_type == JSON_PATCH:
        return _json_patch(current, body)
    if content_type == APPLY_PATCH and not request.query.get("fieldManager"):
        raise _ApiError(
            422,
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        )
    if not isinstance(body, dict):
        raise _ApiError(400, "the body of the request was not a JSON object")
    # Strategic merge equals merge patch for Scale, pod metadata and the fields we serve.
    result = merge_patch(current, body)
    assert isinstance(result, dict)
    return result
