"""How fast the I/O loops may go: a token bucket for the watch loop, jittered backoff for errors,
and the pace of a loop's turns (``Pace``).

Pure: both classes take the current time (and randomness) from their caller, so the watch can
use the event-loop clock and tests can use plain numbers.

Consul's blocking-query guide asks clients to rate-limit the loop so that a churning service
degrades to bounded polling instead of a hot loop, without sleeping in the happy path: a token
bucket does exactly that (with a burst large enough that ordinary churn never waits for a token).

Errors are probed, not hammered: the delay grows from ``initial`` to ``maximum`` and is never
below ``initial``, with jitter in the upper half of each step (so replicas do not probe in
lock-step). With the shipped 500 ms and 1 s, a failing server gets at most two requests a second,
and the first good answer after an outage of any length is seen within about a second
(``docs/performance.md``, "Defaults").

A loop is not only hammered by errors: a server that answers, but uselessly and at once (a
watch answered ``410 Gone`` again right after a relist, a watch closed before it delivers
anything, a blocking query that does not block, a line that is not JSON) turns a loop without
a sleep on that path into thousands of requests a second. ``Pace`` is the one rule every loop
follows (the Deployment watch, the Consul watch): a turn that *worked* is followed by the next
one at once; any other turn waits a growing, jittered backoff, never less than ``initial``. So no
path through a loop repeats faster than ``retry_initial`` while it is not working, whatever the
other end answers. What "worked" means is the loop's to say (``Pace.progress``): it is never
merely "an answer came": a watch that stayed open ``steady`` seconds, a blocking query that
parked that long or brought a newer index.

This follows client-go's reflector (``k8s.io/client-go/tools/cache/reflector.go``): ``Run`` is
``wait.BackoffUntil(ListAndWatch, NewExponentialBackoffManager(800ms, 30s, 2min, 2.0, 1.0))``,
so every relist after a watch that ended in an error, a ``410 Expired`` included, waits one
backoff step (800 ms to 30 s, jittered, back to 800 ms after two minutes without a backoff;
only a LIST itself answered 410 is retried at once, with ``resourceVersion=""``), and
``handleAnyWatch`` turns a watch that ends within a second without an event into an error
("very short watch"). Two departures: the first step is ``retry_initial`` (500 ms shipped), and
a turn without an answer (5xx, 429, a timeout) keeps the daemon's outage probe
(``retry_initial`` to ``retry_max``: the first good answer after an outage within about a
second) instead of growing to 30 s; answers of no use grow to ``STALL_BACKOFF_MAX``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final

__all__ = ["STALL_BACKOFF_MAX", "STEADY", "Backoff", "Ending", "Pace", "TokenBucket"]

STEADY: Final = 1.0
"""A watch or a blocking query that stays open this long (or ``retry_initial``, if longer) is
working: client-go's reflector calls a shorter one without an event a "very short watch"."""
STALL_BACKOFF_MAX: Final = 30.0
"""How far the backoff grows while answers are of no use: client-go's reflector's 30 s."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Starts full."""

    rate: float
    burst: int
    _tokens: float = field(init=False)
    _updated: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("TokenBucket needs rate > 0 and burst >= 1")
        self._tokens = float(self.burst)

    def delay(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0.0 in the happy path)."""
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


@dataclass(slots=True)
class Backoff:
    """Exponential backoff, never below ``initial``: attempt n waits
    uniform(max(initial, cₙ/2), cₙ) with cₙ = min(maximum, initial·2ⁿ)."""

    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self.rng.uniform(min(ceiling, max(self.initial, ceiling / 2)), ceiling)

    def reset(self) -> None:
        self.attempts = 0


class Ending(enum.Enum):
    """How a loop's turn ended."""

    NORMAL = "normal"
    """As the server ends a working one: a watch's ``timeoutSeconds``, a blocking query's wait
    (a turn that ended so without ``Pace.progress`` ended too soon: it waits, as UNUSABLE does)."""
    UNUSABLE = "unusable"
    """An answer of no use: 410 Gone, an ``ERROR`` event, a line or body that cannot be read, a
    refusal (4xx): the server is up, but the loop got nothing from it."""
    UNAVAILABLE = "unavailable"
    """No answer: 429, 5xx, a timeout, a connection refused or cut."""


@dataclass(slots=True)
class Pace:
    """When one loop takes its next turn: ``begin()`` each turn, ``progress()`` when the turn
    proves it works, ``delay(ending)`` at its end: how long to wait before the next one.

    After ``progress()`` (which resets both backoffs) a NORMAL end is followed at once; every
    other end waits: UNAVAILABLE the outage probe (``initial`` to ``maximum``), UNUSABLE (and a
    NORMAL end without progress) a backoff from ``initial`` to ``max(maximum, stall_maximum)``.
    Every wait is at least ``initial``, whatever the sequence of answers.
    """

    initial: float
    maximum: float
    stall_maximum: float = STALL_BACKOFF_MAX
    rng: random.Random = field(default_factory=random.Random)
    _probe: Backoff = field(init=False)
    _stalls: Backoff = field(init=False)
    _worked: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._probe = Backoff(self.initial, self.maximum, self.rng)
        self._stalls = Backoff(self.initial, max(self.maximum, self.stall_maximum), self.rng)

    @property
    def steady(self) -> float:
        """How long a watch or a blocking query must stay open to count as progress."""
        return max(STEADY, self.initial)

    @property
    def failing(self) -> bool:
        """Whether a turn has not worked since the last progress."""
        return bool(self._probe.attempts or self._stalls.attempts)

    def begin(self) -> None:
        self._worked = False

    def progress(self) -> None:
        """This turn works (a watch open ``steady`` seconds, a newer index): the backoffs start over."""
        self._worked = True
        self._probe.reset()
        self._stalls.reset()

    def delay(self, ending: Ending) -> float:
        """Seconds to wait before the next turn, given how this one ended."""
        if ending is Ending.NORMAL and self._worked:
            return 0.0
        if ending is Ending.UNAVAILABLE:
            return self._probe.next_delay()
        return self._stalls.next_delay()
