"""The demo's world: the fake Kubernetes' pods registered in the fake Consul, reporting what the script says.

Does I/O only through the fakes' Python controls (no HTTP). Each tick: pods that Kubernetes
created register after a start-up delay, pods it deleted vanish from Consul, and each server
reports the stage the real availability classifier (hysteresis, dwell) gives its share of the
scripted demand; one server crashes along the way.

The servers do not share the demand equally: each carries its own share (``weight``, from its
name: some clients stay long, some servers got more of them), so at any moment their loads
differ, as on a real fleet, and a scale-down visibly removes the least loaded ones.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from bolina_scaler.demo.scenario import CAPACITY, DEMO_CLASSIFIER, NAMESPACE, SERVICE, Scenario
from bolina_scaler.reporter.agent import check_status
from bolina_scaler.reporter.availability import ClassifierConfig, Stage, classify, quantize_load
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

__all__ = ["ScriptedWorld", "weight"]


def weight(name: str) -> float:
    """A server's share of the demand relative to the fleet's mean: 0.5 to 1.5, fixed by its name."""
    ordinal = name.rsplit("-", 1)[-1]  # not the template hash: the same pod carries the same share in every run
    return 0.5 + (zlib.crc32(ordinal.encode()) % 1001) / 1000


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
    removed: list[tuple[float, str, str, str, int]] = field(default_factory=list)
    """Pods Kubernetes deleted, in the order the ReplicaSet chose them: (scenario time, name, last
    reported status, load, pod-deletion-cost)."""
    kept: dict[float, list[str]] = field(default_factory=dict)
    """At each scenario time pods were removed: the loads the servers left behind had published."""
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
        self._deregister_deleted(t, registered, set(pods))
        ready = [n for n in pods if t - self.born[n] >= self.scenario.startup_delay / self.speed]
        healthy = [n for n in ready if n not in self.crashed]
        demand = self.scenario.demand(t * self.speed)
        mean_load = demand / (CAPACITY * len(healthy)) if healthy else 0.0
        mean_weight = sum(map(weight, healthy)) / len(healthy) if healthy else 1.0
        loads = {n: mean_load * weight(n) / mean_weight for n in ready}
        statuses = {n: self._classify(n, loads[n], t) for n in ready}
        for n, status in statuses.items():
            # Servers re-publish Service.Meta.load when it moves, in the reporter's 5 % steps.
            published = f"{quantize_load(loads[n]):.2f}"
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

    def _deregister_deleted(self, t: float, registered: set[str], pods: set[str]) -> None:
        """Pods Kubernetes deleted leave Consul; noted in the order the ReplicaSet chose them."""
        order = {name: n for n, name in enumerate(self.kube.deleted_pods)}
        removed = sorted(registered - pods, key=lambda name: order.get(name, len(order)))
        if removed:
            self.kept[t * self.speed] = [self.loads[n] for n in sorted(registered & pods) if n in self.loads]
        for gone in removed:
            cost = self.kube.deletion_costs.get(gone, 0)
            self.removed.append((t * self.speed, gone, self.reported.get(gone, "?"), self.loads.get(gone, "?"), cost))
            self.consul.remove_instance(gone)
            self.born.pop(gone, None)
            self.reported.pop(gone, None)
            self.stages.pop(gone, None)

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
