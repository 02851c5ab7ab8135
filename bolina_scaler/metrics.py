"""The daemon's Prometheus metrics: one ``Metrics`` object owning its own ``CollectorRegistry``.

No I/O (``/metrics`` in ``http_api`` renders it). Nothing is a module-level global: each daemon,
and each test, gets a fresh registry, so two daemons in one process (the HA tests) never share a
counter. The registry also carries the standard process, platform and GC collectors
(``process_*``, ``python_info``, ``python_gc_*``) and ``bolina_scaler_build_info``. Every
``bolina_scaler_*`` metric is listed in the README's "Metrics" table, and every one named by the
alerts and the dashboard in ``manifests/components/monitoring`` exists here (tests keep all three
in step).

Gauges that describe the daemon's current state (servers by status, replicas, trust, leader,
readiness, pause, fallback) come from the daemon's state through ``refresh`` just before each
scrape, so they can never drift from what ``/v1/servers`` and ``/v1/decision`` show. A value the daemon does
not know yet is absent, never a stand-in: no servers before the first Consul answer, no
``replicas_current`` before the first read of the scale, no pause state before the first read of
the Deployment. Time since the last trusted Consul answer is
``time() - bolina_scaler_last_trusted_snapshot_timestamp_seconds`` in PromQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bolina_scaler import __version__
from bolina_scaler.core.decision import Decision, Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import Status
from bolina_scaler.core.outcome import Outcome

__all__ = ["CONTENT_TYPE", "PREFIX", "Metrics", "StateReading"]

PREFIX: Final = "bolina_scaler"
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CONSUL_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 150.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReading:
    """What the daemon knows at a scrape; None: not known yet (the gauge is then absent)."""

    snapshot: FleetSnapshot | None = None
    last_trusted_at: float | None = None
    """Wall-clock (Unix) time at which the newest trusted Consul answer arrived."""
    current: int | None = None
    decision: Decision | None = None
    leader: bool = False
    ready: bool = False
    paused: bool | None = None
    stuck_seconds: float = 0.0
    """How long a wanted scale change has gone unmade, or an evaluation has waited (0: neither)."""
    kube_since_success: float | None = None
    """Seconds since a Kubernetes request last succeeded (None: none has yet)."""


class _StateCollector(Collector):
    """The state gauges, from the last ``StateReading`` (absent when unknown)."""

    def __init__(self) -> None:
        self.reading = StateReading()
        self.policy: tuple[int, int, float] | None = None

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, text, labels=labels) for name, text, labels in _STATE_GAUGES]

    def collect(self) -> Iterable[Metric]:
        r = self.reading
        values: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name, _, _ in _STATE_GAUGES}
        snapshot = r.snapshot
        if snapshot is not None:
            values[f"{PREFIX}_servers"] = [((str(s),), snapshot.counts[s]) for s in Status]
            values[f"{PREFIX}_servers_registered"] = [((), snapshot.registered)]
            values[f"{PREFIX}_snapshot_trusted"] = [((), 1 if snapshot.trusted else 0)]
            if snapshot.index > 0:
                values[f"{PREFIX}_consul_index"] = [((), snapshot.index)]
        if r.last_trusted_at is not None:
            values[f"{PREFIX}_last_trusted_snapshot_timestamp_seconds"] = [((), r.last_trusted_at)]
        if r.current is not None:
            values[f"{PREFIX}_replicas_current"] = [((), r.current)]
        if r.decision is not None:
            values[f"{PREFIX}_replicas_desired"] = [((), r.decision.desired)]
            values[f"{PREFIX}_replicas_pending"] = [((), r.decision.inputs.pending)]
            values[f"{PREFIX}_fallback"] = [((), 1 if r.decision.reason is Reason.FALLBACK else 0)]
        values[f"{PREFIX}_leader"] = [((), 1 if r.leader else 0)]
        values[f"{PREFIX}_ready"] = [((), 1 if r.ready else 0)]
        values[f"{PREFIX}_stuck_seconds"] = [((), r.stuck_seconds)]
        if r.kube_since_success is not None:
            values[f"{PREFIX}_kubernetes_since_success_seconds"] = [((), r.kube_since_success)]
        if r.paused is not None:
            values[f"{PREFIX}_paused"] = [((), 1 if r.paused else 0)]
        if self.policy is not None:
            low, high, target = self.policy
            values[f"{PREFIX}_policy_min_replicas"] = [((), low)]
            values[f"{PREFIX}_policy_max_replicas"] = [((), high)]
            values[f"{PREFIX}_policy_target_available_ratio"] = [((), target)]
        for name, text, labels in _STATE_GAUGES:
            family = GaugeMetricFamily(name, text, labels=labels)
            for label_values, value in values[name]:
                family.add_metric(list(label_values), value)
            yield family


_STATE_GAUGES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    (f"{PREFIX}_servers", "Servers in the newest Consul snapshot by status.", ("status",)),
    (f"{PREFIX}_servers_registered", "Servers registered in Consul (newest snapshot).", ()),
    (f"{PREFIX}_snapshot_trusted", "1 when the newest Consul snapshot may drive scaling.", ()),
    (f"{PREFIX}_consul_index", "X-Consul-Index of the newest Consul answer.", ()),
    (
        f"{PREFIX}_last_trusted_snapshot_timestamp_seconds",
        "Unix time at which the newest trusted Consul answer arrived.",
        (),
    ),
    (f"{PREFIX}_replicas_current", "spec.replicas of the Deployment, last read.", ()),
    (f"{PREFIX}_replicas_desired", "Replicas the last evaluation wanted.", ()),
    (
        f"{PREFIX}_replicas_pending",
        "Replicas requested but not registered yet that still count as capacity (in flight).",
        (),
    ),
    (
        f"{PREFIX}_leader",
        "1 while this replica may scale: it holds the Lease (always, without leader election; never in dry run).",
        (),
    ),
    (
        f"{PREFIX}_fallback",
        "1 while policy.fallback decides the count: Consul's data has stayed unusable for policy.fallback.after.",
        (),
    ),
    (f"{PREFIX}_ready", "1 while /readyz answers 200.", ()),
    (
        f"{PREFIX}_stuck_seconds",
        "How long a scale change this replica wants has not been made, or an evaluation has waited for the "
        "API server (0: neither); /readyz fails beyond http.readiness_max_stuck.",
        (),
    ),
    (
        f"{PREFIX}_kubernetes_since_success_seconds",
        "Seconds since a Kubernetes API request of this replica last succeeded.",
        (),
    ),
    (f"{PREFIX}_paused", "1 while a pause annotation on the Deployment holds the scale.", ()),
    (f"{PREFIX}_policy_min_replicas", "policy.min_replicas of the config.", ()),
    (f"{PREFIX}_policy_max_replicas", "policy.max_replicas of the config.", ()),
    (f"{PREFIX}_policy_target_available_ratio", "policy.target_available_ratio of the config.", ()),
)


class Metrics:
    """Every metric the daemon exports. ``Metrics()`` makes a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Always 1; the version of bolina-scaler that runs.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        self._state = _StateCollector()
        r.register(self._state)
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
        for outcome in Outcome:
            if outcome is not Outcome.UNCHANGED:
                self.patches.labels(outcome=str(outcome))  # 0 from the start: increase() sees the first one
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

    # -- feeding -----------------------------------------------------------------------------

    def refresh(self, reading: StateReading) -> None:
        """Take the daemon's state for the next scrape (called just before each)."""
        self._state.reading = reading

    def set_policy(self, *, min_replicas: int, max_replicas: int, target_available_ratio: float) -> None:
        """Export the bounds and target the alerts compare with (``policy`` of the config)."""
        self._state.policy = (min_replicas, max_replicas, target_available_ratio)

    def observe_decision(self, decision: Decision) -> None:
        self.evaluations.inc()
        self.decisions.labels(direction=str(decision.direction), reason=str(decision.reason)).inc()

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
