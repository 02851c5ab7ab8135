"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two or more scalers can run safely.

Does I/O (the Kubernetes API, through the ``ApiClient`` the scale target already holds). Our own
small loop rather than ``kubernetes_asyncio.leaderelection``, whose ``run()`` returns after the
first lost lease, never counts ``leaseTransitions``, does not release on shutdown and writes
local time with a ``Z``. This one follows client-go's ``LeaderElector``::

             every retry_period (× 1–1.2 jitter while following)
                              │
                              ▼
    GET lease ──404──► CREATE (holder = me) ──ok──► LEADER
        │                                      │
        ▼                                      ▼
    held by another and not expired ───────► FOLLOWER (watch, evaluate, never patch)
        │ (expiry judged on OUR clock: when we last saw the record change + leaseDurationSeconds,
        │  so a skewed clock elsewhere cannot make us steal a live lease)
        ▼
    free, expired or ours ──► UPDATE with resourceVersion (409: someone was faster) ──ok──► LEADER

* A leader renews optimistically, as client-go's LeaderElector does (its "fast path"): one
  UPDATE on the Lease as it last wrote it (resourceVersion, acquireTime, leaseTransitions),
  without the GET.
  Any failure (409: the Lease changed under us) falls back to the GET path above, in the same
  round. An idle leader sends one request per ``retry_period`` instead of two.

* A leader that has not renewed for ``renew_deadline`` stops being leader (``is_leader`` turns
  False at once, even while a request hangs), which is before any other candidate may take the
  lease (``lease_duration`` after our last successful renew started, on their clock).
* ``release()`` on shutdown writes an empty holder and ``leaseDurationSeconds: 1`` (as
  client-go's ``ReleaseOnCancel``) so the other replica takes over within one retry period.
* Timestamps are UTC RFC 3339 with microseconds (``MicroTime``); ``acquireTime`` is kept across
  renewals and ``leaseTransitions`` is bumped when the holder changes.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from bolina_scaler.config import LeaderElectionConfig
from bolina_scaler.metrics import Metrics

__all__ = ["Leadership", "default_identity", "micro_time"]

log = structlog.get_logger("bolina_scaler.leadership")


def micro_time(moment: datetime) -> str:
    """Kubernetes ``MicroTime``: UTC, RFC 3339, always six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """``$POD_NAME`` (unique per pod), else the host name plus a random suffix."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return pod
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class Leadership:
    """One candidate for the Lease. ``run()`` forever as a task; ``release()`` when stopping."""

    def __init__(
        self,
        config: LeaderElectionConfig,
        *,
        api_client: Any,
        namespace: str,
        request_timeout: float,
        clock: Callable[[], float],
        metrics: Metrics | None = None,
        on_change: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.identity = config.identity or default_identity()
        self.namespace = namespace
        self.holder: str | None = None
        """The holder we last saw (ourselves included); None before the first read."""
        self._api: Any = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout
        self._clock = clock
        self._wall = wall_clock
        self._metrics = metrics
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._leading = False
        self._renewed_at: float | None = None
        """Loop time at which our last successful acquire/renew *started*."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self._transitions = 0
        self._acquire_time: str | None = None
        self._problem: str | None = None

    # -- what the daemon asks --------------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while we hold the lease and renewed it within ``renew_deadline``."""
        return (
            self._leading
            and self._renewed_at is not None
            and self._clock() < self._renewed_at + self.config.renew_deadline
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, *, _iterations: int | None = None) -> None:
        """Try to acquire or renew every ``retry_period``, forever (``_iterations``: test hook)."""
        log.info("leader election: candidate", identity=self.identity, lease=self.config.lease_name)
        while _iterations is None or _iterations > 0:
            await self.try_once()
            if _iterations is not None:
                _iterations -= 1
                if _iterations == 0:
                    break
            period = self.config.retry_period
            if not self._leading:
                period *= self._rng.uniform(1.0, 1.2)  # client-go's JitterFactor while acquiring
            await asyncio.sleep(period)

    async def try_once(self) -> bool:
        """One acquire-or-renew round; returns whether we lead afterwards."""
        started = self._clock()
        if self.is_leader() and self._resource_version is not None and self._acquire_time is not None:
            body = self._body(
                acquire_time=self._acquire_time, transitions=self._transitions, resource_version=self._resource_version
            )
            try:
                renewed = await self._call("update", lambda: self._api.replace_namespaced_lease(
                    self.config.lease_name, self.namespace, body, _request_timeout=self._timeout))  # fmt: skip
            except (ApiException, TimeoutError, aiohttp.ClientError) as exc:
                log.debug("leader election: optimistic renew failed; reading the lease", error=str(exc))
            else:
                return self._won(started, renewed)
            started = self._clock()
        try:
            lease = await self._call("get", lambda: self._api.read_namespaced_lease(
                self.config.lease_name, self.namespace, _request_timeout=self._timeout))  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                return self._failed(f"read lease: HTTP {exc.status} {exc.reason}")
            return await self._create(started)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._failed(f"read lease: {type(exc).__name__} {exc}".strip())
        spec = lease.spec
        holder = (spec.holder_identity or "") if spec is not None else ""
        rv = lease.metadata.resource_version
        key = (holder, getattr(spec, "renew_time", None), rv)
        now = self._clock()
        if key != self._observed:
            self._observed, self._observed_at = key, now
        self.holder = holder or None
        duration = (getattr(spec, "lease_duration_seconds", None) or self.config.lease_duration) if spec else 0
        if holder and holder != self.identity and now < self._observed_at + duration:
            self._set_leading(False, why=f"held by {holder}")
            return self._recovered(False)
        transitions = (getattr(spec, "lease_transitions", None) or 0) if spec else 0
        acquired = getattr(spec, "acquire_time", None) if spec else None
        if holder == self.identity and self._leading and isinstance(acquired, datetime):
            acquire_time = micro_time(acquired)
        else:
            acquire_time = micro_time(self._wall())
            transitions += 1 if holder != self.identity or not self._leading else 0
        body = self._body(acquire_time=acquire_time, transitions=transitions, resource_version=rv)
        try:
            updated = await self._call("update", lambda: self._api.replace_namespaced_lease(
                self.config.lease_name, self.namespace, body, _request_timeout=self._timeout))  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                return self._recovered(self._check_deadline())  # another candidate was faster
            return self._failed(f"update lease: HTTP {exc.status} {exc.reason}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._failed(f"update lease: {type(exc).__name__} {exc}".strip())
        return self._won(started, updated)

    async def release(self) -> None:
        """Give the lease up at once (shutdown): empty holder, ``leaseDurationSeconds: 1``."""
        was_leading, self._leading = self._leading, False
        if not was_leading or self._resource_version is None:
            return
        now = micro_time(self._wall())
        body = {
            "metadata": {
                "name": self.config.lease_name,
                "namespace": self.namespace,
                "resourceVersion": self._resource_version,
            },
            "spec": {
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": self._transitions,
            },
        }
        try:
            await self._call("update", lambda: self._api.replace_namespaced_lease(
                self.config.lease_name, self.namespace, body, _request_timeout=self._timeout))  # fmt: skip
        except (ApiException, TimeoutError, aiohttp.ClientError) as exc:
            log.warning("leader election: could not release the lease; it expires by itself", error=str(exc))
        else:
            log.info("leader election: lease released", identity=self.identity)
        if self._on_change is not None:
            self._on_change(False)

    # -- internals ---------------------------------------------------------------------------

    def _body(self, *, acquire_time: str, transitions: int, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.config.lease_name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
                "acquireTime": acquire_time,
                "renewTime": micro_time(self._wall()),
                "leaseTransitions": transitions,
            },
        }

    async def _create(self, started: float) -> bool:
        body = self._body(acquire_time=micro_time(self._wall()), transitions=0, resource_version=None)
        try:
            created = await self._call("create", lambda: self._api.create_namespaced_lease(
                self.namespace, body, _request_timeout=self._timeout))  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                return self._recovered(False)  # created by another candidate meanwhile
            return self._failed(f"create lease: HTTP {exc.status} {exc.reason}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._failed(f"create lease: {type(exc).__name__} {exc}".strip())
        return self._won(started, created)

    def _won(self, started: float, lease: Any) -> bool:
        self._renewed_at = started
        self._resource_version = lease.metadata.resource_version
        self._transitions = int(getattr(lease.spec, "lease_transitions", None) or 0)
        acquired = getattr(lease.spec, "acquire_time", None)
        self._acquire_time = micro_time(acquired) if isinstance(acquired, datetime) else None
        self._observed = (self.identity, getattr(lease.spec, "renew_time", None), self._resource_version)
        self._observed_at = self._clock()
        self.holder = self.identity
        self._set_leading(True, why="acquired" if not self._leading else "renewed")
        return self._recovered(True)

    def _check_deadline(self) -> bool:
        """Step down when the last successful renew is older than ``renew_deadline``."""
        if self._leading and not self.is_leader():
            self._set_leading(False, why=f"could not renew within renew_deadline {self.config.renew_deadline:g}s")
        return self._leading

    def _failed(self, problem: str) -> bool:
        if problem != self._problem:
            log.warning("leader election: lease request failed", problem=problem, leading=self._leading)
            self._problem = problem
        return self._check_deadline()

    def _recovered(self, result: bool) -> bool:
        if self._problem is not None:
            log.info("leader election: lease requests work again")
            self._problem = None
        return result

    def _set_leading(self, leading: bool, *, why: str) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if self._metrics is not None:
            self._metrics.leader_changes.inc()
        if leading:
            log.info("leader election: became leader", identity=self.identity, why=why)
        else:
            log.warning("leader election: not the leader", identity=self.identity, why=why)
        if self._on_change is not None:
            self._on_change(leading)

    async def _call(self, verb: str, request: Callable[[], Any]) -> Any:
        if self._metrics is None:
            return await request()
        with self._metrics.kube_call(f"lease_{verb}", self._clock):
            return await request()
