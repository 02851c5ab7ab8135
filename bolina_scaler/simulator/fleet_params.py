"""The simulated world's parameters: servers' capacity, sessions, start-up delays, and the data path as shipped.

Pure data. ``FleetParams`` defaults to the data path as shipped (the reporter's default deadband,
the ``check_update_interval`` of ``manifests/base/consul/client.json``) and to the simulated
servers' classifier (``SIM_CLASSIFIER``); ``simulated_fleet.SimulatedFleet`` runs a world of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bolina_scaler.reporter.availability import ClassifierConfig, Thresholds
from bolina_scaler.reporter.deadband import Deadband

__all__ = ["SHIPPED_CHECK_UPDATE_INTERVAL", "SIM_CLASSIFIER", "FleetParams"]

SHIPPED_CHECK_UPDATE_INTERVAL = 30.0
"""``check_update_interval`` in ``manifests/base/consul/client.json`` (a test holds them equal)."""

SIM_CLASSIFIER = ClassifierConfig(
    metrics={
        "connections": Thresholds(warning=0.8, critical=0.95, warning_clear=0.7, critical_clear=0.85),
        "cpu": Thresholds(warning=0.85, critical=0.95),
        "errors": Thresholds(warning=0.5, critical=0.5),
    },
    hysteresis=0.1,
    min_dwell=30.0,
)
"""The simulated servers' classifier: connections share, CPU (≈ 0.8 × load + noise) and an error flag."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetParams:
    """The simulated world. Defaults: 100-client servers, 5-min sessions, ~45 s from pod to Consul,
    and the data path as shipped: the reporter's default deadband and the ``check_update_interval``
    of ``manifests/base/consul/client.json``."""

    capacity: int = 100
    session_mean: float = 300.0
    startup_median: float = 45.0
    startup_sigma: float = 0.35
    report_interval: float = 5.0
    cpu_per_load: float = 0.8
    cpu_noise: float = 0.02
    tick: float = 1.0
    classifier: ClassifierConfig = SIM_CLASSIFIER
    check_update_interval: float = SHIPPED_CHECK_UPDATE_INTERVAL
    """Consul agent: an output-only check change reaches the catalog after this × U[0.5, 1.5)."""
    deadband: Deadband = field(default_factory=Deadband)
    """The reporter's: how much load/demand must move, or how long since the last write."""
    demand_window: float = 30.0
    """A server's demand is the clients offered to it within this window, per second × session_mean."""
    report_demand: bool = True
    """Whether servers publish their demand (False: the policy falls back to the Available share)."""
