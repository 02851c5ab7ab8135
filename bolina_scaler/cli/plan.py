"""``bolina-scaler plan``: read Consul and the Deployment once; print the decision the daemon would take.

Does I/O (one Consul query, one read of the scale and one of the Deployment's pause annotations,
stdout). Changes nothing. The decision is the daemon's own evaluation step (``core.evaluation``),
so a paused Deployment is reported paused, with what the pause holds and what the policy wanted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bolina_scaler.cli.common import EXIT_OK, EXIT_RUNTIME, examples, one_line
from bolina_scaler.config import Config, load_config
from bolina_scaler.core.pause import Pause
from bolina_scaler.logs import configure_logging

__all__ = ["add_plan_command"]


def add_plan_command(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan",
        help="read Consul and the Deployment once; print the decision as JSON",
        description=(
            "Read the Bolina service from Consul and the Deployment's scale once, and print the decision\n"
            "the daemon would take, with its reason, clamps and inputs, as JSON (a paused Deployment: what\n"
            "the pause holds, and what the policy wanted). Changes nothing. It has no history:\n"
            "stabilization windows, step budgets and startup grace start from now.\n"
            "Exit codes: 0, 1 (also when Consul's data cannot be trusted), 2 bad config."
        ),
        epilog=examples(
            "bolina-scaler plan --config config/config.yaml",
            "bolina-scaler plan --config config/config.yaml | jq '{desired, reason, why}'",
        ),
    )
    plan.add_argument("--config", required=True, help="path to the YAML config file")
    plan.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    configure_logging(level="warning", fmt="json", stream=sys.stderr)
    return asyncio.run(_plan(config))


async def _plan(config: Config) -> int:
    from bolina_scaler.actuator.call import KubeApi
    from bolina_scaler.actuator.deployment import DeploymentWatch
    from bolina_scaler.actuator.scale import ScaleTarget
    from bolina_scaler.core.evaluation import log_fields, step
    from bolina_scaler.core.memory import Memory
    from bolina_scaler.core.role import Role
    from bolina_scaler.source import ConsulWatch

    try:
        async with ConsulWatch(config.consul) as watch, KubeApi(config.kubernetes) as kube:
            snapshot = await watch.fetch()
            scale = await ScaleTarget(kube).read()
            pause = await DeploymentWatch(api=kube).read_pause()
            namespace = kube.namespace
            now = asyncio.get_running_loop().time()
    except Exception as exc:
        print(f"bolina-scaler plan: {one_line(exc)}", file=sys.stderr)
        return EXIT_RUNTIME
    planned = step(
        fleet=snapshot,
        current=scale.replicas,
        config=config.policy,
        memory=Memory(last_replicas=scale.replicas),
        now=now,
        wall_now=time.time(),
        pause=pause,
        role=Role.of(shadow=config.dry_run, leading=True),
    )
    decision = planned.decision
    report = {
        "deployment": f"{namespace}/{config.kubernetes.deployment}",
        "would_patch": planned.would_patch,
        "paused": pause is not None,
        "pause": None if pause is None else _pause_report(pause),
        **log_fields(decision, now=now),
        "decision": decision.as_dict(),
        "policy_decision": planned.policy_decision.as_dict() if planned.paused else None,
        "note": "plan has no history: stabilization windows, step budgets and startup grace start from now",
    }
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    if not snapshot.trusted:
        print(f"bolina-scaler plan: Consul data cannot be trusted: {snapshot.trust}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def _pause_report(pause: Pause) -> dict[str, Any]:
    """The pause in force as ``/v1/decision`` shows it: the annotation, the count held, any problem."""
    return {"annotation": pause.source, "held_replicas": pause.replicas, "problem": pause.problem}
