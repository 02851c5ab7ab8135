"""The demo's world: the fake Kubernetes' pods registered in the fake Consul, reporting what the script says.

Does I/O only through the fakes' Python controls (no HTTP). Each tick: pods that Kubernetes
created register after a start-up delay, pods it deleted vanish from Consul, and each server
reports the stage the real availability classifier (hysteresis, dwell) gives its share of the
scripted demand; one server crashes along the way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from bolina_scaler.demo.scenario import CAPACITY, DEMO_CLASSIFIER, NAMESPACE, SERVICE, Scenario
from bolina_scaler.reporter.agent import check_status
from bolina_scaler.reporter.availability import ClassifierConfig, Stage, classify
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

__all__ = ["ScriptedWorld"]


@dataclass(slots=True)
class ScriptedWorld:
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
