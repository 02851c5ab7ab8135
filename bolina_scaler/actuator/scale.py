"""The Bolina Deployment's ``scale`` subresource: the one thing the scaler changes.

Does I/O (through ``call.KubeApi``). Two calls with typed outcomes: ``read`` and ``patch``; both
retry transient failures (``call``) before they give up with ``Unavailable``.

Writes are optimistic: ``patch`` sends the ``resourceVersion`` it was given as a precondition
in a JSON *merge* patch, so a concurrent change — a person running ``kubectl scale`` — fails
with ``Conflict`` instead of being overwritten. The daemon then re-reads and decides again.
Every request carries ``_request_timeout`` because the library's default is to wait forever.

An answer is checked before anyone sees it (``schema.SCALE``, then the counts): ``spec.replicas``
and ``status.replicas`` must be integers the API allows (0 to 2^31 - 1: kube-apiserver 1.35
refuses -5 and 2^31 with a 422), else the read is ``Malformed`` and the daemon holds and says
why. What "missing" means, as kube-apiserver 1.35 answers: a Deployment at 0 replicas reads
``"spec": {}`` (``replicas`` is ``omitempty``), so a missing ``spec.replicas`` is 0; a missing
``spec`` is malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import Conflict, KubeApi, Operation, Resource, Subject
from bolina_scaler.logs import ProblemLog

__all__ = ["DEFAULT_MAX_ATTEMPTS", "Scale", "ScaleTarget"]

DEFAULT_MAX_ATTEMPTS: Final = 5
MAX_REPLICAS: Final = 2**31 - 1
"""``spec.replicas`` is an int32 that the API server keeps at 0 or more."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """The Deployment's scale subresource: desired and observed replicas, and its version."""

    replicas: int
    status_replicas: int
    resource_version: str
    selector: str | None
    uid: str | None = field(default=None, compare=False)
    """The Deployment's uid (the Scale carries it): Events name their involved object by it."""


class ScaleTarget:
    """Reads and patches the configured Deployment's scale through a connected ``KubeApi``."""

    def __init__(
        self, api: KubeApi, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS, problems: ProblemLog | None = None
    ) -> None:
        """``max_attempts`` bounds the tries of one call (including the first); ``problems``
        logs each distinct failure once (the daemon's; none: the caller reports)."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.api = api
        self._read = Operation(name="scale_read", verb="get", attempts=max_attempts, essential=True)
        self._patch = Operation(
            name="scale_patch", verb="patch", attempts=max_attempts, expected=(Conflict,), essential=True
        )
        self._problems = problems

    @property
    def namespace(self) -> str:
        return self.api.namespace

    @property
    def deployment(self) -> str:
        return self.api.config.deployment

    @property
    def subject(self) -> Subject:
        return Subject.deployment(self.namespace, self.deployment, resource="deployments/scale")

    @property
    def path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.deployment}/scale"

    async def read(self) -> Scale:
        """GET the scale subresource."""
        return await self._resource().get(self._read, answer=_SCALE_ANSWER)

    async def patch(self, replicas: int, *, resource_version: str | None) -> Scale:
        """Set ``spec.replicas``; with ``resource_version``, only if nothing changed since (else Conflict)."""
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        scale = self._resource()
        return await scale.patch(self._patch, body=body, answer=_SCALE_ANSWER, resource_version=resource_version)

    def _resource(self) -> Resource:
        # Built per request: the namespace is known only once the KubeApi is connected.
        return self.api.resource(self.subject, self.path, problems=self._problems)


class _ScaleAnswer:
    """An answer read as a ``Scale``, its counts checked (inside the request: a bad one is ``Malformed``)."""

    def decode(self, buf: bytes, /) -> Scale:
        answer = schema.SCALE.decode(buf)
        return Scale(
            replicas=_count("spec.replicas", answer.spec.replicas),
            status_replicas=_count("status.replicas", answer.status.replicas),
            resource_version=answer.metadata.resourceVersion,
            selector=schema.text(answer.status.selector),
            uid=schema.text(answer.metadata.uid),
        )


_SCALE_ANSWER: Final = _ScaleAnswer()


def _count(field: str, value: int) -> int:
    """A replica count as the API allows it; else ``AnswerError``."""
    if 0 <= value <= MAX_REPLICAS:
        return value
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}…"
    raise schema.AnswerError(
        f"{field} {shown}, which no API server allows (0 to {MAX_REPLICAS}); holding until the scale reads sensibly"
    )
