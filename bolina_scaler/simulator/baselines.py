"""The scalers a simulation compares: our policy, the Kubernetes HPA algorithm, and the seed's naive rule.

Pure: each scaler is a small state machine fed with virtual time. ``evaluate`` returns the replica
count to patch the Deployment to, or ``None``. The runner applies the patch at once.

- ``PolicyScaler`` takes the daemon's own evaluation step (``core.evaluation.step``): on every
  Consul change (the blocking query returns) and at ``decision.recheck_at``; ``record_scale``
  after a patch. It is the leader of an unpaused Deployment, and every patch it sends succeeds.
- ``HpaScaler`` is the HPA controller (``pkg/controller/podautoscaler``, documented at
  kubernetes.io "Horizontal Pod Autoscaling") on average CPU utilisation: every 15 s,
  ``desired = ceil(ready_pods × utilisation / target)`` unless within the 0.1 tolerance; pods not
  running yet have no metrics: 0 % on the way up, 100 % of target on the way down; a 300 s
  scale-down stabilisation window (the highest recommendation of the last 300 s wins); scale-up
  limited to max(+100 %, +4 pods) per 15 s.
- ``OracleScaler`` is the physical limit for the scaler's data: it knows the arrival rate the
  moment it changes and which servers fail, and asks for exactly the servers the expected
  connected clients need (see its docstring), with the same pods, start-up delays and bounds.
- ``NaiveScaler`` is the seed's rule: each time the watcher is notified and the Available share is
  below the threshold, add one server (pods still starting are not counted). The seed says nothing
  about scaling down; to keep replica-hours comparable it removes one server after the share has
  stayed at or above ``scale_down_ratio`` for the same 300 s window our policy uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from bolina_scaler.config import PolicyConfig
from bolina_scaler.core.evaluation import step
from bolina_scaler.core.memory import Memory, record_scale
from bolina_scaler.simulator.simulated_fleet import FleetParams, SimulatedFleet
from bolina_scaler.simulator.traces import Trace

__all__ = [
    "HpaParams",
    "HpaScaler",
    "NaiveScaler",
    "OracleScaler",
    "PolicyScaler",
    "Scaler",
    "hpa_recommendation",
    "oracle_load",
]


class Scaler(Protocol):
    name: str

    def evaluate(self, *, fleet: SimulatedFleet, changed: bool, now: float) -> int | None:
        """The replica count to patch to now, or ``None``. ``changed``: the Consul index moved.

        ``fleet.snapshot(now)`` is what the daemon's Consul watch would hold at ``now``."""
        ...


@dataclass(slots=True)
class PolicyScaler:
    """Our policy, called the way the daemon calls it."""

    config: PolicyConfig
    name: str = "bolina-scaler"
    memory: Memory = field(default_factory=Memory)
    recheck_at: float | None = None
    evaluations: int = 0

    def evaluate(self, *, fleet: SimulatedFleet, changed: bool, now: float) -> int | None:
        due = self.recheck_at is not None and now >= self.recheck_at
        if not (changed or due or self.evaluations == 0):
            return None
        self.evaluations += 1
        snapshot = fleet.snapshot(now)
        # Virtual time is the wall clock of the simulated world: the reporters stamp their demand with it.
        taken = step(fleet=snapshot, current=fleet.spec, config=self.config, memory=self.memory, now=now, wall_now=now)
        decision, self.memory = taken.decision, taken.memory
        self.recheck_at = decision.recheck_at
        if not taken.would_patch:
            return None
        self.memory = record_scale(self.memory, decision, now=now)
        return decision.desired


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaParams:
    """HPA defaults (autoscaling/v2) apart from the target, which the user always chooses."""

    target_utilisation: float = 0.6
    tolerance: float = 0.1
    sync_period: float = 15.0
    scale_down_stabilisation: float = 300.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period: float = 15.0


def hpa_recommendation(
    *, current: int, ready_utilisation: list[float], starting: int, target: float, tolerance: float
) -> int:
    """The replica calculator (``GetResourceReplicas``) for one resource metric.

    With every pod reporting this is the documented ``ceil(current × utilisation / target)``, or
    ``current`` within the tolerance. Pods still starting have no metrics yet ("missing pods"):
    they count as 100 % of the target when the others would scale down and as 0 % when they would
    scale up; a recomputation that flips the direction or falls within the tolerance keeps ``current``.
    """
    if not ready_utilisation:
        return current
    ready = len(ready_utilisation)
    # The controller works in whole percent of the request: int(100 × usage / request), then a float ratio.
    target_pct = round(target * 100)
    total = sum(ready_utilisation) * 100
    usage_ratio = _percent(total / ready) / target_pct
    if not starting:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current
        return math.ceil(usage_ratio * ready)
    if usage_ratio < 1.0:
        total += starting * target_pct
    new_ratio = _percent(total / (ready + starting)) / target_pct
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (usage_ratio < 1.0 and new_ratio > 1.0)
        or (usage_ratio > 1.0 and new_ratio < 1.0)
    ):
        return current
    new = math.ceil(new_ratio * (ready + starting))
    if (new_ratio < 1.0 and new > current) or (new_ratio > 1.0 and new < current):
        return current
    return new


def _percent(value: float) -> int:
    # int() truncates like Go's integer division; round first so 66.0000000001 and 65.9999999999 are 66.
    return int(round(value, 6))


@dataclass(slots=True)
class HpaScaler:
    """The HPA control loop with default behaviour, on average CPU utilisation."""

    min_replicas: int
    max_replicas: int
    params: HpaParams = field(default_factory=HpaParams)
    name: str = "hpa"
    next_sync: float | None = None
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)
    """Replica changes made: (time, signed change)."""

    def evaluate(self, *, fleet: SimulatedFleet, changed: bool, now: float) -> int | None:
        if self.next_sync is not None and now < self.next_sync:
            return None
        self.next_sync = now + self.params.sync_period
        current = fleet.spec
        ready, starting = fleet.utilisation()
        desired = self.desired(current=current, ready_utilisation=ready, starting=starting, now=now)
        if desired == current:
            return None
        self.events.append((now, desired - current))
        return desired

    def desired(self, *, current: int, ready_utilisation: list[float], starting: int, now: float) -> int:
        """One sync: recommendation, stabilisation, then the rate limits (``normalizeDesiredReplicasWithBehaviors``)."""
        p = self.params
        if current == 0:
            return current  # the HPA does not scale a Deployment at zero
        raw = hpa_recommendation(
            current=current,
            ready_utilisation=ready_utilisation,
            starting=starting,
            target=p.target_utilisation,
            tolerance=p.tolerance,
        )
        if not self.recommendations:
            self.recommendations.append((now, current))  # the controller seeds its history with current
        # Stabilisation: up window 0 s (only this recommendation), down window 300 s (highest wins).
        self.recommendations = [(t, r) for t, r in self.recommendations if now - t < p.scale_down_stabilisation]
        down = max([raw] + [r for _, r in self.recommendations])
        self.recommendations.append((now, raw))
        stabilised = current
        if stabilised < raw:
            stabilised = raw
        if stabilised > down:
            stabilised = down
        return self._limited(current, stabilised, now)

    def _limited(self, current: int, desired: int, now: float) -> int:
        p = self.params
        if desired > current:
            added = sum(d for t, d in self.events if d > 0 and now - t < p.scale_up_period)
            start = current - added
            limit = max(start + p.scale_up_pods, math.ceil(start * (1 + p.scale_up_percent / 100)))
            desired = min(desired, limit, self.max_replicas)
        elif desired < current:
            removed = -sum(d for t, d in self.events if d < 0 and now - t < p.scale_down_period)
            start = current + removed
            limit = math.ceil(start * (1 - p.scale_down_percent / 100))
            desired = max(desired, limit, self.min_replicas)
        return max(self.min_replicas, min(self.max_replicas, desired))


def oracle_load(params: FleetParams) -> float:
    """The mean load the oracle sizes for: the connections metric's Warning clear bound (0.7).

    With a least-loaded load balancer every server carries about the mean load; above the clear
    bound a server that reached Warning cannot leave it, so this is the most a fleet can carry
    while its servers stay Available."""
    return params.classifier.bounds("connections")[2]


@dataclass(slots=True)
class OracleScaler:
    """Perfect, instant knowledge of demand: the physical limit for any scaler's data.

    Every second it knows the trace's arrival rate ``λ`` and so the expected number of connected
    clients ``E`` (``dE/dt = λ - E/τ``, ``τ`` the mean session). It asks for
    ``ceil(max(E, E_lead) / (capacity × load))`` servers plus the pods of servers that are failing,
    where ``E_lead`` is what ``E`` will be after ``lead`` seconds if the rate stays (new pods take
    that long to serve: the 90th percentile of the start-up delay), within the same bounds. It
    scales down as soon as the expected clients allow it: no stabilisation, no step limits.
    """

    trace: Trace
    params: FleetParams
    min_replicas: int
    max_replicas: int
    load: float
    name: str = "oracle"
    lead: float = 0.0
    expected: float | None = None
    at: float = 0.0

    def __post_init__(self) -> None:
        if not self.lead:
            p = self.params
            self.lead = p.startup_median * math.exp(1.2816 * p.startup_sigma)

    def evaluate(self, *, fleet: SimulatedFleet, changed: bool, now: float) -> int | None:
        tau = self.params.session_mean
        if self.expected is None:
            self.expected = self.trace.rate(now) * tau
        else:
            steady = self.trace.rate(self.at) * tau
            self.expected = steady + (self.expected - steady) * math.exp(-(now - self.at) / tau)
        self.at = now
        steady = self.trace.rate(now) * tau
        ahead = steady + (self.expected - steady) * math.exp(-self.lead / tau)
        clients = max(self.expected, ahead)
        need = math.ceil(clients / (self.params.capacity * self.load) - 1e-9)
        failing = sum(1 for s in fleet.servers if s.failing)
        desired = max(self.min_replicas, min(self.max_replicas, need + failing))
        return desired if desired != fleet.spec else None


@dataclass(slots=True)
class NaiveScaler:
    """The seed's rule: one more server on each notification with the Available share below target.

    Scale-down (which the seed does not describe): one server less once the share has stayed at or
    above ``scale_down_ratio`` for ``stabilisation`` seconds; the window restarts after each removal.
    """

    min_replicas: int
    max_replicas: int
    target: float
    scale_down_ratio: float
    stabilisation: float = 300.0
    name: str = "naive"
    above_since: float | None = None

    def evaluate(self, *, fleet: SimulatedFleet, changed: bool, now: float) -> int | None:
        current = fleet.spec
        share = fleet.current_snapshot().available_ratio
        if share is not None and share >= self.scale_down_ratio:
            if self.above_since is None:
                self.above_since = now
        else:
            self.above_since = None
        if changed and (share is None or share < self.target) and current < self.max_replicas:
            return current + 1
        if self.above_since is not None and now - self.above_since >= self.stabilisation:
            self.above_since = now
            if current > self.min_replicas:
                return current - 1
        return None
