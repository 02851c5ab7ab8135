"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two or more scalers can run safely.

Does I/O (the Kubernetes API, through ``actuator.call.KubeApi``); the rules of the Lease are in
``lease`` (pure). Our own small loop rather than ``kubernetes_asyncio.leaderelection``, whose
``run()`` returns after the first lost lease, never counts ``leaseTransitions``, does not
release on shutdown and writes local time with a ``Z``. This one follows client-go's
``LeaderElector``::

             every retry_period (× 1–1.2 jitter while following)
                              │
                              ▼
    GET lease ──404──► CREATE (holder = me) ──ok──► LEADER
        │                                      │
        ▼                                      ▼
    held by another and not expired ───────► FOLLOWER (watch, evaluate, never patch)
        │ (expiry judged on OUR clock: ``lease.Observation``)
        ▼
    free, expired or ours ──► UPDATE with resourceVersion (409: someone was faster) ──ok──► LEADER

* A leader renews optimistically, as client-go's LeaderElector does (its "fast path"): one
  UPDATE on the Lease as it last wrote it, without the GET. Any failure (409: the Lease changed
  under us) falls back to the GET path above, in the same round. An idle leader sends one
  request per ``retry_period`` instead of two.
* Every round keeps its own deadline, whatever the ``KubeApi`` gate shared with the scale, the
  Events and the pods does (a request may wait there for its turn, or hang until
  ``kubernetes.request_timeout``): a leader's round ends at ``renewed_at + renew_deadline``, a
  candidate's after ``renew_deadline``. A leader that has not renewed by then steps down at that
  moment (the log line, ``on_change(False)`` and the metric: a watchdog timer, not the end of a
  request), which is before any other candidate may take the lease (``lease_duration`` after our
  last successful renew started, on their clock); a candidate whose request hangs tries again.
* One leader per Lease even when two processes are given the same name: a configured
  ``identity`` gets a random suffix (``<identity>_<8 hex>``, client-go's host name + "_" + UUID),
  and a Lease that names us with a ``renewTime`` we never sent (we remember the last few we sent:
  a renewal whose answer was lost may still have been applied) means someone else writes under
  our name. We stop leading, log ``leader.identity_conflict`` and take a fresh suffix, so we wait
  as a distinct candidate for the other's Lease to expire.
* ``release()`` on shutdown writes ``lease.release`` so the other replica takes over within one
  retry period. The renewal that shutdown cancelled may have reached the API server all the
  same, moving the Lease's ``resourceVersion`` past the one we last saw: a 409 on the release is
  answered by reading the Lease again and, while it still names us, releasing that version.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import Conflict, KubeApi, KubernetesError, NotFound, Operation, Subject
from bolina_scaler.config import LeaderElectionConfig
from bolina_scaler.coordination import lease
from bolina_scaler.logs import ProblemLog

__all__ = ["Leadership", "candidate_identity", "default_identity"]

log = structlog.get_logger("bolina_scaler.coordination")

_GET = Operation(name="lease_get", verb="get", expected=(NotFound,))
_CREATE = Operation(name="lease_create", verb="create", expected=(Conflict,))
_UPDATE = Operation(name="lease_update", verb="update", expected=(Conflict,))
_RELEASE_ATTEMPTS = 3
"""Releases tried on fresh reads after 409s, before the Lease is left to expire by itself."""
_SENT_KEPT = 8
"""The ``renewTime`` values of our last claims that we still recognise as ours on a read."""


def _suffixed(name: str) -> str:
    """``name`` made unique to this process: ``<name>_<8 hex>`` from the OS's randomness."""
    return f"{name}_{secrets.token_hex(4)}"


def default_identity() -> str:
    """``$POD_NAME`` (unique per pod), else the host name plus a random suffix."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return pod
    return _suffixed(socket.gethostname())


def candidate_identity(configured: str | None) -> str:
    """The ``holderIdentity`` this process writes: unique to it even when ``configured`` is shared.

    A configured ``leader_election.identity`` is a name people give, and two replicas given the
    same one would both lead (each takes a Lease that names it for its own): it gets a random
    suffix, ``<identity>_<8 hex>``. Unset: ``default_identity()``.
    """
    return _suffixed(configured) if configured else default_identity()


class Leadership:
    """One candidate for the Lease. ``run()`` forever as a task; ``release()`` when stopping."""

    def __init__(
        self,
        config: LeaderElectionConfig,
        *,
        api: KubeApi,
        clock: Callable[[], float],
        on_change: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.identity = candidate_identity(config.identity)
        """Our ``holderIdentity``; a fresh one after an identity conflict (``leader.identity_conflict``)."""
        self._base = config.identity or os.environ.get("POD_NAME") or socket.gethostname()
        """What a fresh identity is made of: the configured identity, ``$POD_NAME`` or the host name."""
        self.namespace = api.namespace
        self.holder: str | None = None
        """The holder we last saw (ourselves included); None before the first read."""
        self._api = api
        subject = Subject(resource="leases", kind="lease", namespace=self.namespace, name=config.lease_name)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        self._clock = clock
        self._wall = wall_clock
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._leading = False
        self._renewed_at: float | None = None
        """Loop time at which our last successful acquire/renew *started*."""
        self._observed = lease.Observation()
        self._written: lease.LeaseRecord | None = None
        """The Lease as we last wrote it (the optimistic renewal's base)."""
        self._sent: deque[str] = deque(maxlen=_SENT_KEPT)
        """``renewTime`` of our last claims, answered or not: a read that names us with another one
        was written by someone else."""
        self._watchdog: asyncio.TimerHandle | None = None
        """Steps a leader down at ``renewed_at + renew_deadline`` whatever its requests are doing
        (armed while ``run()`` runs; a caller of ``try_once`` alone sees ``is_leader()`` turn)."""
        self._running = False
        self._problems = ProblemLog(
            log,
            failing="leader.lease_failing",
            recovered="leader.lease_recovered",
            message="a Lease request failed; a leader steps down after renew_deadline",
            shared=True,  # a GET that fails and an UPDATE that works: the Lease works again
        )
        self._leases = api.resource(subject, path, problems=self._problems)
        self._lease = self._leases.item(config.lease_name)

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
        log.info("leader.candidate", identity=self.identity, lease=self.config.lease_name)
        self._running = True
        try:
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
        finally:
            self._running = False
            self._disarm_watchdog()

    async def try_once(self) -> bool:
        """One acquire-or-renew round, bounded by its own deadline; returns whether we lead afterwards.

        A leader's round ends at ``renewed_at + renew_deadline`` (the moment it must step down), a
        candidate's after ``renew_deadline``: a request parked in the shared gate or hanging until
        ``request_timeout`` never holds the election past its deadline.
        """
        self._check_deadline()
        if self._leading and self._renewed_at is not None:
            budget = self._renewed_at + self.config.renew_deadline - self._clock()
        else:
            budget = self.config.renew_deadline
        scope = asyncio.timeout(max(0.0, budget))
        try:
            async with scope:
                leading = await self._round()
        except TimeoutError:
            if not scope.expired():
                raise  # not our deadline: a TimeoutError from below is a bug to see
            if self._leading:
                self._deadline_passed()
            else:
                self._problems.failed(
                    f"no Lease answer within renew_deadline {self.config.renew_deadline:g}s; trying again",
                    key="lease_round",
                )
            return False
        return leading  # a Lease answer, if it came, logged the recovery (``shared``)

    async def _round(self) -> bool:
        started = self._clock()
        written = self._written
        if self.is_leader() and written is not None and written.acquire_time is not None:
            try:
                return self._won(started, await self._update(self._claim(written)))
            except KubernetesError as exc:
                log.debug("leader.renew_retried", message="optimistic renew failed; reading the Lease", error=str(exc))
            started = self._clock()
        try:
            current = await self._read()
        except NotFound:
            return await self._create(started)
        except KubernetesError:
            return self._check_deadline()
        record = lease.LeaseRecord.of(current)
        now = self._clock()
        before, self._observed = self._observed, self._observed.seen(record, now)
        self.holder = record.holder or None
        if record.holder == self.identity and record.renew_time not in self._sent:
            self._identity_conflict(record, changed=before.version is not None)
        if self._observed.held_by_another(
            record, me=self.identity, default_duration=self.config.lease_duration, now=now
        ):
            self._set_leading(False, why=f"held by {record.holder}")
            return False
        try:
            return self._won(started, await self._update(self._claim(record)))
        except Conflict:
            return self._check_deadline()  # another candidate was faster
        except KubernetesError:
            return self._check_deadline()

    async def release(self) -> None:
        """Give the lease up at once (shutdown): empty holder, ``leaseDurationSeconds: 1``.

        A 409 (a renewal cancelled on our side but applied by the API server) is followed by a
        fresh read: the release is sent again on that version while the Lease still names us.
        """
        self._disarm_watchdog()
        was_leading, self._leading = self._leading, False
        record = self._written
        if not was_leading or record is None or record.resource_version is None:
            return
        problem: str | None = None
        for _attempt in range(_RELEASE_ATTEMPTS):
            body = lease.release(
                name=self.config.lease_name, namespace=self.namespace, record=record, wall=self._wall()
            )
            try:
                await self._update(body)
            except Conflict as exc:
                problem = str(exc)
                try:
                    record = lease.LeaseRecord.of(await self._read())
                except KubernetesError as read_failure:
                    problem = str(read_failure)
                    break
                if record.holder != self.identity or record.renew_time not in self._sent:
                    log.info("leader.release_skipped", message="the Lease is no longer ours", holder=record.holder)
                    problem = None
                    break
                continue
            except KubernetesError as exc:
                problem = str(exc)
                break
            log.info("leader.released", identity=self.identity)
            problem = None
            break
        if problem is not None:
            log.warning(
                "leader.release_failed", message="could not release the Lease; it expires by itself", error=problem
            )
        if self._on_change is not None:
            self._on_change(False)

    # -- internals ---------------------------------------------------------------------------

    def _claim(self, record: lease.LeaseRecord | None) -> dict[str, Any]:
        """The body that acquires or renews; its ``renewTime`` is remembered as ours before it is sent."""
        body = lease.claim(
            name=self.config.lease_name,
            namespace=self.namespace,
            identity=self.identity,
            duration=self.config.lease_duration,
            wall=self._wall(),
            record=record,
            leading=self._leading,
        )
        self._sent.append(body["spec"]["renewTime"])
        return body

    async def _read(self) -> schema.Lease:
        return await self._lease.get(_GET, answer=schema.LEASE)

    async def _update(self, body: dict[str, Any]) -> schema.Lease:
        return await self._lease.put(_UPDATE, body=body, answer=schema.LEASE)

    async def _create(self, started: float) -> bool:
        try:
            created = await self._leases.post(_CREATE, body=self._claim(None), answer=schema.LEASE)
        except Conflict:
            return False  # created by another candidate meanwhile
        except KubernetesError:
            return self._check_deadline()
        return self._won(started, created)

    def _won(self, started: float, written: schema.Lease) -> bool:
        self._renewed_at = started
        self._written = lease.LeaseRecord.of(written)
        self._observed = lease.Observation(self._written.version, self._clock())
        self.holder = self.identity
        self._set_leading(True, why="acquired" if not self._leading else "renewed")
        self._arm_watchdog(started + self.config.renew_deadline)
        return True

    def _check_deadline(self) -> bool:
        """Step down when the last successful renew is older than ``renew_deadline``."""
        if self._leading and not self.is_leader():
            self._deadline_passed()
        return self._leading

    def _deadline_passed(self) -> None:
        """``renewed_at + renew_deadline`` came without a renewal: step down now (idempotent)."""
        self._disarm_watchdog()
        self._set_leading(
            False,
            why=f"could not renew within renew_deadline {self.config.renew_deadline:g}s "
            "(the Lease requests failed or did not end in time)",
        )

    def _arm_watchdog(self, deadline: float) -> None:
        """Step down at ``deadline`` (our clock) even while a round waits for an answer, or sleeps."""
        self._disarm_watchdog()
        if not self._running:
            return
        delay = max(0.0, deadline - self._clock())
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._deadline_passed)

    def _disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _identity_conflict(self, record: lease.LeaseRecord, *, changed: bool) -> None:
        """The Lease names us with a ``renewTime`` we never sent: someone else writes under our name.

        ``changed``: we had seen the Lease before and it changed under our name (another process
        renews it, surely a shared ``leader_election.identity`` or ``$POD_NAME``: an error). On our
        first read it may also be an earlier process of this pod that did not release it (a
        warning). Either way we stop leading and take a fresh identity, so we wait as a distinct
        candidate for that Lease to expire instead of both leading.
        """
        old, fresh = self.identity, _suffixed(self._base)
        if changed:
            cause = (
                f"another process renews the Lease under our identity {old}: "
                "is leader_election.identity or POD_NAME shared?"
            )
        else:
            cause = (
                f"the Lease names our identity {old} but this process never wrote it: an earlier process "
                "that did not release it, or another process sharing leader_election.identity or POD_NAME"
            )
        getattr(log, "error" if changed else "warning")(
            "leader.identity_conflict",
            message="not leading under this identity; candidate again under a fresh one, "
            "waiting for that Lease to expire",
            cause=cause,
            identity=old,
            new_identity=fresh,
            renew_time=record.renew_time,
        )
        self._disarm_watchdog()
        self._set_leading(False, why=f"identity conflict: {cause}")
        self.identity = fresh
        self._written = None
        self._renewed_at = None
        self._sent.clear()

    def _set_leading(self, leading: bool, *, why: str) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        if self._api.metrics is not None:
            self._api.metrics.leader_changes.inc()
        if leading:
            log.info("leader.elected", identity=self.identity, why=why)
        else:
            log.warning(
                "leader.stepped_down",
                message="not the leader: watching and deciding, never patching",
                identity=self.identity,
                why=why,
            )
        if self._on_change is not None:
            self._on_change(leading)
