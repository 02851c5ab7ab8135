"""The daemon's Prometheus metrics: one ``Metrics`` object owning its own ``CollectorRegistry``.

No I/O (``/metrics`` in ``httpapi`` renders it). Nothing is a module-level global: each daemon,
and each test, gets a fresh registry, so two daemons in one process (the HA tests) never share a
counter. Every metric is listed in the README's "Metrics" table; keep both in step.

Gauges that describe the daemon's current state (servers by status, replicas, snapshot age,
leader) are set from the daemon's state by ``refresh`` just before each scrape, so they can never
drift from what ``/v1/servers`` and ``/v1/decision`` show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bolina_scaler.core.decision import Decision
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Status

__all__ = ["CONTENT_TYPE", "PREFIX", "Metrics"]

PREFIX: Final = "bolina_scaler"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CONSUL_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 150.0, 300.0, 600.0)


class Metrics:
    """Every metric the daemon exports. ``Metrics()`` makes a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.servers = Gauge(f"{PREFIX}_servers", "Servers in the current snapshot by status.", ["status"], registry=r)
        self.registered = Gauge(f"{PREFIX}_servers_registered", "Servers registered in Consul.", registry=r)
        self.pending = Gauge(
            f"{PREFIX}_replicas_pending",
            "Replicas requested but not registered yet that still count as capacity (in flight).",
            registry=r,
        )
        self.current = Gauge(f"{PREFIX}_replicas_current", "spec.replicas of the Deployment, last read.", registry=r)
        self.desired = Gauge(f"{PREFIX}_replicas_desired", "Replicas the last evaluation wanted.", registry=r)
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Evaluations by direction (up, down, none, hold) and reason.",
            ["direction", "reason"],
            registry=r,
        )
        self.patches = Counter(
            f"{PREFIX}_patches",
            "Decided scale changes by outcome (patched, conflict, failed, dry_run, not_leader).",
            ["outcome"],
            registry=r,
        )
        self.consul_duration = Histogram(
            f"{PREFIX}_consul_query_duration_seconds",
            "Duration of Consul health queries (blocking ones last until a change or the wait ends).",
            ["blocking"],
            buckets=_CONSUL_BUCKETS,
            registry=r,
        )
        self.consul_errors = Counter(
            f"{PREFIX}_consul_errors", "Consul queries that gave no usable answer.", registry=r
        )
        self.kube_duration = Histogram(
            f"{PREFIX}_kubernetes_request_duration_seconds",
            "Duration of Kubernetes API calls by operation, retries included.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.kube_errors = Counter(
            f"{PREFIX}_kubernetes_errors",
            "Kubernetes API calls that failed, by operation.",
            ["operation"],
            registry=r,
        )
        self.snapshot_age = Gauge(
            f"{PREFIX}_snapshot_age_seconds", "Age of the newest Consul snapshot (-1: none yet).", registry=r
        )
        self.trusted = Gauge(f"{PREFIX}_snapshot_trusted", "1 when the newest snapshot may drive scaling.", registry=r)
        self.consul_index = Gauge(f"{PREFIX}_consul_index", "X-Consul-Index of the newest snapshot.", registry=r)
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this replica holds the Lease (always 1 without leader election).", registry=r
        )
        self.leader_changes = Counter(
            f"{PREFIX}_leadership_changes", "Times this replica became or stopped being the leader.", registry=r
        )
        self.reaction = Histogram(
            f"{PREFIX}_reaction_latency_seconds",
            "From a Consul change observed to the scale patch acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.evaluations = Counter(f"{PREFIX}_evaluations", "Evaluations of the policy.", registry=r)
        self.events = Counter(
            f"{PREFIX}_events",
            "Kubernetes Events by reason and outcome (created, aggregated, suppressed, failed).",
            ["reason", "outcome"],
            registry=r,
        )
        self.deletion_costs = Counter(
            f"{PREFIX}_deletion_cost_annotations",
            "Pod deletion-cost annotations written before scale-downs, by outcome (patched, failed).",
            ["outcome"],
            registry=r,
        )
        for status in Status:
            self.servers.labels(status=str(status))
        self.leader.set(0)
        self.snapshot_age.set(-1)

    # -- feeding -----------------------------------------------------------------------------

    def refresh(self, *, snapshot: FleetSnapshot | None, current: int | None, leader: bool, now: float) -> None:
        """Set the state gauges (called before each scrape)."""
        if snapshot is not None:
            for status in Status:
                self.servers.labels(status=str(status)).set(snapshot.counts[status])
            self.registered.set(snapshot.registered)
            self.snapshot_age.set(max(0.0, now - snapshot.observed_at))
            self.trusted.set(1 if snapshot.trusted else 0)
            self.consul_index.set(snapshot.index)
        if current is not None:
            self.current.set(current)
        self.leader.set(1 if leader else 0)

    def observe_decision(self, decision: Decision) -> None:
        self.evaluations.inc()
        self.decisions.labels(direction=str(decision.direction), reason=str(decision.reason)).inc()
        self.desired.set(decision.desired)
        self.pending.set(decision.inputs.pending)

    def observe_consul_query(self, seconds: float, *, blocking: bool, failed: bool) -> None:
        """One Consul health query (``ConsulWatch`` calls it after each)."""
        self.consul_duration.labels(blocking=str(blocking).lower()).observe(max(0.0, seconds))
        if failed:
            self.consul_errors.inc()

    @contextmanager
    def kube_call(self, operation: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
        """Time one Kubernetes call; count it as an error when it raises (anything but cancellation)."""
        started = clock()
        try:
            yield
        except Exception:
            self.kube_errors.labels(operation=operation).inc()
            raise
        finally:
            self.kube_duration.labels(operation=operation).observe(max(0.0, clock() - started))

    def render(self) -> bytes:
        return generate_latest(self.registry)
