"""The fleet simulator: a demand trace in, the policy's record against an oracle, the HPA and the seed's rule out.

Pure and deterministic (seeded), apart from ``tables`` (the plot file) and ``docs`` (writes
``docs/policy.md``). Modules, lower layers first: ``traces`` (demand) and ``fleet_params`` (the
world's parameters) → ``simulated_server`` (one pod and its server, as Consul shows it) →
``simulated_fleet`` (pods, clients, load balancer, the real availability classifier, the
reporter's deadband and a Consul agent's check_update_interval) → ``baselines`` (the scalers:
ours, the oracle, the HPA's algorithm, the naive rule) → ``runner`` (virtual time, measures) →
``targets`` (issue 14's targets) and ``tables`` (text, Markdown, plot) → ``docs``. The command
is ``bolina-scaler simulate`` (``cli.simulate``).
"""

from bolina_scaler.simulator.baselines import HpaParams, HpaScaler, NaiveScaler, OracleScaler, PolicyScaler, Scaler
from bolina_scaler.simulator.fleet_params import FleetParams
from bolina_scaler.simulator.runner import Comparison, Result, compare, run, simulation_policy
from bolina_scaler.simulator.simulated_fleet import SimulatedFleet
from bolina_scaler.simulator.simulated_server import SimServer
from bolina_scaler.simulator.traces import BUILTIN_TRACES, Trace, builtin_trace, load_trace

__all__ = [
    "BUILTIN_TRACES",
    "Comparison",
    "FleetParams",
    "HpaParams",
    "HpaScaler",
    "NaiveScaler",
    "OracleScaler",
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
