"""The pause switch: annotations on the Deployment that hold its scale while the daemon keeps explaining.

The rules (``core.pause``) are a plain table; the watch (``actuator.deployment``) and the daemon
run against the fake Kubernetes API, which serves the Deployment's watch as the real one does.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from bolina_scaler.core.decision import Direction, Reason
from bolina_scaler.core.pause import MAX_HELD_REPLICAS, PAUSED, PAUSED_REPLICAS, Pause, pause_of, paused_decision
from tests.harness import NS, World, logged, running, until
from tests.test_http import decision


class TestPauseOf:
    @pytest.mark.parametrize(
        ("annotations", "expected"),
        [
            (None, None),
            ({}, None),
            ({"other": "x"}, None),
            ({PAUSED: "true"}, Pause(f"{PAUSED}=true")),
            ({PAUSED: " TRUE "}, Pause(f"{PAUSED}=TRUE")),
            ({PAUSED: "false"}, None),
            ({PAUSED_REPLICAS: "3"}, Pause(f"{PAUSED_REPLICAS}=3", replicas=3)),
            ({PAUSED_REPLICAS: "0"}, Pause(f"{PAUSED_REPLICAS}=0", replicas=0)),
            ({PAUSED: "false", PAUSED_REPLICAS: "5"}, Pause(f"{PAUSED_REPLICAS}=5", replicas=5)),
            ({PAUSED: "true", PAUSED_REPLICAS: "5"}, Pause(f"{PAUSED_REPLICAS}=5", replicas=5)),
        ],
    )
    def test_table(self, annotations: dict[str, str] | None, expected: Pause | None):
        """What each combination of the two annotations means (paused-replicas wins, as in KEDA)."""
        assert pause_of(annotations) == expected

    @pytest.mark.parametrize("value", ["yes", "1", "", "paused"])
    def test_an_unreadable_paused_value_still_pauses(self, value: str):
        """A pause annotation that is not true/false pauses anyway, and says what was wrong."""
        pause = pause_of({PAUSED: value})
        assert pause is not None
        assert pause.replicas is None
        assert pause.problem is not None
        assert PAUSED in pause.problem

    @pytest.mark.parametrize("value", ["-1", "three", "²", "1e3", "2147483648", "9" * 5000, "3.0"])
    def test_an_unreadable_count_pauses_at_the_current_count(self, value: str):
        """A held count that is not a non-negative int32 in ASCII digits holds the current count."""
        pause = pause_of({PAUSED_REPLICAS: value})
        assert pause is not None
        assert pause.replicas is None
        assert pause.problem is not None
        assert len(pause.problem) < 200, "a long value is cut in the message"


class TestPausedDecision:
    def test_holds_and_explains_what_the_policy_wanted(self):
        """Paused without a count: desired = current, reason paused, the policy's view in the message."""
        wanted = decision(current=4, desired=6)
        held = paused_decision(wanted, Pause(f"{PAUSED}=true"), max_replicas=20)
        assert (held.desired, held.direction, held.reason) == (4, Direction.HOLD, Reason.PAUSED)
        assert not held.changes_scale
        assert "the policy would scale 4 → 6 (below_target" in held.message
        assert held.inputs == wanted.inputs

    @pytest.mark.parametrize(("held", "direction"), [(8, Direction.UP), (2, Direction.DOWN), (4, Direction.HOLD)])
    def test_goes_to_the_held_count(self, held: int, direction: Direction):
        """Paused with a count: desired = that count, whatever the policy wanted."""
        result = paused_decision(
            decision(current=4, desired=6), Pause(f"{PAUSED_REPLICAS}={held}", replicas=held), max_replicas=20
        )
        assert (result.desired, result.direction, result.reason) == (held, direction, Reason.PAUSED)
        assert result.clamps == ()

    @given(held=st.integers(0, MAX_HELD_REPLICAS), current=st.integers(0, 200), max_replicas=st.integers(1, 200))
    def test_the_held_count_never_exceeds_max_replicas(self, held: int, current: int, max_replicas: int):
        """Any held count: desired is min(held, max_replicas) (0 stays 0); a clamp says so when it bit."""
        result = paused_decision(
            decision(current=current, desired=current),
            Pause(f"{PAUSED_REPLICAS}={held}", replicas=held),
            max_replicas=max_replicas,
        )
        assert result.desired == min(held, max_replicas)
        assert bool(result.clamps) == (held > max_replicas)
        if held > max_replicas:
            assert str(result.clamps[0]) == (
                f"max_replicas: wanted {held} replicas, limited to {max_replicas} (the held count of {PAUSED_REPLICAS})"
            )
            assert f"asks for {held}, above max_replicas {max_replicas}" in result.message

    def test_zero_is_held_below_min_replicas(self):
        """paused-replicas=0 takes the fleet down on purpose: min_replicas does not apply."""
        result = paused_decision(
            decision(current=4, desired=4), Pause(f"{PAUSED_REPLICAS}=0", replicas=0), max_replicas=20
        )
        assert (result.desired, result.direction, result.clamps) == (0, Direction.DOWN, ())


class TestPausedDaemon:
    async def test_pausing_holds_while_watching_and_resuming_scales(self, world: World):
        """Annotated: the daemon keeps evaluating, decides paused, patches nothing, records one Event;
        the annotation removed: it resumes at once, scales, and records one Event."""
        world.serving(4)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1 and daemon.state.pause_known)
                world.kube.annotate(NS, "bolina", {PAUSED: "true"})
                await until(lambda: daemon.state.decision is not None and daemon.state.decision.reason == "paused")
                world.set_statuses("warning", 1, 2, 3)  # the policy would scale 4 → 6
                await until(
                    lambda: daemon.state.policy_decision is not None and daemon.state.policy_decision.desired == 6
                )
                assert daemon.state.decision.desired == 4
                assert world.replicas() == 4
                assert world.patch_count() == 0
                world.kube.annotate(NS, "bolina", {PAUSED: None})
                await until(lambda: world.replicas() == 6)
                await until(lambda: len(world.kube.events(NS)) >= 3)
        reasons = [e["reason"] for e in world.kube.events(NS)]
        assert reasons.count("ScalingPaused") == 1
        assert reasons.count("ScalingResumed") == 1
        assert reasons.index("ScalingPaused") < reasons.index("ScalingResumed") < reasons.index("SuccessfulRescale")
        paused_lines = [line for line in logged(logs, "decision.evaluated") if line["reason"] == "paused"]
        assert paused_lines
        assert any("the policy would scale 4 → 6" in line["why"] for line in paused_lines)
        assert len(logged(logs, "pause.paused")) == 1
        assert len(logged(logs, "pause.resumed")) == 1

    async def test_paused_replicas_scales_once_to_the_held_count(self, world: World):
        """paused-replicas=3: one patch to 3, then nothing, whatever Consul says."""
        world.serving(6)
        async with running(world.config()) as daemon:
            await until(lambda: daemon.state.pause_known)
            world.kube.annotate(NS, "bolina", {PAUSED_REPLICAS: "3"})
            await until(lambda: world.replicas() == 3)
            world.set_statuses("critical", 0, 1, 2, 3)  # 2 of 6 Available: the policy wants more
            await until(lambda: daemon.state.policy_decision is not None and daemon.state.policy_decision.desired > 3)
            assert world.replicas() == 3
        assert [(p.body["spec"]["replicas"], p.status) for p in world.kube.patches] == [(3, 200)]

    async def test_a_held_count_above_max_replicas_is_held_at_max_replicas(self, world: World):
        """paused-replicas=2147483647 with max_replicas 12: one patch to 12, the clamp in the log and
        in /v1/decision (was: spec.replicas patched to 2,147,483,647)."""
        world.serving(4)
        config = world.config()
        config = config.model_copy(
            update={"http": config.http.model_copy(update={"enabled": True, "port": 0, "host": "127.0.0.1"})}
        )
        limit = config.policy.max_replicas
        with capture_logs() as logs:
            async with running(config) as daemon:
                await until(lambda: daemon.http is not None and daemon.state.pause_known)
                world.kube.annotate(NS, "bolina", {PAUSED_REPLICAS: str(MAX_HELD_REPLICAS)})
                await until(lambda: world.replicas() == limit)
                assert daemon.http is not None
                async with aiohttp.ClientSession() as session, session.get(f"{daemon.http.url}/v1/decision") as answer:
                    body = await answer.json()
        assert [p.body["spec"]["replicas"] for p in world.kube.patches] == [limit]
        clamp = (
            f"max_replicas: wanted {MAX_HELD_REPLICAS} replicas, limited to {limit} "
            f"(the held count of {PAUSED_REPLICAS})"
        )
        assert body["decision"]["desired"] == limit
        assert body["decision"]["clamps"] == [
            {
                "name": "max_replicas",
                "before": MAX_HELD_REPLICAS,
                "after": limit,
                "detail": f"the held count of {PAUSED_REPLICAS}",
            }
        ]
        assert any(clamp in line["clamps"] for line in logged(logs, "decision.evaluated"))

    async def test_a_restart_never_scales_a_paused_deployment(self, world: World):
        """Already paused at start: the first evaluation is already paused (no cold-start patch)."""
        world.kube.annotate(NS, "bolina", {PAUSED: "true"})  # the Deployment is at 0
        world.register(0)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.evaluations >= 1)
                assert daemon.state.decision is not None
                assert daemon.state.decision.reason == "paused"
        assert world.patch_count() == 0
        assert logged(logs, "decision.evaluated")[0]["reason"] == "paused"
        assert not [e for e in world.kube.events(NS) if e["reason"] == "ScalingPaused"], (
            "a restart is not a new pause: no Event"
        )

    async def test_decision_and_metrics_say_paused(self, world: World):
        """/v1/decision says paused (with the annotation and the policy's own decision); /metrics has paused 1."""
        world.serving(4)
        world.kube.annotate(NS, "bolina", {PAUSED_REPLICAS: "4"})
        config = world.config().model_copy(update={"http": world.config().http.model_copy(update={"enabled": True,
                                           "port": 0, "host": "127.0.0.1"})})  # fmt: skip
        async with running(config) as daemon:
            await until(lambda: daemon.http is not None and daemon.state.evaluations >= 1)
            assert daemon.http is not None
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{daemon.http.url}/v1/decision") as answer:
                    body = await answer.json()
                async with session.get(f"{daemon.http.url}/metrics") as answer:
                    metrics = await answer.text()
        assert body["paused"] is True
        assert body["pause"]["annotation"] == f"{PAUSED_REPLICAS}=4"
        assert body["pause"]["held_replicas"] == 4
        assert body["summary"].startswith("paused at 4 (paused)")
        assert body["decision"]["reason"] == "paused"
        assert body["policy_decision"]["reason"] != "paused"
        assert "\nbolina_scaler_paused 1.0\n" in metrics

    async def test_without_rbac_for_the_deployment_it_scales_and_says_why(self, world: World):
        """403 on the Deployment: one error line, scaling goes on as if not paused, /v1/decision says unknown."""
        world.kube.deny("get", "deployments", name="bolina")
        world.register(0)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: world.replicas() == 2)
                assert daemon.state.pause_known is False
                assert daemon.state.pause_error is not None
                assert "forbidden" in daemon.state.pause_error
        errors = [line for line in logs if line["log_level"] == "error"]
        assert len(errors) == 1
        assert "get' on deployments" in errors[0]["error"]

    async def test_the_watch_is_one_name_only(self, world: World):
        """The daemon watches with fieldSelector metadata.name (the Role grants watch on that name)."""

        def watches() -> list[Any]:
            return [a for a in world.kube.arrivals if "/deployments" in a.path and a.query.get("watch") == "true"]

        async with running(world.config()):
            await until(lambda: bool(watches()))
        arrival = watches()[0]
        assert arrival.path == f"/apis/apps/v1/namespaces/{NS}/deployments"
        assert arrival.query["fieldSelector"] == "metadata.name=bolina"
        assert arrival.query["resourceVersion"]


class TestDeploymentWatch:
    async def test_a_watch_cut_mid_stream_is_resumed_and_never_ends_the_daemon(self, world: World):
        """A stream cut mid-chunk (the API server restarting) is read again; a pause set afterwards works."""
        world.register(0)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: world.replicas() == 2)

                def watches() -> int:
                    return sum(1 for a in world.kube.arrivals if a.query.get("watch") == "true")

                for cut in range(1, 4):
                    await until(lambda: watches() == cut)  # noqa: B023 (called at once)
                    assert world.kube.cut_watches() >= 1
                await until(lambda: watches() == 4)
                world.kube.annotate(NS, "bolina", {PAUSED: "true"})
                await until(lambda: daemon.state.pause is not None)
                assert daemon.watch is not None
        assert not [line for line in logs if line["log_level"] == "error"]
        assert len(logged(logs, "pause.paused")) == 1

    async def test_a_malformed_event_is_logged_once_and_read_again(self, world: World):
        """A watch line that is not a JSON event: one warning, then a fresh GET, then the pause works."""
        world.register(0)
        with capture_logs() as logs:
            async with running(world.config()) as daemon:
                await until(lambda: daemon.state.pause_known and bool(world.kube._watchers))
                for _, _, queue in world.kube._watchers:
                    queue.put_nowait({"type": "MODIFIED", "object": "not an object"})
                await until(lambda: bool(logged(logs, "pause.read_failing")))
                world.kube.annotate(NS, "bolina", {PAUSED_REPLICAS: "2"})
                await until(lambda: daemon.state.pause is not None and daemon.state.pause.replicas == 2)
        failing = logged(logs, "pause.read_failing")
        assert len(failing) == 1
        assert "malformed watch event" in failing[0]["error"]

    async def test_a_deleted_deployment_is_noticed_at_once_not_at_the_next_resync(self, world: World):
        """``kubectl delete deployment``: the watch's DELETED drops the cached scale, the re-read's 404
        holds and is said (state, one error line) with no Consul change and a resync an hour away;
        re-created, it is read again and scaled."""
        config = world.config()
        config = config.model_copy(update={"kubernetes": config.kubernetes.model_copy(update={"resync": 3600.0})})
        world.register(0)
        with capture_logs() as logs:
            async with running(config) as daemon:
                await until(lambda: world.replicas() == 2 and daemon.state.scale is not None)
                evaluations = daemon.state.evaluations
                world.kube.delete_deployment(NS, "bolina")
                await until(lambda: daemon.state.read_error is not None)
                assert "not found (HTTP 404)" in str(daemon.state.read_error)
                assert daemon.state.scale is None
                assert daemon.state.evaluations == evaluations  # the 404 stops it before any decision
                world.kube.add_deployment(NS, "bolina", replicas=0)
                await until(lambda: world.replicas() == 2 and daemon.state.read_error is None)
        failing = logged(logs, "kubernetes.failing")
        assert len(failing) == 1
        assert "404" in failing[0]["error"]
        assert logged(logs, "kubernetes.recovered")
