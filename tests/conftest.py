"""Shared test fixtures. Helpers that build fleets live in ``tests/builders.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes
from tests.harness import KUBE_NS, NS, World


@pytest.fixture(autouse=True)
async def _no_tasks_left_behind() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (as kopf does): they hide real bugs."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for task in leftover:
        task.cancel()
    if leftover:
        names = ", ".join(sorted(t.get_name() for t in leftover))
        pytest.fail(f"test left {len(leftover)} task(s) running: {names}")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A fake Consul and a fake Kubernetes with a `bolina` Deployment at 0 replicas."""
    async with FakeConsul() as consul, FakeKubernetes() as kube:
        kube.add_deployment(NS, "bolina", replicas=0, labels={"app": "bolina"})
        yield World(consul, kube, kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS))


@pytest.fixture
async def kube() -> AsyncIterator[FakeKubernetes]:
    """A fake Kubernetes alone, with a `bolina` Deployment at 3 replicas in ``KUBE_NS``."""
    async with FakeKubernetes() as fake:
        fake.add_deployment(KUBE_NS, "bolina", replicas=3)
        yield fake
