"""No delay a server asks for is trusted without a cap (issue 20, #1), and the daemon is never silently stuck.

One ``503`` with ``Retry-After: 1e9`` on the scale PATCH (or ``inf``, ``3600``, an HTTP-date next
year, a ``429`` on the Lease PUT) used to close ``KubeApi``'s shared gate for that long: no request
of any part for the rest of the run, the Lease never renewed, every probe green. Now a wait is
at most ``kubernetes.retry_after_max`` (5 s shipped), then one request probes; and a change the
leader wants that stays unmade for ``http.readiness_max_stuck`` turns ``/readyz`` red.

Component tests run on looptime's fake clock against the Kubernetes fake (which sends the header
verbatim); ``parse_retry_after`` is tested with hypothesis over arbitrary text.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bolina_scaler.actuator.call import KubeApi, Unavailable
from bolina_scaler.actuator.errors import parse_retry_after
from bolina_scaler.actuator.scale import ScaleTarget
from bolina_scaler.config import KubernetesConfig, parse_config
from bolina_scaler.daemon.http_api import readiness_problems
from bolina_scaler.testing.consul import Fault
from bolina_scaler.testing.kubernetes import FakeKubernetes
from tests.harness import KUBE_NS, NS, World, logged, running, until

NOW = 1_800_000_000.0
"""A fixed Unix time for the HTTP-date cases."""
CAP = 5.0
"""kubernetes.retry_after_max as shipped."""

HOSTILE = ["1e9", "inf", "Infinity", "nan", "3600", "86400", "9" * 19, "-1", "garbage", " 1e400 "]
"""Values that once parked every request for their whole length, or that float() reads as it likes."""


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("1", 1.0),
            ("0", 0.0),
            (" 2 ", 2.0),
            ("0.25", 0.25),
            ("3600", 3600.0),
            ("1e9", None),
            ("inf", None),
            ("-inf", None),
            ("nan", None),
            ("-1", None),
            ("+1", None),
            ("", None),
            ("soon", None),
            ("9" * 21, None),
            ("0x10", None),
        ],
    )
    def test_delay_seconds(self, value: str, seconds: float | None) -> None:
        """RFC 9110's delay-seconds (fractions tolerated); never an exponent, a sign, inf or nan."""
        assert parse_retry_after(value, wall_now=NOW) == seconds

    def test_an_http_date_is_seconds_from_now(self) -> None:
        """An HTTP-date is read as the wait until it (0 once it is past)."""
        assert parse_retry_after(http_date(30), wall_now=NOW) == pytest.approx(30, abs=1)
        assert parse_retry_after(http_date(-30), wall_now=NOW) == 0.0
        year_9999 = "Fri, 31 Dec 9999 23:59:59 GMT"
        assert parse_retry_after(year_9999, wall_now=NOW) == pytest.approx(253402300799 - NOW)

    @given(st.text(max_size=60))
    def test_anything_is_none_or_a_finite_wait(self, value: str) -> None:
        """No text makes it raise, or return a negative, infinite or NaN wait."""
        seconds = parse_retry_after(value, wall_now=NOW)
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@pytest.fixture
def settings(kube: FakeKubernetes, tmp_path: Path) -> KubernetesConfig:
    return KubernetesConfig(kubeconfig=kube.kubeconfig(tmp_path / "kubeconfig", namespace=KUBE_NS), request_timeout=2.0)


@pytest.fixture
async def api(settings: KubernetesConfig) -> AsyncIterator[KubeApi]:
    kube_api = KubeApi(
        settings, environ={}, service_account_dir=Path("/nonexistent"), rng=random.Random(3), wall_clock=lambda: NOW
    )
    async with kube_api:
        yield kube_api


@pytest.mark.looptime
class TestTheGate:
    @pytest.mark.parametrize("value", [*HOSTILE, http_date(10 * 365 * 86400)])
    async def test_a_hostile_retry_after_closes_the_gate_for_at_most_the_cap(
        self, value: str, kube: FakeKubernetes, api: KubeApi
    ) -> None:
        """One 503 with a huge, infinite or unreadable Retry-After: the next request of any part
        goes out within retry_after_max (plus the probe's jitter), and gets its answer."""
        target = ScaleTarget(api, max_attempts=1)
        kube.inject_error(503, retry_after=value, method="GET", path_contains="/scale")
        loop = asyncio.get_running_loop()
        with pytest.raises(Unavailable) as caught:
            await target.read()
        answered = loop.time()
        assert caught.value.retry_after is None or caught.value.retry_after <= CAP
        assert "\n" not in str(caught.value)
        scale = await target.read()  # waits for its turn at the gate
        waited = loop.time() - answered
        assert scale.replicas == 3
        assert waited <= CAP + api.config.retry_max + 0.01
        assert kube.request_count() == 2, "one probe when the gate opens, not a burst"

    async def test_a_long_ask_says_it_waits_the_cap(self, kube: FakeKubernetes, api: KubeApi) -> None:
        """The message names what was asked and what is waited instead."""
        kube.inject_error(429, retry_after="86400", method="GET")
        with pytest.raises(Unavailable, match=r"asks to wait 86400s .* waiting kubernetes.retry_after_max \(5s\)"):
            await ScaleTarget(api, max_attempts=3).read()
        assert kube.request_count() == 1

    async def test_asks_within_the_cap_are_honoured(self, kube: FakeKubernetes, api: KubeApi) -> None:
        """A Retry-After of 3 s (within the cap) is still waited in full before the next request."""
        target = ScaleTarget(api, max_attempts=1)
        kube.inject_error(429, retry_after="3", method="GET")
        loop = asyncio.get_running_loop()
        with pytest.raises(Unavailable):
            await target.read()
        answered = loop.time()
        await target.read()
        assert 3.0 - 0.01 <= loop.time() - answered <= 3.0 + api.config.retry_max + 0.01

    async def test_repeated_long_asks_never_push_the_gate_beyond_the_cap(
        self, kube: FakeKubernetes, api: KubeApi
    ) -> None:
        """Every answer asks for a day: requests still go out at most retry_after_max apart."""
        target = ScaleTarget(api, max_attempts=1)
        kube.inject_error(503, retry_after="86400", count=6, method="GET")
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(7):
            with contextlib.suppress(Unavailable):
                await target.read()
            times.append(loop.time())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= CAP + api.config.retry_max + 0.01
        assert kube.request_count() == 7


class TestConfig:
    def test_the_cap_is_seconds_not_hours(self) -> None:
        with pytest.raises(ValueError, match="retry_after_max: at most 60s"):
            KubernetesConfig(retry_after_max=3600)

    def test_the_cap_stays_below_the_renew_deadline(self) -> None:
        """One answer must not cost the Lease: the cap must leave a renewal in time."""
        with pytest.raises(ValueError, match=r"kubernetes.retry_after_max: must stay below leader_election"):
            parse_config({"kubernetes": {"retry_after_max": "9s"}})
        parse_config({"kubernetes": {"retry_after_max": "9s"}, "leader_election": {"enabled": False}})

    def test_the_stuck_bound_exceeds_resync(self) -> None:
        with pytest.raises(ValueError, match=r"http\.readiness_max_stuck: must exceed kubernetes\.resync"):
            parse_config({"http": {"readiness_max_stuck": "20s"}})


def renew_times(world: World) -> str | None:
    lease = world.kube.lease(NS, "bolina-scaler")
    return None if lease is None else str(lease["spec"].get("renewTime"))


@pytest.mark.looptime
class TestTheDaemon:
    @pytest.mark.parametrize(
        ("status", "method", "path"),
        [(503, "PATCH", "/scale"), (429, "PUT", "/leases")],
        ids=["scale-patch-503", "lease-put-429"],
    )
    async def test_one_hostile_retry_after_delays_scaling_by_at_most_the_cap(
        self, world: World, status: int, method: str, path: str
    ) -> None:
        """Retry-After 10^9 s once, on the scale PATCH or on the Lease PUT, as 8 of 10
        servers turn Critical: the scale-up lands within the cap plus a few seconds, the Lease
        goes on being renewed, and the daemon stays leader and ready."""
        world.serving(10)
        config = world.config()
        loop = asyncio.get_running_loop()
        async with running(config) as daemon:
            await until(lambda: daemon.state.evaluations >= 1 and renew_times(world) is not None)
            world.kube.inject_error(status, retry_after="1000000000", method=method, path_contains=path)
            await asyncio.sleep(2.5)  # a Lease renewal (every 2 s) has met the fault, if it is on the Lease
            began = loop.time()
            world.set_statuses("critical", *range(2, 10))
            await until(lambda: world.replicas() > 10, within=30)
            took = loop.time() - began
            renewed = renew_times(world)
            await until(lambda: renew_times(world) != renewed, within=CAP + 3)
            assert daemon.state.role == "leader"
            assert readiness_problems(daemon.state, config, daemon.now()) == []
        assert took <= CAP + 3, f"scaled up {took:.1f}s after the change"
        assert world.kube.request_count(method=method, path_contains=path) >= 2

    async def test_a_change_that_cannot_be_made_turns_readyz_red_then_green(self, world: World) -> None:
        """Every scale PATCH answered 503 (the reads succeed): after http.readiness_max_stuck
        (60 s) /readyz names it, bolina_scaler_stuck_seconds counts, and both clear once a
        patch lands."""
        world.serving(4)
        config = world.config()
        loop = asyncio.get_running_loop()
        async with running(config) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            world.kube.inject_error(503, count=10_000, method="PATCH", path_contains="/scale")
            world.set_statuses("critical", 1, 2, 3)
            await until(lambda: daemon.state.unapplied_since is not None)
            wanted = daemon.state.unapplied_since
            assert wanted is not None
            assert readiness_problems(daemon.state, config, daemon.now()) == []
            await until(lambda: bool(readiness_problems(daemon.state, config, daemon.now())), within=90)
            problems = readiness_problems(daemon.state, config, daemon.now())
            assert loop.time() - wanted >= config.http.readiness_max_stuck
            assert any(p.startswith("stuck: a scale change it wants has not been made for") for p in problems)
            assert any("http.readiness_max_stuck" in p and "succeeded was" in p for p in problems)
            stuck = daemon.state.stuck_since()
            assert stuck is not None
            assert daemon.now() - stuck > 60
            world.kube.clear_faults()
            await until(lambda: world.replicas() == 6, within=30)
            await until(lambda: readiness_problems(daemon.state, config, daemon.now()) == [], within=5)
            assert daemon.state.stuck_since() is None

    async def test_a_follower_that_wants_a_change_is_not_stuck(self, world: World) -> None:
        """Another candidate holds the Lease: this replica wants 6 and says so, but making it is the
        leader's job, so /readyz stays green."""
        world.serving(4)
        far = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        world.kube.set_lease(
            NS,
            "bolina-scaler",
            {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600, "renewTime": far, "acquireTime": far},
        )
        config = world.config()
        with capture_logs() as logs:
            async with running(config) as daemon:
                world.set_statuses("critical", 1, 2, 3)
                await until(lambda: daemon.state.decision is not None and daemon.state.decision.desired == 6)
                await asyncio.sleep(config.http.readiness_max_stuck + 5)
                assert daemon.state.unapplied_since is None
                assert readiness_problems(daemon.state, config, daemon.now()) == []
        assert not logged(logs, "scale.patched")


@pytest.mark.looptime
class TestConsul:
    async def test_a_retry_after_from_consul_is_never_waited_for(self, world: World) -> None:
        """Consul (or a proxy in front of it) answers 429 with Retry-After: 3600, five times: the
        watch probes on its own backoff (consul.retry_initial to retry_max, 0.5-1 s) and trusts
        Consul again within seconds, not an hour. No server-given delay is honoured on this side."""
        world.serving(4)
        loop = asyncio.get_running_loop()
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            hour = Fault("status", status=429, body=b"rate limit exceeded", headers=(("Retry-After", "3600"),))
            world.consul.inject(hour, times=5)
            world.consul.touch("bolina")
            await until(lambda: daemon.state.snapshot is not None and not daemon.state.snapshot.trusted)
            began = loop.time()
            await until(lambda: daemon.state.snapshot is not None and daemon.state.snapshot.trusted, within=30)
            assert loop.time() - began <= 5 * 1.0 + 0.5
            world.set_statuses("critical", 1, 2, 3)
            await until(lambda: world.replicas() == 6, within=10)
