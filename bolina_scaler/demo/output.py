"""What the demo prints: the scale actions, a terminal chart, the Events, the removed pods, the HTTP answers.

Does I/O (stdout, and the optional matplotlib plot). Everything is told in scenario seconds. At
``--speed N`` the daemon runs with every window N times shorter, so the durations in its own
texts (``for 2s of 2s``, ``per 0.666667s``) are wall seconds: ``in_scenario_seconds`` turns them
back (``for 6s of 6s``, ``per 2s``) before they go into the tables. The HTTP answers are printed
as the daemon gave them.
"""

from __future__ import annotations

import re
import sys

from bolina_scaler.config import Config
from bolina_scaler.demo.scenario import CAPACITY
from bolina_scaler.demo.world import ScriptedWorld

__all__ = ["Action", "in_scenario_seconds", "plot", "print_report", "sparkline"]

Action = tuple[float, int, int, str, str]
"""One scale action: (scenario seconds, before, after, reason, why)."""


_SECONDS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:e-?\d+)?)(ms|s)\b")
"""A duration as the daemon writes one (``{seconds:g}s``), not part of a word or a longer number."""


def in_scenario_seconds(text: str, speed: float) -> str:
    """``text`` with every duration the daemon wrote at ``speed`` told in scenario seconds.

    ``per 0.666667s`` at speed 3 is ``per 2s``; at speed 1 the text is returned as it is.
    """
    if speed == 1.0:
        return text

    def scaled(match: re.Match[str]) -> str:
        seconds = float(match.group(1)) * (0.001 if match.group(2) == "ms" else 1.0) * speed
        return f"{seconds:.3g}s"

    return _SECONDS.sub(scaled, text)


def print_report(actions: list[Action], world: ScriptedWorld, config: Config, events: list[dict[str, object]],
                 answers: list[tuple[str, str]]) -> None:  # fmt: skip
    """Everything the demo prints after the run, in order."""
    _print_summary(actions, world)
    _print_chart(world, config)
    _print_events(events, world.speed)
    _print_removed(world)
    _print_http(answers, world.speed)


def _print_summary(actions: list[Action], world: ScriptedWorld) -> None:
    out = sys.stdout
    out.write("\nScale actions (scenario seconds):\n")
    if world.speed != 1.0:
        out.write(
            f"(at --speed {world.speed:g} the daemon's windows were {world.speed:g} times shorter; "
            "the durations in its texts are told here in scenario seconds)\n"
        )
    out.write(f"{'t':>6}  {'replicas':>9}  {'reason':<24} why\n")
    for t, before, after, reason, why in actions:
        out.write(f"{t:6.1f}  {before:>3} → {after:<3}  {reason:<24} {in_scenario_seconds(why, world.speed)}\n")
    if world.timeline:
        peak = max(row[2] for row in world.timeline)
        last = world.timeline[-1]
        out.write(
            f"\n{len(actions)} scale actions; peak {peak} replicas; at the end {last[2]} replicas, "
            f"{last[4]}/{last[3]} servers available for {last[1]} clients.\n"
        )
    out.flush()


_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float], *, top: float) -> str:
    """One character per value, ``" "`` for 0 up to ``"█"`` for ``top`` (a plot that needs no matplotlib)."""
    scale = len(_BARS) - 1
    return "".join(_BARS[max(0, min(scale, round(v / top * scale)))] if top > 0 else " " for v in values)


def _print_chart(world: ScriptedWorld, config: Config, *, width: int = 60) -> None:
    """The run at a glance in the terminal: demand, replicas and the Available share over time."""
    if not world.timeline:
        return
    end = world.timeline[-1][0]
    columns: list[tuple[float, int, int, int, int]] = []
    for column in range(width):
        at = end * (column + 1) / width
        columns.append(next((row for row in world.timeline if row[0] >= at), world.timeline[-1]))
    top = float(max(config.policy.max_replicas, *(row[1] / CAPACITY for row in columns)))
    shares = [row[4] / row[3] if row[3] else 0.0 for row in columns]
    target = config.policy.target_available_ratio
    below = "".join("^" if share < target else " " for share in shares)
    out = sys.stdout
    out.write(f"\nThe run at a glance (0 to {end:.0f} scenario seconds, full bar = {top:g} servers / share 1.0):\n")
    out.write(f"  demand    |{sparkline([row[1] / CAPACITY for row in columns], top=top)}|\n")
    out.write(f"  replicas  |{sparkline([float(row[2]) for row in columns], top=top)}|\n")
    out.write(f"  available |{sparkline(shares, top=1.0)}|  share of registered servers\n")
    out.write(f"  < target  |{below}|  ^ = share below target {target:g}\n")
    out.flush()


def _print_events(events: list[dict[str, object]], speed: float) -> None:
    out = sys.stdout
    out.write("\nKubernetes Events on deployment/bolina (kubectl describe deploy bolina):\n")
    out.write(f"  {'type':<8} {'reason':<20} {'count':>5}  message\n")
    for event in events:
        message = in_scenario_seconds(str(event["message"]), speed)
        out.write(f"  {event['type']!s:<8} {event['reason']!s:<20} {event.get('count', 1)!s:>5}  {message}\n")


def _print_removed(world: ScriptedWorld) -> None:
    out = sys.stdout
    out.write(
        "\nPods removed by scale-downs, in the ReplicaSet's order (lowest pod-deletion-cost first, "
        "as the scaler set them: Critical, then Warning, then the least loaded):\n"
    )
    for n, (t, name, status, load, cost) in enumerate(world.removed):
        out.write(f"  t={t:5.1f}  {name:<28} was {status:<8} load {load:<5} deletion cost {cost}\n")
        kept = world.kept.get(t)
        if kept and (n + 1 == len(world.removed) or world.removed[n + 1][0] != t):
            out.write(f"  {'':7}  ({len(kept)} kept, loads {min(kept, key=float)} to {max(kept, key=float)})\n")
    if not world.removed:
        out.write("  (none)\n")


def _print_http(answers: list[tuple[str, str]], speed: float) -> None:
    out = sys.stdout
    if answers:
        shorter = f"; its windows are {speed:g} times shorter, in its own seconds" if speed != 1.0 else ""
        out.write(f"\nThe daemon's HTTP API (it stops with the demo{shorter}):\n")
    for command, body in answers:
        out.write(f"$ {command}\n{body}\n")
    out.flush()


def plot(world: ScriptedWorld, actions: list[Action], path: str, config: Config) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib: pip install 'bolina-scaler[plot]'", file=sys.stderr)
        return 2
    t = [row[0] for row in world.timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6), dpi=100)
    top.plot(t, [row[1] / CAPACITY for row in world.timeline], label="demand (servers' worth)", color="tab:gray")
    top.step(t, [row[2] for row in world.timeline], where="post", label="replicas", color="tab:blue")
    top.step(t, [row[3] for row in world.timeline], where="post", label="registered", color="tab:green")
    top.set_ylabel("servers")
    top.legend(loc="upper left")
    share = [row[4] / row[3] if row[3] else 0.0 for row in world.timeline]
    bottom.plot(t, share, label="Available share", color="tab:green")
    bottom.axhline(config.policy.target_available_ratio, color="tab:red", linestyle="--", label="target")
    for at, _, _, _, _ in actions:
        bottom.axvline(at, color="tab:blue", alpha=0.2)
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("scenario seconds")
    bottom.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"plot written to {path}")
    return 0
