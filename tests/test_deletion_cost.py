"""Health-aware scale-down: the cost table (pure) and the pods Kubernetes removes (fake ReplicaSet)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from structlog.testing import capture_logs

from bolina_scaler.actuator.deletion_cost import DELETION_COST, changes, cost_of, costs
from bolina_scaler.core.model import Status
from tests.harness import NS, World, running, until
from tests.test_http import server


class TestCosts:
    def test_critical_then_warning_then_least_loaded_available(self):
        """Lower cost goes first: Critical < Warning < Available, least loaded first within a status."""
        fleet = [
            server(1, Status.AVAILABLE, 0.9),
            server(2, Status.CRITICAL, 0.1),
            server(3, Status.WARNING, 0.2),
            server(4, Status.AVAILABLE, 0.1),
            server(5, Status.WARNING, 0.95),
        ]
        order = sorted(fleet, key=cost_of)
        assert [s.instance_id for s in order] == ["bolina-2", "bolina-3", "bolina-5", "bolina-4", "bolina-1"]

    def test_unknown_load_counts_as_half(self):
        """A server that publishes no load sits in the middle of its status."""
        assert cost_of(server(1, Status.AVAILABLE, None)) == -1000 + 500

    def test_only_pods_named_by_the_registration(self):
        """Servers without a pod name are not steered."""
        nameless = msgspec.structs.replace(server(1, Status.CRITICAL), pod=None)
        assert costs([nameless, server(2, Status.WARNING, 0.0)]) == {"bolina-2": -2000}

    def test_only_live_pods_when_asked(self):
        """Servers whose pod is not among the live ones are not costed (they cannot be annotated)."""
        fleet = [server(1, Status.CRITICAL), server(2, Status.WARNING, 0.0), server(3, Status.AVAILABLE, 1.0)]
        assert costs(fleet, among={"bolina-2", "bolina-3", "other"}) == {"bolina-2": -2000, "bolina-3": -1}

    def test_only_changed_annotations_are_written(self):
        """Pods already carrying the right cost, and pods that do not exist, are left alone."""
        wanted = {"a": -3000, "b": -1000, "gone": 5}
        assert changes(wanted, {"a": "-3000", "b": None, "c": "7"}, remove=2) == {"b": -1000}

    def test_only_what_decides_the_choice_is_written(self):
        """Removing one of many: the victim's cost is written, the other pods are left as they are."""
        wanted = {f"p{i}": -1000 + i for i in range(100)}
        pods: dict[str, str | None] = dict.fromkeys(wanted)
        assert changes(wanted, pods, remove=1) == {"p0": -1000}

    def test_a_stale_lower_annotation_is_corrected(self):
        """A pod whose old annotation would undercut the intended victim gets its current cost."""
        wanted = {"critical": -3000, "busy": -1000 + 900}
        pods = {"critical": None, "busy": "-3500"}
        assert changes(wanted, pods, remove=1) == {"critical": -3000, "busy": -100}

    def test_nothing_to_remove(self):
        """No scale-down, no writes."""
        assert changes({"a": -3000}, {"a": None}, remove=0) == {}


def register_pods(world: World, statuses: dict[int, tuple[str, float]]) -> list[str]:
    """Register one Consul instance per fake pod (Service.Meta.pod = the pod's name)."""
    pods = [p["metadata"]["name"] for p in world.kube.pods(NS, selector="app=bolina")]
    for i, name in enumerate(pods):
        status, load = statuses.get(i, ("passing", 0.1))
        world.consul.add_instance(
            "bolina",
            instance_id=name,
            node=f"node-{i}",
            address=f"10.0.0.{i + 1}",
            port=9001,
            meta={"server_id": str(2000 + i), "pod": name, "load": str(load)},
            status=status,
        )
    return pods


@pytest.mark.looptime
class TestScaleDown:
    async def test_the_pods_removed_are_the_intended_ones(self, world: World):
        """Scaling 6 → 5 (one at a time) removes the Critical pod, then the least-loaded Available one."""
        world.kube.scale_by_hand(NS, "bolina", 6)
        pods = register_pods(world, {0: ("passing", 0.5), 1: ("passing", 0.05), 2: ("passing", 0.4),
                                     3: ("passing", 0.3), 4: ("passing", 0.6), 5: ("passing", 0.2)})  # fmt: skip
        world.consul.set_status(pods[3], "critical")
        # 5/6 Available ≥ 0.8: scale down after the 60 s window, one pod per step.
        async with running(world.config(scale_down_ratio=0.8)):
            await until(lambda: world.replicas() == 5, within=120)
            await until(lambda: len(world.kube.deleted_pods) == 1)
            assert world.kube.deleted_pods == [pods[3]]
            world.consul.remove_instance(pods[3])
            await until(lambda: world.replicas() == 4, within=120)
            await until(lambda: len(world.kube.deleted_pods) == 2)
        assert world.kube.deleted_pods == [pods[3], pods[1]]
        costs_now = {p["metadata"]["name"]: p["metadata"]["annotations"].get(DELETION_COST)
                     for p in world.kube.pods(NS)}  # fmt: skip
        # Only what decided the choice was written: the survivors kept no annotation.
        assert costs_now[pods[5]] is None
        assert all(cost is None for cost in costs_now.values())

    async def test_annotation_failure_never_blocks_the_scale_down(self, world: World):
        """Without RBAC on pods the scale-down still happens, with one warning line."""
        world.kube.scale_by_hand(NS, "bolina", 3)
        register_pods(world, {})
        world.kube.deny("list", "pods")
        with capture_logs() as logs:
            async with running(world.config()):
                await until(lambda: world.replicas() == 2, within=120)
        warnings = [e for e in logs if e["event"] == "deletion_cost.failing" and e["log_level"] == "warning"]
        assert len(warnings) == 1

    async def test_malformed_pod_list_never_blocks_the_scale_down(self, world: World):
        """A pod list that is not Kubernetes' shape: one warning naming it, and the scale-down goes on."""
        world.kube.scale_by_hand(NS, "bolina", 3)
        register_pods(world, {})
        broken = {"kind": "PodList", "items": [{"no": "metadata"}]}
        world.kube.inject_response(broken, method="GET", path_contains="/pods")
        with capture_logs() as logs:
            async with running(world.config()):
                await until(lambda: world.replicas() == 2, within=120)
        warnings = [e for e in logs if e["event"] == "deletion_cost.failing" and e["log_level"] == "warning"]
        assert [w["error"] for w in warnings] == [
            f"malformed answer: list pods in namespace '{NS}' returned no items[0].metadata"
        ]

    async def test_switch_off(self, world: World):
        """policy.scale_down.deletion_cost.enabled: false never touches pods."""
        world.kube.scale_by_hand(NS, "bolina", 3)
        register_pods(world, {})
        config = world.config()
        policy = config.policy.model_copy(
            update={"scale_down": config.policy.scale_down.model_copy(
                update={"deletion_cost": config.policy.scale_down.deletion_cost.model_copy(update={"enabled": False})})}
        )  # fmt: skip
        async with running(config.model_copy(update={"policy": policy})):
            await until(lambda: world.replicas() == 2, within=120)
            await asyncio.sleep(1)
        assert world.kube.request_count(path_contains="/pods") == 0
