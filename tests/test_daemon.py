"""The real daemon (watch → policy → patching) against the in-process Consul and Kubernetes fakes.

Every test runs on looptime's fake event-loop clock: stabilization windows, startup grace and
backoff pass in no real time, and waits are for conditions (a patch, a log line), never guesses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bolina_scaler.config import Config, parse_config
from bolina_scaler.daemon import Daemon
from bolina_scaler.fakes.consul import FakeConsul, Fault
from bolina_scaler.fakes.kubernetes import FakeKubernetes
from bolina_scaler.patching import ScaleTarget
from bolina_scaler.watching import ConsulWatch

pytestmark = pytest.mark.looptime

NS = "bolina"

BASE = {
    "consul": {"wait": "60s", "rate_per_second": 50, "rate_burst": 2, "retry_initial": "1s", "retry_max": "5s"},
    "kubernetes": {"namespace": NS, "resync": "30s", "request_timeout": "5s", "retry_initial": "1s"},
    "policy": {
        "min_replicas": 2,
        "max_replicas": 20,
        "target_available_ratio": 0.5,
        "scale_down_ratio": 0.8,
        "scale_down_stabilization": "60s",
        "startup_grace": "30s",
        "max_snapshot_age": "5m",
        "scale_up": {"max_step": 4, "max_percent": 100, "period": "5s"},
        "scale_down": {"max_step": 1, "max_percent": 0, "period": "5s"},
        "mass_change": {"min_fleet": 100},
    },
    "http": {"enabled": False},
}


@dataclass
class World:
    consul: FakeConsul
    kube: FakeKubernetes
    kubeconfig: Path

    def config(self, **policy: Any) -> Config:
        data: dict[str, Any] = {k: dict(v) for k, v in BASE.items()}
        data["consul"]["address"] = self.consul.url
        data["kubernetes"]["kubeconfig"] = str(self.kubeconfig)
        data["policy"].update(policy)
        return parse_config(data)

    def register(self, n: int, status: str = "passing") -> None:
        self.consul.add_instance(
            "bolina",
            instance_id=f"bolina-{n}",
            node=f"node-{n}",
            address=f"10.0.0.{n}",
            port=9001,
            meta={"server_id": str(1000 + n), "udp_port": "9002", "pod": f"bolina-{n}"},
            status=status,
        )

    def replicas(self) -> int:
        return int(self.kube.deployment(NS, "bolina")["spec"].get("replicas", 0))

    def patch_count(self) -> int:
        return len(self.kube.patches)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeConsul() as consul, FakeKubernetes() as kube:
        kube.add_deployment(NS, "bolina", replicas=0, labels={"app": "bolina"})
        yield World(consul, kube, kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS))


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    async with ConsulWatch(config.consul) as watch, ScaleTarget(config.kubernetes) as target:
        daemon = Daemon(config, watch=watch, target=target)
        task = asyncio.create_task(daemon.run(stop), name="daemon-under-test")
        try:
            yield daemon
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def until(condition: Callable[[], bool], *, within: float = 60.0) -> None:
    """Wait (in loop time) until ``condition()`` holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s (loop time)")
        await asyncio.sleep(0.05)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


class TestColdStart:
    async def test_deployment_at_zero_goes_to_min_with_a_merge_patch(self, world: World):
        """A Deployment at 0 replicas is raised to min_replicas with a merge patch and a precondition."""
        with capture_logs() as logs:
            async with running(world.config()):
                await until(lambda: world.replicas() == 2)
        patch = world.kube.patches[0]
        assert patch.content_type == "application/merge-patch+json"
        assert patch.body["spec"] == {"replicas": 2}
        assert "resourceVersion" in patch.body["metadata"]
        first = events(logs, "evaluation")[0]
        assert (first["reason"], first["current"], first["desired"]) == ("cold_start", 0, 2)


class TestScaleUp:
    async def test_servers_turning_warning_and_critical_scale_up(self, world: World):
        """Three of four servers leaving Available (1/4 < 0.5) adds the two servers that restore the share."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            world.consul.set_status("bolina-1", "warning")
            world.consul.set_status("bolina-2", "warning")
            world.consul.set_status("bolina-3", "critical")
            await until(lambda: world.replicas() == 6)
            assert daemon.state.decision is not None
            assert daemon.state.decision.reason == "below_target"

    async def test_no_runaway_while_new_servers_start(self, world: World):
        """While requested servers have not registered, further bad news within the grace adds nothing."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n, "passing" if n == 0 else "warning")
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: world.replicas() == 6)
                patches = world.patch_count()
                # Churn within the grace: the two new pods never register, statuses flap.
                for flip in range(5):
                    world.consul.set_status("bolina-1", "critical" if flip % 2 else "warning")
                    want = flip % 2
                    await until(
                        lambda w=want: daemon.state.snapshot is not None and daemon.state.snapshot.critical == w
                    )
                assert world.patch_count() == patches
                assert daemon.state.decision is not None
                assert daemon.state.decision.inputs.pending == 2
                # After startup_grace (30 s) the phantom replicas stop counting: scale up again.
                await until(lambda: world.replicas() > 6, within=40)
        expired = [e for e in events(logs, "evaluation") if e.get("pending_expired")]
        assert expired
        assert any("startup_grace" in note for note in expired[0]["notes"])


class TestScaleDown:
    async def test_scale_down_only_after_stabilization(self, world: World):
        """An all-Available fleet loses one server only once the 60 s window has passed, with no Consul change."""
        world.kube.scale_by_hand(NS, "bolina", 5)
        for n in range(5):
            world.register(n)
        loop = asyncio.get_running_loop()
        async with running(world.config()):
            start = loop.time()
            await until(lambda: world.replicas() == 4, within=120)
            assert loop.time() - start >= 60


class TestConsulTrouble:
    async def test_consul_down_holds_then_recovers(self, world: World):
        """While Consul errors, the daemon holds (one untrusted evaluation), then acts once it answers."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.consul.inject(Fault.http_error(500), times=6)
                world.consul.touch("bolina")  # the parked query answers; the next ones fail
                await until(lambda: any(e["reason"] == "untrusted_data" for e in events(logs, "evaluation")))
                for n in (1, 2, 3):
                    world.consul.set_status(f"bolina-{n}", "critical")
                assert world.replicas() == 4
                await until(lambda: world.replicas() == 6, within=120)
        held = next(e for e in events(logs, "evaluation") if e["reason"] == "untrusted_data")
        assert held["direction"] == "hold"
        assert any("500" in p for p in held["trust_problems"])

    async def test_index_reset_is_followed(self, world: World):
        """When Consul's index goes backwards (snapshot restore) the watch starts over and keeps scaling."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            before = daemon.state.snapshot
            assert before is not None
            world.consul.set_index(1)
            await until(lambda: daemon.watch.index_resets >= 1)
            for n in (1, 2, 3):
                world.consul.set_status(f"bolina-{n}", "warning")
            await until(lambda: world.replicas() == 6)

    async def test_no_known_leader_holds(self, world: World):
        """An answer from a Consul that knows no leader is not acted on."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.consul.known_leader = False
                for n in (1, 2, 3):
                    world.consul.set_status(f"bolina-{n}", "critical")
                await until(lambda: any(e["reason"] == "untrusted_data" for e in events(logs, "evaluation")))
        assert world.replicas() == 4


class TestKubernetesTrouble:
    async def test_hand_scaling_is_respected(self, world: World):
        """A person scaling by hand: the stale patch gets 409, the daemon re-reads and starts from their value."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.kube.scale_by_hand(NS, "bolina", 8)
                for n in (1, 2, 3):
                    world.consul.set_status(f"bolina-{n}", "warning")
                await until(lambda: any(e.get("external_change_from") == 4 for e in events(logs, "evaluation")))
        # The four hand-added pods count as starting: 1+4 of 4+4 is above target, nothing to add.
        assert world.replicas() == 8
        assert all(p.body["spec"]["replicas"] != 6 or p.status == 409 for p in world.kube.patches)

    async def test_forbidden_is_one_clear_line_and_watching_goes_on(self, world: World):
        """A 403 on patch logs one error line naming the problem; once RBAC is fixed, the scale happens."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n)
        world.kube.deny("patch", "deployments/scale")
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                for n in (1, 2, 3):
                    world.consul.set_status(f"bolina-{n}", "warning")
                await until(lambda: daemon.state.last_patch_error is not None)
                world.consul.set_status("bolina-3", "critical")
                await until(lambda: daemon.state.evaluations >= 3, within=30)
                world.kube.allow_all()
                await until(lambda: world.replicas() == 6, within=60)
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert "forbidden" in errors[0]["error"].lower()

    async def test_dry_run_never_patches(self, world: World):
        """With dry_run the patch it would send is logged and none is sent."""
        config = world.config().model_copy(update={"dry_run": True})
        with capture_logs() as logs:
            async with running(config):
                await until(lambda: bool(events(logs, "dry run: not patching")))
        assert world.patch_count() == 0
        assert events(logs, "dry run: not patching")[0]["would_patch"] == {"spec": {"replicas": 2}}


class TestShutdown:
    async def test_stop_is_prompt_and_clean(self, world: World):
        """Setting stop ends the daemon quickly even while a blocking query is parked."""
        world.register(0)
        world.kube.scale_by_hand(NS, "bolina", 2)
        loop = asyncio.get_running_loop()
        async with running(world.config()) as daemon:
            await world.consul.wait_parked("bolina")
            await until(lambda: daemon.state.evaluations >= 1)
            stopped_at = loop.time()
        assert loop.time() - stopped_at < 1.0
