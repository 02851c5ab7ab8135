"""The shape of the Kubernetes answers the scaler reads: one schema, one way to say what is wrong.

Pure data and pure functions, no I/O. msgspec ``Struct`` types naming only the fields the scaler
reads, with the types it accepts (every other field is skipped without being built), and one
decoder per answer, which ``call.KubeApi.request`` applies to the body:

=================  ===========================================================================
``SCALE``          ``autoscaling/v1`` Scale: ``spec.replicas`` (omitempty: absent is 0),
                   ``status.replicas``, ``metadata.resourceVersion`` (strict: else malformed)
``DEPLOYMENT``     a Deployment's ``metadata``: ``resourceVersion``, ``annotations`` (the pause)
``WATCH_EVENT``    one line of a watch stream: ``type`` and the ``object`` it carries
``POD_LIST``       a metadata-only pod list: each pod's name, annotations, ``deletionTimestamp``
``LEASE``          ``coordination.k8s.io/v1`` Lease, read *leniently* (``lenient``)
``JSON``           any JSON: for answers that are only checked to be JSON
=================  ===========================================================================

A strict answer that does not match raises ``msgspec.ValidationError`` (a ``ValueError``);
``problem`` turns it, or any other ``ValueError`` of an answer, into the words that follow
"returned" in the operator's one line: ``no status.replicas``, ``an invalid spec.replicas
(expected int, got str)``. No Python exception name reaches that line.

The Lease is the exception: a field of the wrong type reads as absent (its default), because a
Lease written by something else must not stop the election (it is judged "not held" at worst).
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any, Final, Protocol, TypeVar

import msgspec

__all__ = [
    "DEPLOYMENT",
    "JSON",
    "LEASE",
    "POD_LIST",
    "SCALE",
    "WATCH_EVENT",
    "Answer",
    "AnswerError",
    "Deployment",
    "Lease",
    "PodList",
    "Scale",
    "WatchEvent",
    "WatchStatus",
    "lenient",
    "problem",
    "text",
]

_T_co = TypeVar("_T_co", covariant=True)
_S = TypeVar("_S", bound=msgspec.Struct)

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class Answer(Protocol[_T_co]):
    """What reads an answer's body: a msgspec ``Decoder``, or ``LEASE``. Raises ``ValueError``."""

    def decode(self, buf: bytes, /) -> _T_co: ...


class AnswerError(ValueError):
    """An answer that is not what was asked for; ``str()`` follows "returned" (``no spec``)."""


# -- the scale subresource ---------------------------------------------------------------------


class ScaleMetadata(msgspec.Struct, frozen=True, gc=False):
    resourceVersion: NonEmpty
    uid: Any = None
    """Read as absent unless a non-empty string (``text``): Events only name their object by it."""


class ScaleSpec(msgspec.Struct, frozen=True, gc=False):
    replicas: int = 0
    """``omitempty`` on the wire: a Deployment at 0 replicas answers ``"spec": {}``."""


class ScaleStatus(msgspec.Struct, frozen=True, gc=False):
    replicas: int
    selector: Any = None
    """Read as absent unless a non-empty string (``text``): it only steers which pods go."""


class Scale(msgspec.Struct, frozen=True, gc=False):
    metadata: ScaleMetadata
    spec: ScaleSpec
    status: ScaleStatus


# -- the Deployment and its watch --------------------------------------------------------------


class DeploymentMetadata(msgspec.Struct, frozen=True, gc=False):
    resourceVersion: str
    annotations: dict[str, str] | None = None


class DeploymentSpec(msgspec.Struct, frozen=True, gc=False):
    replicas: int | None = None


class Deployment(msgspec.Struct, frozen=True, gc=False):
    metadata: DeploymentMetadata
    spec: DeploymentSpec | None = None
    """Read for ``spec.replicas`` only (the status writer's answer); absent in a watch's metadata view."""


class WatchEvent(msgspec.Struct, frozen=True, gc=False):
    type: str
    object: dict[str, Any]
    """A ``Deployment`` (``msgspec.convert``), or a ``WatchStatus`` when ``type`` is ERROR."""


class WatchStatus(msgspec.Struct, frozen=True, gc=False):
    """The ``Status`` of an ERROR event, read leniently: an error report is never refused."""

    code: int | None = None
    message: str | None = None


# -- the pods ----------------------------------------------------------------------------------


class PodMetadata(msgspec.Struct, frozen=True, gc=False):
    name: str
    annotations: dict[str, str] | None = None
    deletionTimestamp: str | None = None


class Pod(msgspec.Struct, frozen=True, gc=False):
    metadata: PodMetadata


class PodList(msgspec.Struct, frozen=True, gc=False):
    items: list[Pod]


# -- the Lease ---------------------------------------------------------------------------------


class LeaseSpec(msgspec.Struct, frozen=True, gc=False):
    holderIdentity: str = ""
    renewTime: str | None = None
    acquireTime: NonEmpty | None = None
    leaseDurationSeconds: Count | None = None
    leaseTransitions: Count = 0


class LeaseMetadata(msgspec.Struct, frozen=True, gc=False):
    resourceVersion: NonEmpty | None = None


class Lease(msgspec.Struct, frozen=True, gc=False):
    metadata: LeaseMetadata = msgspec.field(default_factory=LeaseMetadata)
    spec: LeaseSpec = msgspec.field(default_factory=LeaseSpec)


def lenient(kind: type[_S], value: object) -> _S:
    """``kind`` from decoded JSON, every field of the wrong type read as absent (its default)."""
    if not isinstance(value, dict):
        return kind()
    fields: dict[str, Any] = {}
    for field in msgspec.structs.fields(kind):
        if field.encode_name not in value:
            continue
        given = value[field.encode_name]
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            fields[field.name] = lenient(field.type, given)
            continue
        with contextlib.suppress(msgspec.ValidationError):  # else absent: the default stands
            fields[field.name] = msgspec.convert(given, field.type)
    return kind(**fields)


class _LenientLease:
    def decode(self, buf: bytes, /) -> Lease:
        return lenient(Lease, msgspec.json.decode(buf))


SCALE: Final = msgspec.json.Decoder(Scale)
DEPLOYMENT: Final = msgspec.json.Decoder(Deployment)
WATCH_EVENT: Final = msgspec.json.Decoder(WatchEvent)
POD_LIST: Final = msgspec.json.Decoder(PodList)
LEASE: Final[Answer[Lease]] = _LenientLease()
JSON: Final = msgspec.json.Decoder()


def text(value: object) -> str | None:
    """A non-empty string, else None (a tolerated field of the wrong type reads as absent)."""
    return value if isinstance(value, str) and value else None


# -- what is wrong -----------------------------------------------------------------------------

_AT: Final = r"(?: - at `\$(?P<at>[^`]*)`)?$"
_MISSING: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`" + _AT)
_EXPECTED: Final = re.compile(r"Expected `(?P<expected>[^`]+)`(?P<bound>[^,`]*?)(?:, got `(?P<got>[^`]+)`)?" + _AT)


def problem(exc: Exception) -> str:
    """What is wrong with an answer, worded to follow "returned": ``no status.replicas``,
    ``an invalid spec.replicas (expected int, got str)``, ``something that is not JSON (…)``."""
    message = " ".join(str(exc).split())
    if isinstance(exc, msgspec.ValidationError):
        if missing := _MISSING.match(message):
            return f"no {_path(missing['at'], missing['field'])}"
        if expected := _EXPECTED.match(message):
            got = f", got {expected['got']}" if expected["got"] else ""
            wanted = f"{expected['expected']}{expected['bound']}"
            return f"an invalid {_path(expected['at']) or 'answer'} (expected {wanted}{got})"
    elif isinstance(exc, msgspec.DecodeError):
        return f"something that is not JSON ({message.removeprefix('JSON is malformed: ')[:200]})"
    return message[:300]


def _path(at: str | None, field: str = "") -> str:
    """``$.items[0].metadata`` + ``name`` → ``items[0].metadata.name``."""
    parts = [part for part in ((at or "").lstrip("."), field) if part]
    return ".".join(parts)
