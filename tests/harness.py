"""The harness for running the real daemon against the in-process fakes (component tests).

``world`` (a fixture in conftest) is a fake Consul and a fake Kubernetes with a ``bolina``
Deployment; ``running(config)`` runs the real daemon on them; ``until`` waits for a condition in
loop time (looptime makes it instant), never for a guessed duration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bolina_scaler.config import Config, parse_config
from bolina_scaler.daemon import Daemon, open_daemon
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

NS = "bolina"
KUBE_NS = "bolina-ns"
"""The namespace of the lone ``kube`` fixture (a fake Kubernetes without Consul)."""

BASE = {
    "consul": {"wait": "60s"},
    "kubernetes": {"namespace": NS, "resync": "30s", "request_timeout": "5s"},
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
    """The fakes a component test drives, with shortcuts for the usual moves."""

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

    def serving(self, count: int, status: str = "passing") -> None:
        """The Deployment at ``count`` replicas, each of them registered in Consul with ``status``."""
        self.kube.scale_by_hand(NS, "bolina", count)
        for n in range(count):
            self.register(n, status)

    def set_statuses(self, status: str, *numbers: int) -> None:
        for n in numbers:
            self.consul.set_status(f"bolina-{n}", status)

    def replicas(self) -> int:
        return int(self.kube.deployment(NS, "bolina")["spec"].get("replicas", 0))

    def patch_count(self) -> int:
        return len(self.kube.patches)


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Daemon]:
    stop = asyncio.Event()
    async with open_daemon(config) as daemon:
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


def logged(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]
