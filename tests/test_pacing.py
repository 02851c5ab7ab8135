"""The pacing arithmetic of the I/O loops: the watch's token bucket and the probe while a server fails."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.config import parse_config
from bolina_scaler.core.pacing import Backoff, TokenBucket


class TestBackoff:
    @settings(max_examples=200)
    @given(
        st.floats(0.01, 5),
        st.floats(1, 20),
        st.integers(0, 2**32 - 1),
        st.integers(1, 60),
    )
    def test_never_below_initial_never_above_maximum(self, initial, factor, seed, attempts):
        """Every delay lies in [initial, maximum]: a failing server is never hammered, never forgotten."""
        maximum = initial * factor
        backoff = Backoff(initial, maximum, random.Random(seed))
        delays = [backoff.next_delay() for _ in range(attempts)]
        assert all(initial <= d <= maximum for d in delays), delays

    def test_grows_from_initial_to_maximum(self):
        """At the top of the jitter the steps double from ``initial`` until ``maximum``."""

        class Ceiling(random.Random):
            def uniform(self, a: float, b: float) -> float:
                return b

        backoff = Backoff(0.5, 4.0, Ceiling())
        assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
        backoff.reset()
        assert backoff.next_delay() == 0.5

    @pytest.mark.parametrize("section", ["consul", "kubernetes"])
    def test_shipped_probe_is_at_most_two_a_second_and_at_least_one(self, section):
        """With the shipped defaults, a failing server gets 1-2 requests a second, whatever the outage length."""
        config = getattr(parse_config({}), section)
        backoff = Backoff(config.retry_initial, config.retry_max, random.Random(3))
        delays = [backoff.next_delay() for _ in range(10_000)]
        assert min(delays) >= 0.5
        assert max(delays) <= 1.0


class TestTokenBucket:
    def test_a_burst_is_never_delayed(self):
        """Up to ``burst`` queries at once wait for nothing (the first query after a change never waits)."""
        bucket = TokenBucket(rate=10, burst=10)
        assert [bucket.delay(0.0) for _ in range(10)] == [0.0] * 10
        assert bucket.delay(0.0) == pytest.approx(0.1)

    def test_sustained_rate_is_bounded(self):
        """Asked for continuously, the bucket grants ``rate`` a second after its burst."""
        bucket = TokenBucket(rate=10, burst=10)
        now, granted = 0.0, 0
        while now < 60.0:
            now += bucket.delay(now)
            granted += 1
        assert granted <= 10 + 10 * 60 + 1

    def test_two_changes_a_second_never_wait_with_the_shipped_bucket(self):
        """The shipped bucket never delays a fleet that changes twice a second (two queries per change)."""
        consul = parse_config({}).consul
        bucket = TokenBucket(rate=consul.rate_per_second, burst=consul.rate_burst)
        waits = [bucket.delay(t / 4) for t in range(4 * 600)]  # 4 queries/s for 10 minutes
        assert max(waits) == 0.0
