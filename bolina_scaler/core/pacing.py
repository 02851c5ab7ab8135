"""How fast the I/O loops may go: a token bucket for the watch loop, jittered backoff for errors.

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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "TokenBucket"]


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
