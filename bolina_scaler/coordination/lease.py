"""The rules of a ``coordination.k8s.io/v1`` Lease, as client-go's ``LeaderElector`` applies them.

Pure: no I/O, no clock reads (times and the wall-clock moment are passed in). ``election``
does the requests; this module says what a Lease read means and what to write back:

* ``LeaseRecord.of`` reads the fields that matter from the answer (``actuator.schema.Lease``);
* ``Observation`` judges expiry on *our* clock: a holder's Lease expires ``leaseDurationSeconds``
  after we last saw the record change, so a skewed clock elsewhere cannot make us steal a live
  Lease (client-go's ``observedTime``);
* ``claim`` is the body that acquires or renews: ``acquireTime`` is kept across renewals and
  ``leaseTransitions`` is bumped when the holder changes;
* ``release`` is the body that gives the Lease up at once: empty holder and
  ``leaseDurationSeconds: 1`` (client-go's ``ReleaseOnCancel``).

Timestamps are Kubernetes ``MicroTime``: UTC, RFC 3339, always six fractional digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bolina_scaler.actuator import schema

__all__ = ["LeaseRecord", "Observation", "claim", "micro_time", "release"]


def micro_time(moment: datetime) -> str:
    """Kubernetes ``MicroTime``: UTC, RFC 3339, always six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What a Lease says, read from its JSON (``spec`` and ``metadata`` as the API names them)."""

    holder: str
    """``holderIdentity``; empty when nobody holds it (released, or never held)."""
    renew_time: str | None
    resource_version: str | None
    duration: float | None
    """``leaseDurationSeconds``; None when the Lease does not say."""
    transitions: int
    acquire_time: str | None
    """``acquireTime`` as the API server wrote it (MicroTime), kept verbatim across renewals."""

    @classmethod
    def of(cls, lease: schema.Lease) -> LeaseRecord:
        """The record of a Lease answer (``schema.LEASE``: fields of the wrong type read as absent,
        since a Lease written by something else must not stop the election: it is judged as
        "not held" at worst)."""
        spec = lease.spec
        return cls(
            holder=spec.holderIdentity,
            renew_time=spec.renewTime,
            resource_version=lease.metadata.resourceVersion,
            duration=float(spec.leaseDurationSeconds) if spec.leaseDurationSeconds else None,
            transitions=spec.leaseTransitions,
            acquire_time=spec.acquireTime,
        )

    @property
    def version(self) -> tuple[Any, ...]:
        """What identifies one renewal of the record: a change means the holder is alive."""
        return (self.holder, self.renew_time, self.resource_version)


@dataclass(frozen=True, slots=True)
class Observation:
    """The last version of the record we saw, and when (on our clock)."""

    version: tuple[Any, ...] | None = None
    at: float = 0.0

    def seen(self, record: LeaseRecord, now: float) -> Observation:
        """This observation after reading ``record`` at ``now``: the clock restarts only on a change."""
        return self if record.version == self.version else Observation(record.version, now)

    def held_by_another(self, record: LeaseRecord, *, me: str, default_duration: float, now: float) -> bool:
        """Whether someone else holds the Lease and it has not expired on our clock."""
        duration = record.duration or default_duration
        return bool(record.holder) and record.holder != me and now < self.at + duration


def claim(
    *,
    name: str,
    namespace: str,
    identity: str,
    duration: float,
    wall: datetime,
    record: LeaseRecord | None,
    leading: bool,
) -> dict[str, Any]:
    """The body that acquires or renews the Lease for ``identity``.

    ``record`` is the Lease as last read (None: it does not exist yet, create it). A renewal by
    the current leader keeps ``acquireTime`` and ``leaseTransitions``; taking it over starts a
    new ``acquireTime`` and counts one more transition.
    """
    renewing = record is not None and record.holder == identity and leading
    if record is not None and renewing and record.acquire_time is not None:
        acquire_time, transitions = record.acquire_time, record.transitions
    else:
        acquire_time = micro_time(wall)
        transitions = 0 if record is None else record.transitions + (0 if renewing else 1)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record is not None and record.resource_version is not None:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": max(1, round(duration)),
            "acquireTime": acquire_time,
            "renewTime": micro_time(wall),
            "leaseTransitions": transitions,
        },
    }


def release(*, name: str, namespace: str, record: LeaseRecord, wall: datetime) -> dict[str, Any]:
    """The body that gives the Lease up: empty holder, ``leaseDurationSeconds: 1``."""
    now = micro_time(wall)
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": record.resource_version},
        "spec": {
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": record.transitions,
        },
    }
