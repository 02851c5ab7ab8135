"""``bolina-scaler simulate``: replay demand traces through the simulator and print the comparison.

Does I/O (stdout, reading config/trace files, writing the plot). The work is in
``simulator.runner`` and ``simulator.tables``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bolina_scaler.cli.common import examples
from bolina_scaler.config import ConfigError, load_config
from bolina_scaler.simulator.baselines import HpaParams
from bolina_scaler.simulator.runner import compare, simulation_policy
from bolina_scaler.simulator.tables import PlotUnavailable, markdown_table, plot, text_table
from bolina_scaler.simulator.targets import check_targets
from bolina_scaler.simulator.traces import BUILTIN_TRACES, load_trace

__all__ = ["add_simulate_command"]


def add_simulate_command(subparsers: Any) -> None:
    """Register ``bolina-scaler simulate`` on an argparse subparsers object."""
    sim = subparsers.add_parser(
        "simulate",
        help="replay a demand trace in virtual time: our policy vs an oracle, the Kubernetes HPA and the naive rule",
        description=(
            "Run a simulated Bolina fleet (pods with start-up delays, long-lived clients, the real availability "
            "classifier, a Consul agent's check_update_interval) through a demand trace in virtual time, once per "
            "scaler, and print a comparison table (our policy, an oracle that knows the demand, the HPA, the naive "
            "rule) and the policy's targets."
        ),
        epilog=examples(
            "bolina-scaler simulate",
            "bolina-scaler simulate --trace flash --trace diurnal --config config/config.yaml --plot sim.png",
        ),
    )
    sim.add_argument(
        "--trace",
        action="append",
        metavar="NAME|FILE.csv",
        help=f"built-in ({', '.join(BUILTIN_TRACES)}) or a CSV 'seconds,clients_per_second[,event]'; repeatable; "
        "default: flash",
    )
    sim.add_argument("--config", help="a daemon config YAML: its policy section is the policy under test")
    sim.add_argument("--min-replicas", type=int, default=2, help="scenario bound for every scaler (default 2)")
    sim.add_argument("--max-replicas", type=int, default=40, help="scenario bound for every scaler (default 40)")
    sim.add_argument("--hpa-target", type=float, default=0.6, help="HPA target CPU utilisation (default 0.6)")
    sim.add_argument("--seed", type=int, default=0, help="random seed: runs are deterministic per seed (default: 0)")
    sim.add_argument("--hours", type=float, help="cut (or extend) each trace to this many hours")
    sim.add_argument(
        "--fallback", action="store_true", help="also the policy without demand (servers that publish none)"
    )
    sim.add_argument("--markdown", action="store_true", help="print Markdown tables")
    sim.add_argument("--plot", metavar="FILE.png", help="draw demand, replicas and Available share (matplotlib)")
    sim.set_defaults(handler=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    base = load_config(Path(args.config)).policy if args.config else None
    try:
        config = simulation_policy(base, min_replicas=args.min_replicas, max_replicas=args.max_replicas)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    try:
        traces = [load_trace(spec) for spec in (args.trace or ["flash"])]
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    if args.hours:
        traces = [t.truncated(args.hours * 3600) for t in traces]
    hpa = HpaParams(target_utilisation=args.hpa_target)
    for n, trace in enumerate(traces):
        comparison = compare(trace, config=config, seed=args.seed, hpa=hpa, fallback=args.fallback)
        if args.markdown:
            print(f"\n**{trace.name}** — {trace.description} (simulated in {comparison.wall_s:.1f} s)\n")
            print(markdown_table(comparison))
        else:
            print(("\n" if n else "") + text_table(comparison))
        print("targets: " + "; ".join(str(check) for check in check_targets(comparison)))
        if args.plot:
            path = Path(args.plot)
            if len(traces) > 1:
                path = path.with_name(f"{path.stem}-{trace.name}{path.suffix or '.png'}")
            try:
                written = plot(comparison, path)
            except PlotUnavailable as exc:
                print(f"bolina-scaler simulate: {exc}", file=sys.stderr)
                return 2
            print(f"plot: {written}")
    return 0
