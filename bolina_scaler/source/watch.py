"""Follow the Bolina service's health in Consul with blocking queries; yield a ``FleetSnapshot`` per answer.

Does I/O (through ``transport``). It asks for all statuses (never ``passing=true``: the policy
needs the Warning and Critical servers too). One turn per query; ``index`` starts at 0, which
never blocks::

        +---------------------+
   +--->| PACE: token bucket  |  burst/rate from config; sleeps only when the bucket is empty
   |    +---------------------+
   |               |
   |               v
   |    +---------------------+  index went backwards ---------> reset index to 0 -----------+
   |    | QUERY  GET health   |                                                               |
   |    |   ?index=&wait=     |                                                               |
   |    +---------------------+                                                               |
   |       |          |              |                                                        |
   |    error or   usable,        usable but stale                                            |
   |    unusable   current        (no leader / old LastContact)                               |
   |       |          |              |                                                        |
   |       v          v              v                                                        |
   |  +-----------+ +---------------------+ +-----------------+                               |
   |  | HOLD      | | YIELD trusted       | | YIELD untrusted |                               |
   |  | yield ONE | | changed: the new    | | (its servers),  |                               |
   |  | untrusted | |   fleet             | | reset index,    |                               |
   |  | (last     | | unchanged: the last | | backoff sleep   |                               |
   |  | known),   | |   fleet, fresh      | +-----------------+                               |
   |  | reset idx,| |   observed_at       |        |                                          |
   |  | backoff   | | keep index, reset   |        |                                          |
   |  +-----------+ | backoff             |        |                                          |
   |       |        +---------------------+        |                                          |
   |       |              |                        |                                          |
   +-------+--------------+------------------------+------------------------------------------+

Every turn is paced (``core.pacing.Pace``) as well as rate-limited: a blocking query that parks
``Pace.steady`` (1 s) or brings a newer index is the watch working, and the next query follows at
once; one answered sooner with the index it was given (a proxy that drops ``?index=``, an agent
whose queries do not block) or an older one is followed by a jittered backoff of
``consul.retry_initial`` to ``consul.retry_max``, as a failed query is: so no path through the
loop repeats faster than ``retry_initial`` while Consul does not work, the watch degrades to
polling about once a second, and ``consul.blocking_failing`` says so once (and
``consul.blocking_recovered`` once when a query blocks again). A failed query is logged once
(``consul.failing``, each distinct problem once), and its recovery once, when the watch works
again; a non-blocking read (the first, and every re-read after a failure) is never paced: it
never blocks by design.

An unchanged answer (a wait that ran out, a write that changed nothing the scaler reads) proves
the data is current: the last fleet is yielded again with a fresh ``observed_at``, so a quiet
fleet never looks stale to the policy. Whether an answer changed anything is decided once, by
``FleetSnapshot.differs_from``. ``answer`` says what makes an answer unusable or untrusted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncGenerator, Callable
from types import TracebackType

import structlog

from bolina_scaler.config import ConsulConfig
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import ConsulIndex
from bolina_scaler.core.pacing import Ending, Pace, TokenBucket
from bolina_scaler.logs import ProblemLog
from bolina_scaler.metrics import Metrics
from bolina_scaler.source import parse
from bolina_scaler.source.answer import Answer, Failure, read_answer
from bolina_scaler.source.memo import EntryMemo
from bolina_scaler.source.transport import HealthTransport

__all__ = ["ConsulWatch"]

log = structlog.get_logger("bolina_scaler.source")


class ConsulWatch:
    """A Consul blocking-query watch of one service: ``async with ConsulWatch(cfg) as w: ...``.

    Counters and last-seen values for health and metrics (read-only to callers):
    ``queries``, ``errors``, ``index_resets``, ``last_index``, ``last_error``, ``last_answer_at``
    (loop time of the last usable answer, even one that did not change anything: the daemon can
    tell "no change for 10 minutes" from "no answer for 10 minutes"), ``notes`` (normalisations
    made to the last answer).
    """

    def __init__(
        self,
        config: ConsulConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        # Useless answers are paced like failures, not up to 30 s: the watch then polls, and a
        # change must still be seen within about a second.
        self._pace = Pace(config.retry_initial, config.retry_max, config.retry_max, rng or random.Random())
        self._failing = ProblemLog(
            log,
            failing="consul.failing",
            recovered="consul.recovered",
            message="holding the last known fleet; not scaling on it",
        )
        self._blocking = ProblemLog(
            log,
            failing="consul.blocking_failing",
            recovered="consul.blocking_recovered",
            message="Consul answers blocking queries at once; reading it every consul.retry_initial to "
            "consul.retry_max instead, until a query blocks again",
        )
        self._bucket = TokenBucket(config.rate_per_second, config.rate_burst)
        self._transport = HealthTransport(config)
        self._last: FleetSnapshot | None = None
        self.queries = 0
        self.errors = 0
        self.index_resets = 0
        self.last_index: ConsulIndex | None = None
        self.last_error: str | None = None
        self.last_answer_at: float | None = None
        self.notes: tuple[str, ...] = ()
        self._last_parsed: tuple[bytes | bytearray, parse.Parsed] | None = None  # (the last body, its parse)
        self._memo = EntryMemo()

    async def __aenter__(self) -> ConsulWatch:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._transport.__aexit__(exc_type, exc, tb)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def request_timeout(self, index: ConsulIndex | None) -> float:
        """The HTTP timeout of one query: above wait × 17/16 when it blocks (Consul's jitter)."""
        return self._transport.request_timeout(index)

    async def fetch(self, index: ConsulIndex | None = None) -> FleetSnapshot:
        """One query (non-blocking without ``index``); never raises for Consul trouble.

        A failed query gives an empty, untrusted snapshot at index 0 whose trust says why.
        """
        try:
            answer = await self._query(index)
        except Failure as failure:
            return FleetSnapshot.of((), index=0, observed_at=self._now(), problems=[str(failure)])
        return answer.snapshot()

    async def snapshots(self, *, _iterations: int | None = None) -> AsyncGenerator[FleetSnapshot, None]:
        """Yield a snapshot per answer, forever (``_iterations``: stop after that many queries)."""
        index = ConsulIndex(0)
        failing = False
        turns = 0
        while _iterations is None or turns < _iterations:
            turns += 1
            delay = self._bucket.delay(self._now())
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                answer = await self._paced_query(index)
            except Failure as failure:
                index = ConsulIndex(0)
                self._failing.failed(str(failure))
                if not failing:
                    failing = True
                    known = self._last or FleetSnapshot.of((), index=0, observed_at=self._now())
                    yield self._emit(known.untrusted(str(failure), observed_at=self._now()))
                await asyncio.sleep(self._pace.delay(Ending.UNAVAILABLE))
                continue
            failing = False
            pause = self._pause_after(answer, index)
            if index and answer.index < index:
                # Snapshot restore, KV list deletes, upgrades: the index must restart from 0.
                self.index_resets += 1
                log.info(
                    "consul.index_reset",
                    message="the index went backwards; reading from 0",
                    was=index,
                    now=answer.index,
                )
                index = ConsulIndex(0)
                if pause > 0:
                    await asyncio.sleep(pause)
                continue
            snapshot = answer.snapshot()
            # A stale answer may be old: re-read (not block) after a backoff.
            index = ConsulIndex(0) if answer.stale else answer.index
            last = self._last
            if last is None or snapshot.differs_from(last):
                if self.notes:
                    log.warning(
                        "consul.entries_normalised",
                        message="some entries were read with a fallback (see first)",
                        count=len(self.notes),
                        first=self.notes[0],
                    )
                yield self._emit(snapshot)
            else:
                yield self._emit(dataclasses.replace(last, observed_at=snapshot.observed_at))
            if pause > 0:
                await asyncio.sleep(pause)

    async def _paced_query(self, index: ConsulIndex) -> Answer:
        """``_query``, as one turn of the ``Pace``: a blocking query that parks ``Pace.steady``
        seconds, or brings a newer index, is progress."""
        self._pace.begin()
        parked = asyncio.get_running_loop().call_later(self._pace.steady, self._working) if index else None
        try:
            answer = await self._query(index)
        finally:
            if parked is not None:
                parked.cancel()
        if index and answer.index > index:
            self._working()
        return answer

    def _pause_after(self, answer: Answer, asked: ConsulIndex) -> float:
        """How long to wait after a usable ``answer`` to a query at index ``asked``."""
        if answer.stale:
            return self._pace.delay(Ending.UNAVAILABLE)
        if not asked:
            return 0.0  # a non-blocking read answers at once by design
        pause = self._pace.delay(Ending.NORMAL)
        if pause > 0:
            older = "an older index" if answer.index < asked else "the index it was given"
            self._blocking.failed(
                f"a blocking query was answered within {self._pace.steady:g}s with {older} "
                "(does a proxy drop ?index=, or does the agent not block?)"
            )
        return pause

    def _working(self) -> None:
        """A blocking query parked, or brought a newer index: the watch works."""
        self._pace.progress()
        self._failing.recovered(index=self.last_index)
        self._blocking.recovered(index=self.last_index)

    def _emit(self, snapshot: FleetSnapshot) -> FleetSnapshot:
        self._last = snapshot
        return snapshot

    async def _query(self, index: ConsulIndex | None) -> Answer:
        """One GET; raise ``Failure`` (and count it) for anything that is not a usable answer."""
        self.queries += 1
        started = self._now()
        try:
            response = await self._transport.get(index)
            answer = read_answer(response, self._config, self._now(), self._parse)
        except Failure as failure:
            self.errors += 1
            self.last_error = str(failure)
            self._observe(started, index, failed=True)
            raise
        self._observe(started, index, failed=False)
        self.last_index = answer.index
        self.last_answer_at = answer.observed_at
        self.notes = answer.notes
        return answer

    def _observe(self, started: float, index: ConsulIndex | None, *, failed: bool) -> None:
        if self._metrics is not None:
            self._metrics.observe_consul_query(self._now() - started, blocking=bool(index), failed=failed)

    def _parse(self, body: bytes | bytearray) -> parse.Parsed:
        """``parse_health``, skipped when the body is byte for byte the last one parsed.

        A blocking query whose wait ran out answers the same bytes again: comparing them with
        the last body (a ``memcmp``) is far cheaper than splitting them. The last body costs no
        memory of its own: the memo's raw entries are views into it.
        """
        last = self._last_parsed
        if last is not None and last[0] == body:
            return last[1]
        parsed = parse.parse_health(body, self._memo)
        self._last_parsed = (body, parsed)
        return parsed
