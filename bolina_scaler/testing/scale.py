"""A Deployment's scale subresource in memory: the evaluator's ``ScaleEndpoint`` without HTTP.

No I/O. Follows what the real subresource does where the evaluator depends on it: every write
moves the ``resourceVersion``; a patch that carries an older one fails with ``Conflict`` (409);
failures are the package's own exceptions, scripted per call. The evaluator's unit tests
(``tests/test_evaluator.py``) drive every arrow of its diagram with it; the component tests use
``kubernetes.FakeKubernetes``, which speaks HTTP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

from bolina_scaler.actuator.call import Conflict, KubernetesError
from bolina_scaler.actuator.scale import Scale

__all__ = ["FakeScaleTarget"]

Call = Literal["read", "patch"]


class FakeScaleTarget:
    """``read``/``patch`` on an in-memory scale, with scripted failures and a gate to hold a read in flight."""

    def __init__(self, replicas: int = 4, *, selector: str = "app=bolina", uid: str = "uid-bolina") -> None:
        self.replicas = replicas
        self.version = 1
        self.selector, self.uid = selector, uid
        self.reads = 0
        """Reads asked for (answered or not)."""
        self.patches: list[tuple[int, str | None]] = []
        """Every patch asked for, in order: (replicas, the resourceVersion precondition)."""
        self.read_gate: asyncio.Event | None = None
        """While set to an unset Event, a read waits for it (a read in flight)."""
        self._failures: dict[Call, deque[KubernetesError]] = {"read": deque(), "patch": deque()}

    def fail(self, call: Call, *errors: KubernetesError) -> None:
        """The next calls of ``call`` raise these, one each, in order."""
        self._failures[call].extend(errors)

    def scale_outside(self, replicas: int) -> None:
        """Someone else scaled the Deployment (``kubectl scale``): a new count and resourceVersion."""
        self.replicas = replicas
        self.version += 1

    def touch(self) -> None:
        """The Deployment changed without a new count (the controller wrote its status)."""
        self.version += 1

    async def read(self) -> Scale:
        self.reads += 1
        if self.read_gate is not None:
            await self.read_gate.wait()
        self._raise_scripted("read")
        return self._scale()

    async def patch(self, replicas: int, *, resource_version: str | None) -> Scale:
        self.patches.append((replicas, resource_version))
        self._raise_scripted("patch")
        if resource_version is not None and resource_version != str(self.version):
            raise Conflict(
                f"conflict (HTTP 409): resourceVersion {resource_version} is not the latest ({self.version})",
                status=409,
            )
        self.replicas = replicas
        self.version += 1
        return self._scale()

    def _raise_scripted(self, call: Call) -> None:
        failures = self._failures[call]
        if failures:
            raise failures.popleft()

    def _scale(self) -> Scale:
        return Scale(
            replicas=self.replicas,
            status_replicas=self.replicas,
            resource_version=str(self.version),
            selector=self.selector,
            uid=self.uid,
        )
