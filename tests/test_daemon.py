"""The real daemon (watch → policy → patching) against the in-process Consul and Kubernetes fakes.

Every test runs on looptime's fake event-loop clock: stabilization windows, startup grace and
backoff pass in no real time, and waits are for conditions (a patch, a log line), never guesses.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from structlog.testing import capture_logs

from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.role import Role
from bolina_scaler.testing.consul import Fault
from tests.harness import NS, World, logged, running, until

pytestmark = pytest.mark.looptime


class TestColdStart:
    async def test_deployment_at_zero_goes_to_min_with_a_merge_patch(self, world: World):
        """A Deployment at 0 replicas is raised to min_replicas with a merge patch and a precondition."""
        with capture_logs() as logs:
            async with running(world.config()):
                await until(lambda: world.replicas() == 2)
        patch = world.kube.patches[0]
        assert patch.content_type == "application/merge-patch+json"
        assert patch.body["spec"] == {"replicas": 2}
        assert "resourceVersion" in patch.body["metadata"]
        first = logged(logs, "decision.evaluated")[0]
        assert (first["reason"], first["current"], first["desired"]) == ("cold_start", 0, 2)


class TestScaleUp:
    async def test_servers_turning_warning_and_critical_scale_up(self, world: World):
        """Three of four servers leaving Available (1/4 < 0.5) adds the two servers that restore the share."""
        world.serving(4)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            world.consul.set_status("bolina-1", "warning")
            world.consul.set_status("bolina-2", "warning")
            world.consul.set_status("bolina-3", "critical")
            await until(lambda: world.replicas() == 6)
            assert daemon.state.decision is not None
            assert daemon.state.decision.reason == "below_target"

    async def test_no_runaway_while_new_servers_start(self, world: World):
        """While requested servers have not registered, further bad news within the grace adds nothing."""
        world.kube.scale_by_hand(NS, "bolina", 4)
        for n in range(4):
            world.register(n, "passing" if n == 0 else "warning")
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: world.replicas() == 6)
                patches = world.patch_count()
                # Churn within the grace: the two new pods never register, statuses flap.
                for flip in range(5):
                    world.consul.set_status("bolina-1", "critical" if flip % 2 else "warning")
                    want = flip % 2
                    await until(
                        lambda w=want: daemon.state.snapshot is not None and daemon.state.snapshot.critical == w
                    )
                assert world.patch_count() == patches
                assert daemon.state.decision is not None
                assert daemon.state.decision.inputs.pending == 2
                # After startup_grace (30 s) the phantom replicas stop counting: scale up again.
                await until(lambda: world.replicas() > 6, within=40)
        expired = [e for e in logged(logs, "decision.evaluated") if e.get("pending_expired")]
        assert expired
        assert any("startup_grace" in note for note in expired[0]["notes"])


class TestScaleDown:
    async def test_scale_down_only_after_stabilization(self, world: World):
        """An all-Available fleet loses one server only once the 60 s window has passed, with no Consul change."""
        world.serving(5)
        loop = asyncio.get_running_loop()
        async with running(world.config()):
            start = loop.time()
            await until(lambda: world.replicas() == 4, within=120)
            assert loop.time() - start >= 60


class TestConsulTrouble:
    async def test_consul_down_holds_then_recovers(self, world: World):
        """While Consul errors, the daemon holds (one untrusted evaluation), then acts once it answers."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.consul.inject(Fault.http_error(500), times=6)
                world.consul.touch("bolina")  # the parked query answers; the next ones fail
                await until(lambda: any(e["reason"] == "untrusted_data" for e in logged(logs, "decision.evaluated")))
                world.set_statuses("critical", 1, 2, 3)
                assert world.replicas() == 4
                await until(lambda: world.replicas() == 6, within=120)
        held = next(e for e in logged(logs, "decision.evaluated") if e["reason"] == "untrusted_data")
        assert held["direction"] == "hold"
        assert any("500" in p for p in held["trust_problems"])

    async def test_index_reset_is_followed(self, world: World):
        """When Consul's index goes backwards (snapshot restore) the watch starts over and keeps scaling."""
        world.serving(4)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            before = daemon.state.snapshot
            assert before is not None
            world.consul.set_index(1)
            await until(lambda: daemon.watch.index_resets >= 1)
            world.set_statuses("warning", 1, 2, 3)
            await until(lambda: world.replicas() == 6)

    async def test_no_known_leader_holds(self, world: World):
        """An answer from a Consul that knows no leader is not acted on."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.consul.known_leader = False
                world.set_statuses("critical", 1, 2, 3)
                await until(lambda: any(e["reason"] == "untrusted_data" for e in logged(logs, "decision.evaluated")))
        assert world.replicas() == 4


class TestKubernetesTrouble:
    async def test_hand_scaling_is_respected(self, world: World):
        """A person scaling by hand: the stale patch gets 409, the daemon re-reads and starts from their value."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.kube.scale_by_hand(NS, "bolina", 8)
                world.set_statuses("warning", 1, 2, 3)
                await until(lambda: any(e.get("external_change_from") == 4 for e in logged(logs, "decision.evaluated")))
        # The four hand-added pods count as starting: 1+4 of 4+4 is above target, nothing to add.
        assert world.replicas() == 8
        stale = [p for p in world.kube.patches if p.body["spec"]["replicas"] == 6]
        assert stale, "the decision made on the old count (4 → 6) was sent"
        assert all(p.status == 409 for p in stale), "and refused by its resourceVersion precondition"

    async def test_forbidden_is_one_clear_line_and_watching_goes_on(self, world: World):
        """A 403 on patch logs one error line naming the problem; once RBAC is fixed, the scale happens."""
        world.serving(4)
        world.kube.deny("patch", "deployments/scale")
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                world.set_statuses("warning", 1, 2, 3)
                await until(lambda: daemon.state.outcome is Outcome.FAILED)
                world.consul.set_status("bolina-3", "critical")
                await until(lambda: daemon.state.evaluations >= 3, within=30)
                world.kube.allow_all()
                await until(lambda: world.replicas() == 6, within=60)
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1
        assert "forbidden" in errors[0]["error"].lower()

    async def test_a_failing_api_server_is_probed_not_hammered(self, world: World):
        """While the API server answers 503 to everything and a scale-up is pending, the whole daemon
        (scale, Lease, Events) sends one request at a time, 0.5-1 s apart; Consul changes add none."""
        world.serving(4)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.evaluations >= 1)
            failing_from = len(world.kube.arrivals)
            world.kube.inject_error(503, count=100_000)
            world.set_statuses("warning", 1, 2)
            for n in range(80):  # 20 s of Consul churn while Kubernetes fails: 4 → 6 is wanted throughout
                world.set_statuses("critical" if n % 2 else "warning", 3)
                await asyncio.sleep(0.25)
            arrivals = world.kube.arrivals[failing_from:]
        times = [a.at for a in arrivals]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 20, "probed all along"
        assert min(gaps[1:]) >= 0.5 - 1e-6, "never more than 2 requests a second"
        assert max(gaps) <= 1.0 + 0.1, "never blind for more than about a second"
        assert {a.path.rsplit("/", 1)[-1] for a in arrivals} >= {"scale", "bolina-scaler"}, "scale and Lease alike"

    async def test_a_failing_scale_is_reread_after_a_backoff(self, world: World):
        """Only the scale fails (the Lease works): Consul changes do not multiply the reads."""
        world.serving(4)
        world.kube.inject_error(503, count=100_000, path_contains="/scale")
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.read_error is not None)
            for n in range(80):
                world.set_statuses("warning" if n % 2 else "passing", 1)
                await asyncio.sleep(0.25)
        times = [a.at for a in world.kube.arrivals if a.path.endswith("/scale")]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 10
        assert min(gaps) >= 0.5 - 1e-6
        assert max(gaps) <= 2.0 + 0.1

    async def test_retry_after_is_honoured(self, world: World):
        """A 429 asking for 5 s (more than kubernetes.retry_max) is honoured before the next read."""
        world.serving(4)
        world.kube.inject_error(429, retry_after=5, path_contains="/scale")
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.scale is not None)
        times = [a.at for a in world.kube.arrivals if a.path.endswith("/scale")]
        assert times[1] - times[0] >= 5.0

    async def test_an_impossible_scale_read_holds_and_says_why(self, world: World):
        """spec.replicas 10^12 (or -5) is a malformed read: no decision, no patch, one line saying why;
        a sensible read afterwards is acted on."""
        world.serving(4)
        world.set_statuses("warning", 1, 2, 3)  # 1 of 4 Available: a trusted fleet that wants 6
        impossible = {"kind": "Scale", "metadata": {"resourceVersion": "1"}, "spec": {"replicas": 10**12}}
        world.kube.inject_response(
            {**impossible, "status": {"replicas": 4}}, count=3, method="GET", path_contains="/scale"
        )
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.read_error is not None)
                assert "which no API server allows" in daemon.state.read_error
                assert daemon.state.decision is None
                await until(lambda: world.replicas() == 6, within=60)
        failures = [e for e in logs if e["event"] == "kubernetes.failing"]
        assert len(failures) == 1
        assert all(p.body["spec"]["replicas"] == 6 for p in world.kube.patches)

    async def test_a_conflict_storm_backs_off(self, world: World):
        """Every patch answered 409 (someone else keeps writing the Deployment): rounds of retries
        spaced by a growing backoff, not 5 patches a second forever."""
        world.serving(4)
        world.set_statuses("warning", 1, 2, 3)  # 1 of 4 Available: the daemon wants 6
        world.kube.inject_error(409, count=1_000_000, method="PATCH", path_contains="/scale")
        loop = asyncio.get_running_loop()

        def patches() -> int:
            return world.kube.request_count(method="PATCH", path_contains="/scale")

        with capture_logs() as logs:
            async with running(world.config()):
                await until(lambda: patches() >= 5)
                await asyncio.sleep(150)
                before, since = patches(), loop.time()
                await asyncio.sleep(150)
                late = patches() - before
        rounds = [e["rounds"] for e in logged(logs, "scale.conflicts_exhausted")]
        assert rounds == list(range(1, len(rounds) + 1))  # one storm, round after round
        # The conflict backoff grows to 30 s: ~15 s per round on average, 5 patches each (was 1 s per round).
        assert late <= 200, f"{late} patches in {loop.time() - since:.0f} s of a conflict storm"
        assert world.replicas() == 4

    async def test_dry_run_never_patches(self, world: World):
        """With dry_run the patch it would send is logged and none is sent."""
        config = world.config().model_copy(update={"dry_run": True})
        with capture_logs() as logs:
            async with running(config):
                await until(lambda: bool(logged(logs, "scale.dry_run")))
        assert world.patch_count() == 0
        line = logged(logs, "scale.dry_run")[0]
        assert (line["before"], line["after"], line["reason"]) == (0, 2, "cold_start")
        assert line["would_patch"] == {"spec": {"replicas": 2}}

    async def test_dry_run_is_a_shadow_that_never_touches_the_lease(self, world: World):
        """A dry-run daemon never reads or writes the Lease, records no Event, and says it is a shadow."""
        world.serving(4)
        world.set_statuses("warning", 1, 2, 3)
        config = world.config().model_copy(update={"dry_run": True})
        with capture_logs() as logs:
            async with running(config) as daemon:
                await until(lambda: daemon.state.outcome == "dry_run")
                assert daemon.role is Role.SHADOW
                assert daemon.state.role is Role.SHADOW
        assert world.kube.request_count(path_contains="/leases") == 0
        assert world.kube.request_count(path_contains="/events") == 0
        assert world.kube.lease(NS, "bolina-scaler") is None
        assert world.patch_count() == 0
        assert {line["role"] for line in logged(logs, "decision.evaluated")} == {"shadow"}


class TestShutdown:
    async def test_stop_is_prompt_and_clean(self, world: World):
        """Setting stop ends the daemon quickly even while a blocking query is parked."""
        world.register(0)
        world.kube.scale_by_hand(NS, "bolina", 2)
        loop = asyncio.get_running_loop()
        async with running(world.config()) as daemon:
            await world.consul.wait_parked("bolina")
            await until(lambda: daemon.state.evaluations >= 1)
            stopped_at = loop.time()
        assert loop.time() - stopped_at < 1.0
