"""What a failed Kubernetes request means: the exception tree, and the one line each failure says.

Pure: no I/O. ``call.KubeApi`` raises ``Refused`` for every non-2xx answer it receives and turns
it into one of the exceptions below with ``refusal``, whose ``str()`` is one line naming the
object, the HTTP status and what to do. The tree is independent of the HTTP library underneath::

    KubernetesError         .status: the HTTP status, or None (no answer)
    ├── Forbidden           401/403: credentials or RBAC. Not retried.
    ├── NotFound            404: the object (or namespace) does not exist. Not retried.
    ├── Conflict            409: the object changed after the resourceVersion sent. Not retried.
    ├── Unavailable         429/5xx/timeouts/connection errors that outlasted every attempt.
    └── Malformed           the answer is not the object asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "Conflict",
    "Forbidden",
    "KubernetesError",
    "Malformed",
    "NotFound",
    "Refused",
    "Subject",
    "Unavailable",
    "parse_retry_after",
    "refusal",
]

_DELAY_SECONDS = re.compile(r"[0-9]{1,20}(?:\.[0-9]{1,9})?")
"""RFC 9110's ``delay-seconds`` (``1*DIGIT``), fractions tolerated; never a sign, an exponent,
``inf`` or ``nan`` (Python's ``float()`` reads all of those)."""


class KubernetesError(Exception):
    """A Kubernetes request failed; ``str()`` is one line that says what to do."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Forbidden(KubernetesError):
    """401/403: the credentials are wrong or RBAC does not allow the call. Not retried."""


class NotFound(KubernetesError):
    """404: the object (or its namespace) does not exist. Not retried."""


class Conflict(KubernetesError):
    """409: the object changed after the given resourceVersion (or already exists)."""


class Unavailable(KubernetesError):
    """429/5xx/timeouts/connection errors that persisted through every attempt."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        """How long the API server asked us to wait (``Retry-After``), when it asked."""


class Malformed(KubernetesError):
    """The API server answered something that is not the object asked for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """What requests are about, for their error messages: ``deployments/scale 'bolina' in namespace 'x'``."""

    resource: str
    """As the Role names it: ``deployments/scale``, ``leases``, ``events``, ``pods``."""
    kind: str
    """What a person calls the object: ``deployment``, ``lease``, ``event``, ``pod``."""
    namespace: str
    name: str | None = None
    """One object's name, or None for requests about many (Events, pods): one message for all of them,
    so a problem that hits each one is still logged once."""
    missing: str = ""
    """What to check when it does not exist (the 404 message's hint)."""

    @classmethod
    def deployment(cls, namespace: str, name: str, *, resource: str = "deployments") -> Subject:
        """The scaled Deployment (``resource``: ``deployments``, or its ``deployments/scale``)."""
        return cls(
            resource=resource,
            kind="deployment",
            namespace=namespace,
            name=name,
            missing="check kubernetes.deployment and kubernetes.namespace",
        )

    def doing(self, verb: str) -> str:
        named = f" '{self.name}'" if self.name else ""
        return f"{verb} {self.resource}{named} in namespace '{self.namespace}'"


class Refused(Exception):
    """A non-2xx answer, as received (``call`` turns it into the tree above with ``refusal``)."""

    def __init__(
        self, *, status: int, reason: str | None, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status} {reason or ''}".strip())
        self.status = status
        self.reason = reason
        self.body = body
        self.headers: Mapping[str, str] = headers or {}

    @property
    def transient(self) -> bool:
        """429 and 5xx: worth another attempt."""
        return self.status == 429 or self.status >= 500

    @property
    def why(self) -> str:
        """The ``reason`` of the Status object the API server sent, else the HTTP reason phrase."""
        return str(self._status().get("reason") or self.reason or "error")

    @property
    def server_message(self) -> str:
        message = str(self._status().get("message") or self.reason or "no details")
        return " ".join(message.split())[:300]

    def retry_after(self, *, wall_now: float) -> float | None:
        """``Retry-After`` in seconds as the API server sent it (uncapped: ``KubeApi`` caps it),
        or None when absent or unreadable (``parse_retry_after``)."""
        value = self.headers.get("Retry-After")
        return None if value is None else parse_retry_after(value, wall_now=wall_now)

    def _status(self) -> dict[str, Any]:
        try:
            body = json.loads(self.body) if self.body else {}
        except (TypeError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}


def parse_retry_after(value: str, *, wall_now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: ``delay-seconds`` (``"1"``, ``"0.5"``) or an
    HTTP-date (seconds from ``wall_now``, Unix time, to it; 0 when it is past). Anything else
    (``inf``, ``nan``, ``1e9``, ``-1``, a date that does not parse, 20+ digits) is None: the
    caller's own backoff applies. The value is not capped here: ``KubeApi`` caps every wait at
    ``kubernetes.retry_after_max``."""
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is read as such
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, when.timestamp() - wall_now)
    except (OverflowError, OSError, ValueError):
        return None


def refusal(refused: Refused, *, subject: Subject, verb: str, resource_version: str | None) -> KubernetesError:
    """The exception a refused (not transient) request raises: one line saying what to do."""
    status = refused.status
    doing = subject.doing(verb)
    if status == 401:
        return Forbidden(
            f"unauthorized (HTTP 401): the API server rejected our credentials trying to {doing} "
            "(check the service-account token or the kubeconfig user)",
            status=status,
        )
    if status == 403:
        return Forbidden(
            f"forbidden (HTTP 403): the service account cannot {doing} "
            f"(check the Role grants '{verb}' on {subject.resource} and its RoleBinding)",
            status=status,
        )
    where = f"{subject.kind} '{subject.name}' in namespace '{subject.namespace}'"
    if status == 404:
        hint = f" ({subject.missing})" if subject.missing else ""
        return NotFound(f"not found (HTTP 404): no {where}{hint}", status=status)
    if status == 409:
        since = f"after resourceVersion {resource_version} was read" if resource_version else "concurrently"
        return Conflict(f"conflict (HTTP 409): {where} changed {since} (re-read it and decide again)", status=status)
    return KubernetesError(
        f"rejected (HTTP {status} {refused.why}): could not {doing}: {refused.server_message}", status=status
    )
