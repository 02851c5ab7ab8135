"""Run scalers against a trace in virtual time and measure them.

Pure apart from reading ``time.perf_counter`` to report how long a run took. Every scaler runs on
its own ``SimulatedFleet`` built from the same trace, parameters and seed, so all see the same
clients and the same pod start-up delays; only their decisions differ.

Measures (per scaler):

- ``under_target_s``: seconds during which the Available share of registered servers is below
  ``target_available_ratio`` (an empty fleet counts as below);
- ``rejected_cs`` / ``degraded_cs``: session seconds of clients turned away / admitted to a Warning
  server because no server was Available;
- ``replica_hours``: pods in existence (starting ones too) integrated over time;
- ``actions``: Deployment patches; ``peak``: most pods at once;
- ``catalog_writes``: writes of the Consul catalog (registrations, deregistrations, check
  changes): what the fleet's reporters and agents cost the Consul servers;
- flash crowd (traces with ``flash_at``): ``first_up_s`` is the time from the demand step to the
  first scale-up patch; ``recovered_s`` the time from the step until, after the first dip below
  the target that starts within ``FLASH_WINDOW``, the share is back at or above the target and
  stays there for ``RECOVERY_HOLD`` seconds (0 if it did not dip within ``FLASH_WINDOW``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from bolina_scaler.config import PolicyConfig, one_line
from bolina_scaler.simulator.baselines import (
    HpaParams,
    HpaScaler,
    NaiveScaler,
    OracleScaler,
    PolicyScaler,
    Scaler,
    oracle_load,
)
from bolina_scaler.simulator.simulated_fleet import FleetParams, SimulatedFleet
from bolina_scaler.simulator.traces import Trace

__all__ = [
    "FALLBACK",
    "FLASH_WINDOW",
    "RECOVERY_HOLD",
    "Comparison",
    "Result",
    "Sample",
    "compare",
    "default_scalers",
    "initial_replicas",
    "run",
    "simulation_policy",
    "without_demand",
]

FALLBACK = "bolina-scaler (no demand)"
"""The row of the policy without demand: what it does when servers publish none (the policy before it read demand)."""
RECOVERY_HOLD = 120.0
"""Seconds the share must stay at or above the target for the fleet to count as recovered."""
FLASH_WINDOW = 1800.0
"""A dip of the share counts as the demand step's doing if it starts within this long after it."""


def simulation_policy(
    config: PolicyConfig | None = None, *, min_replicas: int = 2, max_replicas: int = 40
) -> PolicyConfig:
    """The policy under test: the given (or default) config with the scenario's replica bounds.

    Validated as a config file is (``ValueError``, one line naming the key): ``min_replicas`` 0 or
    above ``max_replicas`` would simulate a fleet the daemon refuses to run.
    """
    base = config or PolicyConfig()
    bounds = {"min_replicas": min_replicas, "max_replicas": max_replicas}
    try:
        return PolicyConfig.model_validate(base.model_dump() | bounds)
    except ValidationError as exc:
        raise ValueError(one_line(exc)) from None


@dataclass(frozen=True, slots=True)
class Sample:
    """The state once per ``sample_every`` seconds, for plots."""

    t: float
    demand: float
    """Clients the trace would keep connected at this rate (rate × mean session), in servers' worth."""
    pods: int
    registered: int
    available_share: float | None
    active: int
    turned_away: int
    """Clients rejected or degraded since the previous sample."""


@dataclass(slots=True)
class Result:
    scaler: str
    trace: str
    duration: float
    target: float
    under_target_s: float = 0.0
    rejected_cs: float = 0.0
    degraded_cs: float = 0.0
    replica_hours: float = 0.0
    actions: int = 0
    scale_ups: int = 0
    peak: int = 0
    first_up_s: float | None = None
    recovered_s: float | None = None
    arrived: int = 0
    rejected: int = 0
    degraded: int = 0
    catalog_writes: int = 0
    wall_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    patches: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def turned_away_cs(self) -> float:
        return self.rejected_cs + self.degraded_cs

    @property
    def writes_per_server_hour(self) -> float:
        """Consul catalog writes per pod-hour."""
        return self.catalog_writes / self.replica_hours if self.replica_hours else 0.0


@dataclass(slots=True)
class _FlashClock:
    flash_at: float
    dipped: bool = False
    streak_from: float | None = None
    recovered: float | None = None

    def observe(self, now: float, ok: bool) -> None:
        if self.recovered is not None or now < self.flash_at:
            return
        if not ok:
            if not self.dipped and now - self.flash_at >= FLASH_WINDOW:
                self.recovered = 0.0  # a dip this late is not the step's doing
                return
            self.dipped = True
            self.streak_from = None
            return
        if not self.dipped:
            if now - self.flash_at >= FLASH_WINDOW:
                self.recovered = 0.0
            return
        if self.streak_from is None:
            self.streak_from = now
        if now - self.streak_from >= RECOVERY_HOLD:
            self.recovered = self.streak_from - self.flash_at


def initial_replicas(trace: Trace, params: FleetParams, *, headroom: float = 0.7) -> int:
    """Pods to start with: the trace's initial demand at ``headroom`` load (all policies start equal)."""
    clients = trace.rate(0.0) * params.session_mean
    return max(1, math.ceil(clients / (params.capacity * headroom)))


def run(
    trace: Trace,
    scaler: Scaler,
    *,
    target: float,
    params: FleetParams | None = None,
    seed: int = 0,
    replicas: int | None = None,
    sample_every: float = 60.0,
) -> Result:
    """Drive one scaler through the whole trace; 1 s ticks (``params.tick``)."""
    params = params or FleetParams()
    started = time.perf_counter()
    start_replicas = replicas if replicas is not None else initial_replicas(trace, params)
    fleet = SimulatedFleet(trace, params=params, seed=seed, replicas=start_replicas)
    result = Result(scaler=scaler.name, trace=trace.name, duration=trace.duration, target=target)
    flash = _FlashClock(trace.flash_at) if trace.flash_at is not None else None
    tick = params.tick
    last_index = -1
    next_sample = 0.0
    turned_away = 0
    steps = int(trace.duration / tick)
    for i in range(steps):
        now = i * tick
        fleet.advance(now)
        changed = fleet.index != last_index
        last_index = fleet.index
        desired = scaler.evaluate(fleet=fleet, changed=changed, now=now)
        if desired is not None and desired != fleet.spec:
            result.actions += 1
            if desired > fleet.spec:
                result.scale_ups += 1
                if flash is not None and result.first_up_s is None and now >= flash.flash_at:
                    result.first_up_s = now - flash.flash_at
            result.patches.append((now, fleet.spec, desired))
            fleet.apply_replicas(desired, now)
        snapshot = fleet.current_snapshot()
        share = snapshot.available_ratio
        ok = share is not None and share >= target
        if not ok:
            result.under_target_s += tick
        if flash is not None:
            flash.observe(now, ok)
        pods = fleet.pods
        result.replica_hours += pods * tick / 3600
        result.peak = max(result.peak, pods)
        if now >= next_sample:
            next_sample += sample_every
            away = fleet.stats.rejected + fleet.stats.degraded
            result.samples.append(
                Sample(
                    t=now,
                    demand=trace.rate(now) * params.session_mean / params.capacity,
                    pods=pods,
                    registered=snapshot.registered,
                    available_share=share,
                    active=fleet.active_clients,
                    turned_away=away - turned_away,
                )
            )
            turned_away = away
    stats = fleet.stats
    result.rejected_cs = stats.rejected_client_seconds
    result.degraded_cs = stats.degraded_client_seconds
    result.arrived, result.rejected, result.degraded = stats.arrived, stats.rejected, stats.degraded
    result.catalog_writes = fleet.catalog_writes
    result.recovered_s = flash.recovered if flash is not None else None
    result.wall_s = time.perf_counter() - started
    return result


def without_demand(config: PolicyConfig) -> PolicyConfig:
    """The same policy when it does not read demand: the share-based policy it was before."""
    return config.model_copy(update={"demand": config.demand.model_copy(update={"enabled": False})})


def default_scalers(
    config: PolicyConfig,
    trace: Trace,
    *,
    params: FleetParams | None = None,
    hpa: HpaParams | None = None,
    fallback: bool = False,
) -> list[Callable[[], Scaler]]:
    """Factories for our policy, the oracle and the two baselines, with the same replica bounds.

    ``fallback``: also the policy without demand (``FALLBACK``), right after ours."""
    world = params or FleetParams()
    extra: list[Callable[[], Scaler]] = []
    if fallback:
        extra.append(lambda: PolicyScaler(without_demand(config), name=FALLBACK))
    return [
        lambda: PolicyScaler(config),
        *extra,
        lambda: OracleScaler(trace, world, config.min_replicas, config.max_replicas, oracle_load(world)),
        lambda: HpaScaler(config.min_replicas, config.max_replicas, hpa or HpaParams()),
        lambda: NaiveScaler(
            config.min_replicas, config.max_replicas, config.target_available_ratio, config.scale_down_ratio
        ),
    ]


@dataclass(frozen=True, slots=True)
class Comparison:
    trace: Trace
    results: tuple[Result, ...]

    @property
    def wall_s(self) -> float:
        return sum(r.wall_s for r in self.results)


def compare(
    trace: Trace,
    *,
    config: PolicyConfig,
    scalers: Sequence[Callable[[], Scaler]] | None = None,
    params: FleetParams | None = None,
    seed: int = 0,
    hpa: HpaParams | None = None,
    fallback: bool = False,
) -> Comparison:
    """Run every scaler on the same trace, fleet and seed."""
    factories = (
        scalers if scalers is not None else default_scalers(config, trace, params=params, hpa=hpa, fallback=fallback)
    )
    results = tuple(
        run(trace, factory(), target=config.target_available_ratio, params=params, seed=seed) for factory in factories
    )
    return Comparison(trace, results)
