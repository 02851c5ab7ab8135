"""``bolina-scaler demo``: the real daemon against the in-process Consul and Kubernetes fakes.

Does I/O (local HTTP servers on 127.0.0.1, stdout). A scripted scenario plays the part of the
world: demand rises and falls, the fake Kubernetes creates and deletes pods as the scaler patches
the Deployment, each pod registers in the fake Consul after a start-up delay and reports the stage the real
availability classifier (hysteresis, dwell) gives its share of the demand, and one server crashes
along the way. The daemon is the
real one (watch, policy, patching); only the servers it talks to are fakes. It exits by itself
after about 45 seconds (``--speed 2`` halves that) and prints every scale action with its reason,
the Kubernetes Events it recorded, which pods the scale-downs removed (deletion-cost steering:
Critical first), and what its HTTP API (on a free port) answered to ``/v1/servers`` and
``/v1/decision``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from bolina_scaler.availability import ClassifierConfig, Stage, Thresholds, classify
from bolina_scaler.config import Config, parse_config
from bolina_scaler.daemon import Daemon
from bolina_scaler.fakes.consul import FakeConsul
from bolina_scaler.fakes.kubernetes import FakeKubernetes
from bolina_scaler.patching import ScaleTarget
from bolina_scaler.reporting import check_status
from bolina_scaler.watching import ConsulWatch

__all__ = ["DEMO_CONFIG", "Scenario", "run_demo"]

log = structlog.get_logger("bolina_scaler.demo")

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
"""How the demo's servers judge their own stage: the real classifier (``bolina_scaler.availability``,
as ``bolina-scaler report`` runs it), with hysteresis and a dwell shrunk to the demo's pace."""


@dataclass(slots=True)
class World:
    """Keeps the fake Consul in step with the fake Kubernetes pods and the scripted demand."""

    consul: FakeConsul
    kube: FakeKubernetes
    scenario: Scenario
    speed: float
    crashed: set[str] = field(default_factory=set)
    born: dict[str, float] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)
    timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    removed: list[tuple[float, str, str, str]] = field(default_factory=list)
    """Pods Kubernetes deleted: (scenario time, name, last reported status, load)."""
    loads: dict[str, str] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)
    classifier: ClassifierConfig = field(init=False)

    def __post_init__(self) -> None:
        self.classifier = DEMO_CLASSIFIER.model_copy(update={"min_dwell": DEMO_CLASSIFIER.min_dwell / self.speed})

    addresses: dict[str, str] = field(default_factory=dict)

    def tick(self, t: float) -> None:
        pods = [p["metadata"]["name"] for p in self.kube.pods(NAMESPACE, selector="app=bolina")]
        for name in pods:
            self.born.setdefault(name, t)
        registered = set(self.consul.instances(SERVICE))
        for gone in registered - set(pods):
            self.removed.append((t * self.speed, gone, self.reported.get(gone, "?"), self.loads.get(gone, "?")))
            self.consul.remove_instance(gone)
            self.born.pop(gone, None)
            self.reported.pop(gone, None)
            self.stages.pop(gone, None)
        ready = [n for n in pods if t - self.born[n] >= self.scenario.startup_delay / self.speed]
        healthy = [n for n in ready if n not in self.crashed]
        demand = self.scenario.demand(t * self.speed)
        load = demand / (CAPACITY * len(healthy)) if healthy else 0.0
        statuses = {n: self._classify(n, load, t) for n in ready}
        for n, status in statuses.items():
            published = f"{min(load, 1):.1f}"  # servers re-publish Service.Meta.load when it moves
            if n not in registered or self.loads.get(n) != published:
                self.loads[n] = published
                number = zlib.crc32(n.encode()) % 900_000_000 + 100_000_000
                self.consul.add_instance(
                    SERVICE,
                    instance_id=n,
                    node=f"node-{n[-5:]}",
                    address=self.addresses.setdefault(n, f"10.1.0.{len(self.addresses) % 250 + 1}"),
                    port=9001,
                    meta={"server_id": str(number), "udp_port": "9002", "pod": n, "load": published},
                    status=status,
                )
            elif self.reported.get(n) != status:
                self.consul.set_status(n, status)
            self.reported[n] = status
        available = sum(1 for s in statuses.values() if s == "passing")
        replicas = int(self.kube.deployment(NAMESPACE, "bolina")["spec"]["replicas"])
        self.timeline.append((t * self.speed, demand, replicas, len(statuses), available))

    def _classify(self, name: str, load: float, t: float) -> str:
        """The stage the server reports: the real classifier on its share of the demand (and errors)."""
        sample = {"connections": load, "errors": 1.0 if name in self.crashed else 0.0}
        previous = self.stages.get(name) or Stage.initial(t)
        self.stages[name] = classify(sample, config=self.classifier, stage=previous, now=t)
        return check_status(self.stages[name].status)

    def crash_one(self) -> str | None:
        names = sorted(n for n in self.consul.instances(SERVICE) if n not in self.crashed)
        if names:
            self.crashed.add(names[0])
            return names[0]
        return None


async def run_demo(*, speed: float = 1.0, plot: str | None = None, scenario: Scenario | None = None) -> int:
    """Play the scenario against the real daemon; print the scale actions; return an exit code."""
    scenario = scenario or Scenario()
    config = _scaled_config(speed)
    actions: list[tuple[float, int, int, str, str]] = []
    async with FakeConsul() as consul, FakeKubernetes() as kube:
        kube.add_deployment(NAMESPACE, "bolina", replicas=0, labels={"app": "bolina"})
        with tempfile.TemporaryDirectory(prefix="bolina-demo-") as tmp:
            kubeconfig = kube.kubeconfig(Path(tmp) / "kubeconfig", namespace=NAMESPACE)
            config = config.model_copy(
                update={
                    "consul": config.consul.model_copy(update={"address": consul.url}),
                    "kubernetes": config.kubernetes.model_copy(update={"kubeconfig": kubeconfig}),
                }
            )
            world = World(consul=consul, kube=kube, scenario=scenario, speed=speed)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            start = loop.time()
            async with ConsulWatch(config.consul) as watch, ScaleTarget(config.kubernetes) as target:
                daemon = Daemon(config, watch=watch, target=target)
                runner = asyncio.create_task(daemon.run(stop), name="daemon")
                try:
                    await _play(world, daemon, scenario, speed, start, actions)
                    answers = await _ask_http(daemon)
                finally:
                    stop.set()
                    await runner
    _print_summary(actions, world)
    _print_chart(world, config)
    _print_events(kube.events(NAMESPACE))
    _print_removed(world)
    _print_http(answers)
    if plot:
        return _plot(world, actions, plot, config)
    return 0


async def _play(
    world: World,
    daemon: Daemon,
    scenario: Scenario,
    speed: float,
    start: float,
    actions: list[tuple[float, int, int, str, str]],
) -> None:
    loop = asyncio.get_running_loop()
    phases = list(scenario.phases)
    while (t := loop.time() - start) < scenario.duration / speed:
        while phases and t * speed >= phases[0].at:
            phase = phases.pop(0)
            log.info(f"scenario: {phase.say}", t=round(t * speed, 1))
            if phase.crash:
                world.crash_one()
        world.tick(t)
        await asyncio.sleep(0.1 / speed)
    for at, decision in daemon.state.applied:
        when = (at - start) * speed
        actions.append((when, decision.current, decision.desired, str(decision.reason), decision.message))


def _scaled_config(speed: float) -> Config:
    config = parse_config(DEMO_CONFIG)
    if speed == 1.0:
        return config
    p = config.policy
    policy = p.model_copy(
        update={
            "scale_down_stabilization": p.scale_down_stabilization / speed,
            "startup_grace": p.startup_grace / speed,
            "scale_up": p.scale_up.model_copy(update={"period": p.scale_up.period / speed}),
            "scale_down": p.scale_down.model_copy(update={"period": p.scale_down.period / speed}),
            "mass_change": p.mass_change.model_copy(update={"confirmation": p.mass_change.confirmation / speed}),
        }
    )
    return config.model_copy(update={"policy": policy})


def _print_summary(actions: list[tuple[float, int, int, str, str]], world: World) -> None:
    out = sys.stdout
    out.write("\nScale actions (scenario seconds):\n")
    out.write(f"{'t':>6}  {'replicas':>9}  {'reason':<24} why\n")
    for t, before, after, reason, why in actions:
        out.write(f"{t:6.1f}  {before:>3} → {after:<3}  {reason:<24} {why}\n")
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


def _print_chart(world: World, config: Config, *, width: int = 60) -> None:
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


async def _ask_http(daemon: Daemon) -> list[tuple[str, str]]:
    """What the daemon's own HTTP API answers at the end (the lines a person would curl)."""
    if daemon.http is None:
        return []
    answers: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        for path in ("/readyz", "/v1/servers", "/v1/decision"):
            async with session.get(f"{daemon.http.url}{path}") as response:
                body = await response.json()
            if path == "/v1/decision":
                body = {k: body[k] for k in ("summary", "role", "identity", "outcome")} | {
                    "inputs": body["decision"]["inputs"],
                    "clamps": body["decision"]["clamps"],
                }
            answers.append((f"curl -s {daemon.http.url}{path}", json.dumps(body, ensure_ascii=False)))
    return answers


def _print_events(events: list[dict[str, object]]) -> None:
    out = sys.stdout
    out.write("\nKubernetes Events on deployment/bolina (kubectl describe deploy bolina):\n")
    out.write(f"  {'type':<8} {'reason':<20} {'count':>5}  message\n")
    for event in events:
        out.write(f"  {event['type']!s:<8} {event['reason']!s:<20} {event.get('count', 1)!s:>5}  {event['message']}\n")


def _print_removed(world: World) -> None:
    out = sys.stdout
    out.write("\nPods removed by scale-downs (pod-deletion-cost: Critical first, then the least loaded):\n")
    for t, name, status, load in world.removed:
        out.write(f"  t={t:5.1f}  {name:<28} was {status:<8} load {load}\n")
    if not world.removed:
        out.write("  (none)\n")


def _print_http(answers: list[tuple[str, str]]) -> None:
    out = sys.stdout
    if answers:
        out.write("\nThe daemon's HTTP API (it stops with the demo):\n")
    for command, body in answers:
        out.write(f"$ {command}\n{body}\n")
    out.flush()


def _plot(world: World, actions: list[tuple[float, int, int, str, str]], path: str, config: Config) -> int:
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
