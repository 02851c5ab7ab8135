"""Health-aware scale-down: tell the ReplicaSet which Bolina pods to remove first.

``costs`` and ``changes`` are pure (the fleet → a ``controller.kubernetes.io/pod-deletion-cost``
per pod, and the few writes that decide the choice); ``DeletionCostSteering`` does I/O (list the
Deployment's pods, merge-patch the annotation on those few pods, concurrently, through
``call.KubeApi``). When a Deployment scales down, the ReplicaSet
controller deletes not-ready pods first, then the pods with the LOWEST deletion cost, then the
newest. So before each scale-down of k pods the leader writes the cost of the k cheapest pods
(and of any other pod whose older annotation would undercut them) from this table:

==================  ==========================  ================================================
server status        cost                        why
==================  ==========================  ================================================
Critical            -3000 + load × 999          takes no traffic: removing it loses nothing
Warning             -2000 + load × 999          near capacity, takes no new clients
Available           -1000 + load × 999          least loaded first: fewest clients disconnected
not in Consul       not annotated (cost 0)      starting or unregistered: the policy never
                                                scales down while servers start
==================  ==========================  ================================================

``load`` is the ``Service.Meta.load`` the server registers (0.0-1.0; unknown counts as 0.5).
Pods are matched to Consul instances by the pod name in the registration (``Service.Meta.pod``,
else ``Node.Meta.pod``; see the README's registration convention); servers without one are
not steered. Annotating needs ``list`` and ``patch`` on pods in the Deployment's namespace (the
Role's ``pods`` rule). It is best effort: a failure is logged once and never blocks the scale-down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final

import structlog

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import KubeApi, KubernetesError, NotFound, Operation, Subject
from bolina_scaler.core.model import Server, Status
from bolina_scaler.logs import ProblemLog

__all__ = ["DELETION_COST", "DeletionCostSteering", "cost_of", "costs"]

log = structlog.get_logger("bolina_scaler.actuator.deletion_cost")

DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
_LIST = Operation(name="pods_list", verb="list")
_PATCH = Operation(name="pod_patch", verb="patch", expected=(NotFound,))
_BASE: Final = {Status.CRITICAL: -3000, Status.WARNING: -2000, Status.AVAILABLE: -1000}
_CONCURRENT_PATCHES: Final = 8
_METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json"


def cost_of(server: Server) -> int:
    """The deletion cost of one server's pod: lower is removed first."""
    load = server.load if server.load is not None else 0.5
    return _BASE[server.status] + round(min(1.0, max(0.0, load)) * 999)


def costs(servers: Iterable[Server], *, among: Container[str] | None = None) -> dict[str, int]:
    """Pod name → deletion cost, for every server that names its pod (``among`` these pods, if given)."""
    return {server.pod: cost_of(server) for server in servers if server.pod and (among is None or server.pod in among)}


def changes(wanted: Mapping[str, int], pods: Mapping[str, str | None], *, remove: int) -> dict[str, int]:
    """The annotations to write so that the ``remove`` cheapest pods are the ones deleted.

    ``pods`` maps the live pods to their current annotation. Only what decides the choice is
    written: the intended victims' costs, and the cost of any other pod whose (stale) annotation
    would undercut them; the rest keep theirs, so a scale-down of one pod in a fleet of
    thousands patches one or two pods, not thousands.
    """
    live = sorted((cost, name) for name, cost in wanted.items() if name in pods)
    if remove <= 0 or not live:
        return {}
    victims = live[:remove]
    threshold = victims[-1][0]
    writes = {name: cost for cost, name in victims if pods[name] != str(cost)}
    for cost, name in live[remove:]:
        if pods[name] != str(cost) and _as_cost(pods[name]) <= threshold:
            writes[name] = cost
    return writes


def _as_cost(annotation: str | None) -> int:
    try:
        return int(annotation) if annotation is not None else 0
    except ValueError:
        return 0  # the controller treats an invalid annotation as the default cost


class DeletionCostSteering:
    """Annotates the Deployment's pods before a scale-down. ``await steer(servers, selector)``."""

    def __init__(self, *, api: KubeApi) -> None:
        self.namespace = api.namespace
        self._api = api
        problems = ProblemLog(
            log,
            failing="deletion_cost.failing",
            recovered="deletion_cost.recovered",
            message="could not set pod deletion costs; Kubernetes picks the pods to remove (scaling goes on)",
        )
        subject = Subject(resource="pods", kind="pod", namespace=self.namespace)
        self._pods = api.resource(subject, f"/api/v1/namespaces/{self.namespace}/pods", problems=problems)

    async def steer(self, servers: Sequence[Server], *, selector: str | None, remove: int) -> int:
        """Annotate so the ``remove`` cheapest pods go; return how many were patched. Never raises."""
        if not selector or not any(server.pod for server in servers):
            return 0
        patched = 0
        try:
            current = await self._live_pods(selector)
            # Cost only the servers whose pod is live: the others cannot be annotated.
            writes = changes(costs(servers, among=current), current, remove=remove)
            limit = asyncio.Semaphore(_CONCURRENT_PATCHES)

            async def annotate(name: str, cost: int) -> None:
                nonlocal patched
                body = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
                async with limit:
                    try:
                        await self._pods.item(name).patch(_PATCH, body=body, answer=schema.JSON)
                    except NotFound:
                        return  # deleted since the list: nothing left to steer
                patched += 1
                self._count("patched")

            await _all(annotate(name, cost) for name, cost in writes.items())
        except KubernetesError:
            self._count("failed")
            return patched
        if patched:
            log.info("deletion_cost.set", message="pod deletion costs set before scale-down", pods=patched)
        return patched

    async def _live_pods(self, selector: str) -> dict[str, str | None]:
        """The Deployment's live pods → their deletion-cost annotation, from a metadata-only LIST.

        Asks for ``PartialObjectMetadataList`` (what client-go's metadata informers use): only
        the pods' metadata crosses the wire, not their specs and statuses (a few hundred bytes
        per pod instead of several kilobytes), and ``schema.POD_LIST`` builds only the three
        fields read of each pod. ``application/json`` after it lets an API server that cannot
        convert answer with the full ``PodList`` (same shape).
        """
        query = [("labelSelector", selector)]
        pods = await self._pods.get(_LIST, answer=schema.POD_LIST, query=query, accept=_METADATA_LIST)
        live = (pod.metadata for pod in pods.items if pod.metadata.deletionTimestamp is None)
        return {pod.name: (pod.annotations or {}).get(DELETION_COST) for pod in live}

    def _count(self, outcome: str) -> None:
        if self._api.metrics is not None:
            self._api.metrics.deletion_costs.labels(outcome=outcome).inc()


async def _all(calls: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the calls concurrently; on failure, raise the first error (the others are cancelled)."""
    try:
        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(call)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
