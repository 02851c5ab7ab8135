"""The demo's script: the daemon's config for it, the demand over time, and how its servers judge themselves.

Pure data. The production config's shape with its windows shrunk to seconds, so the story
(demand rises, a flash crowd, a crash, the crowd leaves) plays out in under a minute.
"""

from __future__ import annotations

from dataclasses import dataclass

from bolina_scaler.reporter.availability import ClassifierConfig, Thresholds

__all__ = ["CAPACITY", "DEMO_CLASSIFIER", "DEMO_CONFIG", "NAMESPACE", "SERVICE", "Phase", "Scenario"]

NAMESPACE = "demo"
SERVICE = "bolina"
CAPACITY = 100
"""Clients one simulated Bolina server takes before it is full."""

# The daemon's config for the demo: the production shape with windows shrunk to seconds.
DEMO_CONFIG = {
    "consul": {"service": SERVICE, "wait": "10s", "rate_per_second": 20, "rate_burst": 2},
    "kubernetes": {"namespace": NAMESPACE, "deployment": "bolina", "resync": "2s", "request_timeout": "5s"},
    "policy": {
        "min_replicas": 2,
        "max_replicas": 16,
        "target_available_ratio": 0.5,
        "scale_down_ratio": 0.8,
        "scale_down_stabilization": "6s",
        "startup_grace": "6s",
        "max_snapshot_age": "30s",
        "scale_up": {"max_step": 4, "max_percent": 100, "period": "2s"},
        "scale_down": {"max_step": 1, "max_percent": 10, "period": "2s"},
        "mass_change": {"ratio": 0.5, "min_fleet": 4, "confirmation": "3s"},
    },
    "http": {"enabled": True, "host": "127.0.0.1", "port": 0, "readiness_max_age": "30s"},
    "leader_election": {"identity": "demo-scaler"},
    "events": {"min_interval": "10s"},
}


@dataclass(frozen=True, slots=True)
class Phase:
    at: float
    demand: int
    say: str
    crash: bool = False


@dataclass(slots=True)
class Scenario:
    """The scripted world: demand over time (in clients) and one crash."""

    phases: tuple[Phase, ...] = (
        Phase(0, 120, "a quiet start: 120 clients, the Deployment is at 0 replicas"),
        Phase(6, 420, "evening peak: demand climbs to 420 clients"),
        Phase(14, 800, "flash crowd: 800 clients"),
        Phase(24, 800, "one server crashes (its check turns critical)", crash=True),
        Phase(30, 150, "the crowd leaves: 150 clients"),
    )
    duration: float = 45.0
    startup_delay: float = 2.0
    """Seconds from pod creation to the server registering in Consul."""

    def demand(self, t: float) -> int:
        current = self.phases[0].demand
        for phase in self.phases:
            if t >= phase.at:
                current = phase.demand
        return current


DEMO_CLASSIFIER = ClassifierConfig(
    metrics={
        "connections": Thresholds(warning=0.7, critical=0.95, warning_clear=0.6, critical_clear=0.85),
        "errors": Thresholds(warning=0.5, critical=0.5),
    },
    min_dwell=2.0,
)
"""How the demo's servers judge their own stage: the real classifier (``bolina_scaler.reporter.availability``,
as ``bolina-scaler report`` runs it), with hysteresis and a dwell shrunk to the demo's pace."""
