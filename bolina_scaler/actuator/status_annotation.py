"""Writes the scaler's status annotation (``core.scaler_status``) onto the scaled Deployment.

Does I/O (one JSON merge patch of ``metadata.annotations`` through ``call.KubeApi``). The Role
grants ``patch`` on the one Deployment ``bolina`` for it (``manifests/base/scaler/rbac.yaml``).
The answer's ``resourceVersion`` is handed back: the write moved it, and the evaluator adopts it
when ``spec.replicas`` is still what it read, so its next scale patch does not meet a 409 of our
own making. Best effort: a failure is logged once (``status.write_failing``) and never touches
readiness or scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import structlog

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import KubeApi, Operation, Subject
from bolina_scaler.core.scaler_status import STATUS_ANNOTATION
from bolina_scaler.logs import ProblemLog

__all__ = ["StatusAnnotation", "Written"]

log = structlog.get_logger("bolina_scaler.actuator.status")

_PATCH: Final = Operation(name="status_patch", verb="patch")


@dataclass(frozen=True, slots=True)
class Written:
    """What the API server answered to the status write."""

    resource_version: str
    replicas: int | None


class StatusAnnotation:
    """``await StatusAnnotation(api).write(text)``: sets ``bolina-scaler/status`` to ``text``."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self.problems = ProblemLog(
            log,
            failing="status.write_failing",
            recovered="status.write_recovered",
            message="cannot write the bolina-scaler/status annotation; scaling goes on (best effort)",
        )

    async def write(self, text: str) -> Written:
        api = self._api
        name, namespace = api.config.deployment, api.namespace
        subject = Subject.deployment(namespace, name)
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        body = {"metadata": {"annotations": {STATUS_ANNOTATION: text}}}
        answer = await api.resource(subject, path, problems=self.problems).patch(
            _PATCH, body=body, answer=schema.DEPLOYMENT
        )
        replicas = answer.spec.replicas if answer.spec is not None else None
        return Written(answer.metadata.resourceVersion, replicas)
