"""How fast the I/O loops may go: a token bucket for the watch loop, jittered backoff for errors.

Pure: both classes take the current time (and randomness) from their caller, so the watch can
use the event-loop clock and tests can use plain numbers.

Consul's blocking-query guide asks clients to rate-limit the loop so that a churning service
degrades to bounded polling instead of a hot loop, without sleeping in the happy path: a token
bucket with a small burst does exactly that. Errors back off exponentially with full jitter so a
fleet of scalers does not hammer a recovering server in lock-step.
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
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(max, initial·2ⁿ))."""

    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        # Never below a tenth of the initial delay: zero would make a failing loop spin.
        return max(self.initial / 10, self.rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempts = 0
