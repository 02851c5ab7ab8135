"""The pacing arithmetic of the I/O loops: the watch's token bucket, the probe while a server fails,
and the pace of a loop's turns (``Pace``: at once after a turn that worked, else a growing backoff)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.config import parse_config
from bolina_scaler.core.pacing import STALL_BACKOFF_MAX, STEADY, Backoff, Ending, Pace, TokenBucket


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


class _Ceiling(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


_TURN = st.tuples(st.sampled_from(list(Ending)), st.booleans())
"""How one turn ended, and whether it made progress on the way (a watch open ``steady`` seconds)."""


class TestPace:
    @settings(max_examples=300)
    @given(st.floats(0.05, 5), st.floats(1, 10), st.lists(_TURN, max_size=60), st.integers(0, 2**32 - 1))
    def test_only_a_turn_that_worked_is_followed_at_once(self, initial, factor, turns, seed):
        """Whatever the answers, a turn waits 0 only after it worked and ended normally, and else at
        least ``initial`` and at most the larger cap: no path repeats faster than retry_initial."""
        pace = Pace(initial, initial * factor, rng=random.Random(seed))
        for ending, worked in turns:
            pace.begin()
            if worked:
                pace.progress()
            delay = pace.delay(ending)
            if worked and ending is Ending.NORMAL:
                assert delay == 0.0
            else:
                assert initial <= delay <= max(initial * factor, STALL_BACKOFF_MAX)
            if ending is Ending.UNAVAILABLE:
                assert delay <= initial * factor, "no answer: the outage probe, never longer"
            assert pace.failing == (delay > 0)

    @pytest.mark.parametrize("ending", [Ending.UNUSABLE, Ending.NORMAL])
    def test_useless_answers_back_off_like_client_go_s_reflector(self, ending):
        """410 after 410 (or a watch closed at once, again and again): 0.5 s, doubling to 30 s."""
        pace = Pace(0.5, 1.0, rng=_Ceiling())
        delays = []
        for _ in range(9):
            pace.begin()
            delays.append(pace.delay(ending))
        assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]

    def test_no_answer_keeps_the_outage_probe(self):
        """5xx after 5xx: retry_initial to retry_max, so the first good answer is seen within a second."""
        pace = Pace(0.5, 1.0, rng=_Ceiling())
        delays = []
        for _ in range(6):
            pace.begin()
            delays.append(pace.delay(Ending.UNAVAILABLE))
        assert delays == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]

    def test_progress_starts_the_backoff_over(self):
        """A watch that worked resets the backoff: the next useless turn waits ``initial`` again."""
        pace = Pace(0.5, 1.0, rng=_Ceiling())
        for _ in range(5):
            pace.begin()
            pace.delay(Ending.UNUSABLE)
        pace.begin()
        pace.progress()
        assert pace.delay(Ending.UNUSABLE) == 0.5, "worked, then a 410: one retry_initial"
        pace.begin()
        assert pace.delay(Ending.UNUSABLE) == 1.0
        pace.begin()
        pace.progress()
        assert pace.delay(Ending.NORMAL) == 0.0
        assert not pace.failing

    def test_steady_is_a_second_or_retry_initial(self):
        """Open a second (client-go's "very short watch" bound), or retry_initial if longer."""
        assert Pace(0.5, 1.0).steady == STEADY == 1.0
        assert Pace(3.0, 5.0).steady == 3.0
