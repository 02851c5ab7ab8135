"""The scaled Deployment itself, read and then watched for its pause annotations (``core.pause``).

Does I/O (through ``call.KubeApi``). A ``kubectl annotate`` must take effect at once, not at the
next resync, so the Deployment is watched. One turn of the loop::

    [GET deployments/bolina] ──► WATCH ?fieldSelector=metadata.name=bolina&resourceVersion=<rv>
       ▲                            │ ADDED / MODIFIED: annotations → Pause → on_change (if it changed)
       │                            │ BOOKMARK: a newer resourceVersion to resume from
       │                            │ open ``Pace.steady`` (1 s): the loop works (backoff reset,
       │                            │   recovery logged once)
       │                            ▼
       │   ends (timeoutSeconds), having worked ──────────► the next WATCH at once, no GET
       └── backoff (core.pacing.Pace) ◄── ended sooner; no answer (429, 5xx, a stream cut); and,
           GET again first: 410 Gone, an ERROR event, DELETED, a line that is not an event, a refusal

Every turn that did not work waits (``Pace``): at least ``kubernetes.retry_initial``, growing
(jittered) to ``kubernetes.retry_max`` while the API server does not answer and to 30 s while it
answers uselessly (a 410 again right after a fresh read, a watch closed at once, garbage), as
client-go's reflector backs off its relists. So a watch answered 410 every time costs a few
requests a minute, not thousands a second; a single 410 after a watch that worked (a
resourceVersion compacted away meanwhile) costs one ``retry_initial`` before the fresh read.
Problems go to one ``ProblemLog`` (``pause.read_failing``): each distinct one once, and the
recovery once, when a watch works again; a routine one (410, a stream cut or ended early) only
from the third turn in a row that did not work.

A DELETED event or a GET answered 404 calls ``on_missing`` at once: the daemon's cached scale
belongs to a Deployment that is gone, and waiting for ``kubernetes.resync`` to find out would keep
``/readyz`` green over nothing to scale.

The Role grants ``get`` and ``watch`` on this one name only: the API server authorizes a watch
filtered on ``metadata.name`` as a request for that name, so no ``list`` and no other Deployment.

Only ``metadata`` is read from each object (``schema.DEPLOYMENT``, no model classes), and a line
of the watch stream may not exceed ``MAX_EVENT_BYTES``. The pause state survives errors: the last
one read stays in force until a read says otherwise; before the first read it is unknown
(``known`` is False) and the daemon scales as if not paused, saying so on ``/readyz``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Final

import aiohttp
import msgspec
import structlog

from bolina_scaler.actuator import schema
from bolina_scaler.actuator.call import (
    Forbidden,
    KubeApi,
    KubernetesError,
    Malformed,
    NotFound,
    Operation,
    Subject,
    Unavailable,
)
from bolina_scaler.core.pacing import Ending, Pace
from bolina_scaler.core.pause import Pause, pause_of
from bolina_scaler.logs import ProblemLog

__all__ = ["MAX_EVENT_BYTES", "DeploymentWatch"]

log = structlog.get_logger("bolina_scaler.actuator.deployment")

MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
"""One watch event at most: etcd refuses objects above 1.5 MiB, so this is never a real one."""
_MIN_WATCH: Final = 300.0
"""client-go's reflector watches for 5 to 10 minutes (jittered) before it asks again."""
_GET = Operation(name="deployment_get", verb="get", essential=True)
_WATCH = Operation(name="deployment_watch", verb="watch")
_ROUTINE_TURNS: Final = 2
"""A routine end (410, a stream cut or ended early) is a problem from the third turn in a row that
did not work: an API server restart is a cut, then a 410 (its watch cache starts afresh), then a
relist that works."""
_KEY: Final = "pause"
"""The one ``ProblemLog`` key of the loop: its problems, whichever request met them, end together."""


class _Gone(Exception):
    """410: the resourceVersion to resume from is too old; read the object again."""


class _Broke(KubernetesError):
    """The watch stream broke (a connection cut, a timeout): routine once, a problem twice in a row."""


class DeploymentWatch:
    """Follows one Deployment's pause annotations. ``run()`` forever as a task."""

    def __init__(
        self,
        *,
        api: KubeApi,
        on_change: Callable[[Pause | None, Pause | None, bool], None] | None = None,
        on_missing: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``on_change(before, after, first)`` runs after every read that changed the pause
        state, and after the first read (``first``) whatever it found: ``None`` means not paused.
        ``on_missing()`` runs when the watch sees the Deployment deleted or a GET is answered 404."""
        self.namespace = api.namespace
        self.name = api.config.deployment
        self.pause: Pause | None = None
        """The pause in force (None: not paused, or not known yet: see ``known``)."""
        self.known = False
        """Whether the pause state was ever read (False before the first successful read; a failed
        read later leaves the last known state in force)."""
        self.read_error: str | None = None
        """Why the last GET failed; None once one succeeded."""
        self.first_look = asyncio.Event()
        """Set after the first GET, whatever its outcome: the daemon waits for it before deciding."""
        self._api = api
        self._on_change = on_change
        self._on_missing = on_missing
        self._rng = rng or random.Random()
        self._pace = Pace(api.config.retry_initial, api.config.retry_max, rng=self._rng)
        self._idle_turns = 0
        """Turns in a row that did not work (reset when a watch works)."""
        subject = Subject.deployment(self.namespace, self.name)
        self._problems = ProblemLog(
            log,
            failing="pause.read_failing",
            recovered="pause.read_recovered",
            message="cannot read the Deployment's pause annotations; the last known state stays in force",
        )
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        # No ProblemLog for the requests themselves: the loop logs, and a watch that opens has
        # not recovered yet (one answered 410 every time opens fine every time).
        self._deployments = api.resource(subject, path)
        self._deployment = self._deployments.item(self.name)

    async def run(self, *, _iterations: int | None = None) -> None:
        """One turn after another (see the module doc), forever (``_iterations``: test hook)."""
        version: str | None = None  # None: GET the Deployment before the next watch
        while _iterations is None or _iterations > 0:
            if _iterations is not None:
                _iterations -= 1
            self._pace.begin()
            try:
                if version is None:
                    version = await self._get()
                version = await self._watch(version)
            except Exception as exc:  # no answer may end the daemon
                ending, problem, level, routine = self._judge(exc)
                if ending is not Ending.UNAVAILABLE:
                    version = None  # no answer (a 503, a stream cut): the version is still good
            else:
                ending, problem, level = Ending.NORMAL, self._too_soon, "warning"
                routine = True
            delay = self._pace.delay(ending)
            if delay > 0:
                self._idle_turns += 1
                if routine and self._idle_turns <= _ROUTINE_TURNS:
                    log.debug("pause.watch_ended", message="reading the Deployment again", error=problem)
                else:
                    self._problems.failed(problem, key=_KEY, level=level)
                await asyncio.sleep(delay)

    @property
    def _too_soon(self) -> str:
        return (
            f"the watch of deployment '{self.name}' ended within {self._pace.steady:g}s of opening "
            "(is a proxy or load balancer cutting watches?)"
        )

    def _judge(self, exc: Exception) -> tuple[Ending, str, str, bool]:
        """How a turn that raised ``exc`` ended: (ending, problem, log level, routine)."""
        if isinstance(exc, _Gone):
            problem = f"the watch of deployment '{self.name}' answered 410 Gone (its resourceVersion is too old)"
            return Ending.UNUSABLE, problem, "warning", True
        if isinstance(exc, NotFound):  # deleted (a DELETED event) or not there (a GET answered 404)
            if self._on_missing is not None:
                self._on_missing()
            return Ending.UNUSABLE, str(exc), "error", False
        if isinstance(exc, _Broke):
            return Ending.UNAVAILABLE, str(exc), "warning", True
        if isinstance(exc, Unavailable):
            return Ending.UNAVAILABLE, str(exc), "warning", False
        if isinstance(exc, KubernetesError):
            return Ending.UNUSABLE, str(exc), "error" if isinstance(exc, Forbidden) else "warning", False
        problem = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return Ending.UNUSABLE, problem, "error", False

    def _working(self) -> None:
        """The watch stayed open ``Pace.steady`` seconds: the loop works again."""
        self._pace.progress()
        self._idle_turns = 0
        self._problems.recovered(key=_KEY)

    async def read_pause(self) -> Pause | None:
        """One GET, for a caller that reads once (``plan``): the pause the annotations ask for."""
        await self._get()
        return self.pause

    # -- the requests --------------------------------------------------------------------------

    async def _get(self) -> str:
        """GET the Deployment; returns its resourceVersion."""

        try:
            deployment = await self._deployment.get(_GET, answer=schema.DEPLOYMENT, limit=MAX_EVENT_BYTES)
        except KubernetesError as exc:
            self.read_error = str(exc)
            raise
        finally:
            self.first_look.set()
        self.read_error = None
        self._seen(deployment.metadata, first=not self.known)
        self.known = True
        return deployment.metadata.resourceVersion

    async def _watch(self, version: str) -> str:
        """One WATCH from ``version`` until the server ends it; returns the last resourceVersion."""
        seconds = round(_MIN_WATCH * (1 + self._rng.random()))
        timeout = self._api.config.request_timeout
        query = [
            ("fieldSelector", f"metadata.name={self.name}"),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(seconds)),
        ]
        response = await self._deployments.watch(_WATCH, query=query, request_timeout=(timeout, seconds + timeout))
        working = asyncio.get_running_loop().call_later(self._pace.steady, self._working)
        try:
            async with response:
                pending = bytearray()
                async for chunk in response.content.iter_any():
                    pending += chunk
                    while (end := pending.find(b"\n")) >= 0:
                        line = bytes(pending[:end])
                        del pending[: end + 1]
                        if line.strip():
                            version = self._event(line, version)
                    if len(pending) > MAX_EVENT_BYTES:
                        raise Malformed(f"malformed watch stream: an event above {MAX_EVENT_BYTES} bytes")
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            # A watch that breaks is normal (API server restarts, load balancers, a stream cut
            # mid-chunk: ClientPayloadError): read the Deployment again, after a backoff.
            raise _Broke(f"the watch of deployment '{self.name}' broke: {type(exc).__name__}") from exc
        finally:
            working.cancel()
        return version

    # -- what came back ------------------------------------------------------------------------

    def _event(self, line: bytes, version: str) -> str:
        try:
            event = schema.WATCH_EVENT.decode(line)
            if event.type == "ERROR":
                status = schema.lenient(schema.WatchStatus, event.object)
                if status.code == 410:
                    raise _Gone()
                raise KubernetesError(f"the watch of deployment '{self.name}' ended: {str(status.message)[:300]}")
            if event.type == "DELETED":
                raise NotFound(f"deployment '{self.name}' in namespace '{self.namespace}' was deleted", status=404)
            metadata = msgspec.convert(event.object, schema.Deployment).metadata
        except ValueError as exc:
            raise Malformed(f"malformed watch event: {schema.problem(exc)}") from None
        if event.type in {"ADDED", "MODIFIED"}:
            self._seen(metadata, first=False)
        return metadata.resourceVersion

    def _seen(self, metadata: schema.DeploymentMetadata, *, first: bool) -> None:
        pause = pause_of(metadata.annotations)
        if pause == self.pause and not first:
            return
        before, self.pause = self.pause, pause
        if self._on_change is not None:
            self._on_change(before, pause, first)
