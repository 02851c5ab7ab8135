"""The fleet simulator: proof of the policy against the Kubernetes HPA and the seed's naive rule.

Pure and deterministic (seeded), apart from ``mirror`` (copies a simulated fleet into a Consul
agent over HTTP, for the demo) and ``command``/``docs`` (CLI and file output). Modules, lower
layers first: ``traces`` (demand) → ``fleet`` (pods, clients, load balancer, classifier) →
``baselines`` (the scalers) → ``runner`` (virtual time, measures) → ``report`` (table, plot) →
``command`` / ``docs``.
"""

from bolina_scaler.simulation.baselines import HpaParams, HpaScaler, NaiveScaler, PolicyScaler, Scaler
from bolina_scaler.simulation.fleet import FleetParams, SimServer, SimulatedFleet
from bolina_scaler.simulation.runner import Comparison, Result, compare, run, simulation_policy
from bolina_scaler.simulation.traces import BUILTIN_TRACES, Trace, builtin_trace, load_trace

__all__ = [
    "BUILTIN_TRACES",
    "Comparison",
    "FleetParams",
    "HpaParams",
    "HpaScaler",
    "NaiveScaler",
    "PolicyScaler",
    "Result",
    "Scaler",
    "SimServer",
    "SimulatedFleet",
    "Trace",
    "builtin_trace",
    "compare",
    "load_trace",
    "run",
    "simulation_policy",
]
