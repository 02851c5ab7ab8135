"""Shared test fixtures. Helpers that build fleets live in ``tests/builders.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


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
