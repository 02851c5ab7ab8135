"""The HTTP API: health, readiness, metrics, the servers API, explain, and its OpenAPI description.

Handlers are tested around a ``DaemonState`` filled by hand (no daemon needed); the component
tests at the end run the real daemon with its server on a free port against the fakes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.actuator.scale import Scale
from bolina_scaler.config import Config, parse_config
from bolina_scaler.core.decision import Clamp, Decision, Direction, Inputs, Reason
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import ConsulIndex, InstanceId, Server, ServerId, Status
from bolina_scaler.core.outcome import Outcome
from bolina_scaler.core.role import Role
from bolina_scaler.daemon import servers_view
from bolina_scaler.daemon.http_api import build_app, summary
from bolina_scaler.metrics import Metrics
from tests.builders import StateByHand
from tests.harness import World, running, until

NOW = 1000.0


def server(n: int, status: Status, load: float | None = None, udp: int | None = 9002) -> Server:
    return Server(
        instance_id=InstanceId(f"bolina-{n}"),
        server_id=ServerId(str(1000 + n)),
        address=f"10.0.0.{n}",
        tcp_port=9001,
        udp_port=udp,
        node=f"node-{n}",
        pod=f"bolina-{n}",
        status=status,
        load=load,
    )


def fleet(*servers: Server, trusted: bool = True, observed_at: float = NOW - 2) -> FleetSnapshot:
    return FleetSnapshot.of(servers, index=42, observed_at=observed_at, problems=() if trusted else ["consul down"])


def decision(*, current: int = 4, desired: int = 6, clamps: tuple[Clamp, ...] = ()) -> Decision:
    inputs = Inputs(
        consul_index=ConsulIndex(42),
        trusted=True,
        trust_problems=(),
        snapshot_age=1.0,
        registered=4,
        available=1,
        warning=2,
        critical=1,
        pending=0,
        pending_expired=0,
        current_replicas=current,
        available_ratio=0.25,
    )
    direction = Direction.UP if desired > current else Direction.NONE
    return Decision(
        desired=desired,
        current=current,
        direction=direction,
        reason=Reason.BELOW_TARGET,
        message="share 1/4 is below target 0.5: 2 more server(s) needed",
        inputs=inputs,
        clamps=clamps,
    )


@pytest.fixture
def state() -> StateByHand:
    return StateByHand()


@pytest.fixture
async def client(state: StateByHand) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(state=lambda: state.state, config=parse_config({}), metrics=Metrics(), clock=lambda: NOW)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def get_json(client: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


class TestServers:
    async def test_seed_shape_best_first_and_critical_hidden(self, client: TestClient[Any, Any], state: StateByHand):
        """The seed's JSON shape; Available (least loaded first) before Warning; Critical left out."""
        state.snapshot = fleet(
            server(1, Status.WARNING, 0.9),
            server(2, Status.CRITICAL),
            server(3, Status.AVAILABLE, 0.6),
            server(4, Status.AVAILABLE, 0.1, udp=None),
        )
        body = await get_json(client, "/v1/servers")
        assert body == [
            {"Address": {"IP": "10.0.0.4", "Port": {"TCP": 9001, "UDP": None}},
             "Metadata": {"ServerID": "1004", "Status": "available"}},
            {"Address": {"IP": "10.0.0.3", "Port": {"TCP": 9001, "UDP": 9002}},
             "Metadata": {"ServerID": "1003", "Status": "available"}},
            {"Address": {"IP": "10.0.0.1", "Port": {"TCP": 9001, "UDP": 9002}},
             "Metadata": {"ServerID": "1001", "Status": "warning"}},
        ]  # fmt: skip

    async def test_all_includes_critical_last(self, client: TestClient[Any, Any], state: StateByHand):
        """?all=1 adds the Critical servers, after every other one."""
        state.snapshot = fleet(server(2, Status.CRITICAL), server(1, Status.AVAILABLE))
        body = await get_json(client, "/v1/servers?all=1")
        assert [s["Metadata"]["Status"] for s in body] == ["available", "critical"]

    async def test_status_filter(self, client: TestClient[Any, Any], state: StateByHand):
        """?status= returns exactly the named statuses, Critical included when named."""
        state.snapshot = fleet(server(1, Status.AVAILABLE), server(2, Status.WARNING), server(3, Status.CRITICAL))
        assert [s["Metadata"]["ServerID"] for s in await get_json(client, "/v1/servers?status=warning")] == ["1002"]
        body = await get_json(client, "/v1/servers?status=critical,available")
        assert [s["Metadata"]["ServerID"] for s in body] == ["1001", "1003"]

    async def test_unknown_status_is_400(self, client: TestClient[Any, Any], state: StateByHand):
        """A status that does not exist is a client error naming the valid ones."""
        state.snapshot = fleet(server(1, Status.AVAILABLE))
        body = await get_json(client, "/v1/servers?status=green", status=400)
        assert "available" in body["error"]

    async def test_answers_are_built_once_per_fleet_in_a_worker_thread(
        self, client: TestClient[Any, Any], state: StateByHand, monkeypatch: pytest.MonkeyPatch
    ):
        """The same fleet polled again gets the same bytes, encoded once, in the servers-api
        thread; a fleet that changed (a new servers tuple) is encoded anew."""
        built: list[str] = []
        encode = servers_view.encode_list

        def counting(servers: Any) -> bytes:
            built.append(threading.current_thread().name)
            return encode(servers)

        monkeypatch.setattr(servers_view, "encode_list", counting)
        state.snapshot = fleet(server(1, Status.AVAILABLE), server(2, Status.WARNING))
        answers = await asyncio.gather(*(client.get("/v1/servers") for _ in range(8)))
        bodies = {await answer.read() for answer in answers}
        assert len(bodies) == 1
        assert len(built) == 1
        assert built[0].startswith("servers-api")
        state.snapshot = dataclasses.replace(state.snapshot, observed_at=NOW)  # the watch's "no change"
        await get_json(client, "/v1/servers")
        assert len(built) == 1
        state.snapshot = fleet(server(1, Status.WARNING), server(2, Status.WARNING))
        assert [s["Metadata"]["Status"] for s in await get_json(client, "/v1/servers")] == ["warning", "warning"]
        assert len(built) == 2

    async def test_no_snapshot_yet_is_503(self, client: TestClient[Any, Any]):
        """Before the first Consul answer there is nothing to serve."""
        assert "snapshot" in (await get_json(client, "/v1/servers", status=503))["error"]

    async def test_headers_say_index_trust_and_age(self, client: TestClient[Any, Any], state: StateByHand):
        """The answer carries the Consul index, whether it is trusted, and its age."""
        state.snapshot = fleet(server(1, Status.AVAILABLE), trusted=False, observed_at=NOW - 5)
        response = await client.get("/v1/servers")
        assert response.headers["X-Consul-Index"] == "42"
        assert response.headers["X-Bolina-Trusted"] == "false"
        assert float(response.headers["X-Bolina-Snapshot-Age"]) == pytest.approx(5.0)
        assert response.headers["Cache-Control"] == "no-store"

    async def test_best_is_the_least_loaded_available(self, client: TestClient[Any, Any], state: StateByHand):
        """/v1/servers/best is the first Available server of the ranking."""
        state.snapshot = fleet(server(1, Status.WARNING, 0.1), server(2, Status.AVAILABLE, 0.7),
                               server(3, Status.AVAILABLE, 0.2))  # fmt: skip
        assert (await get_json(client, "/v1/servers/best"))["Metadata"]["ServerID"] == "1003"

    async def test_best_without_available_is_503(self, client: TestClient[Any, Any], state: StateByHand):
        """No Available server: 503, even when Warning ones exist."""
        state.snapshot = fleet(server(1, Status.WARNING), server(2, Status.CRITICAL))
        assert (await get_json(client, "/v1/servers/best", status=503))["error"] == "no Available server"


class TestHealth:
    async def test_healthz_follows_the_watch(self, client: TestClient[Any, Any], state: StateByHand):
        """Alive while the watch runs; 503 once it has ended."""
        assert (await client.get("/healthz")).status == 503
        state.watching = True
        assert await get_json(client, "/healthz") == {"status": "ok"}
        state.watching = False
        assert (await client.get("/healthz")).status == 503

    async def test_readyz_says_why_not(self, client: TestClient[Any, Any], state: StateByHand):
        """Not ready before a trusted snapshot and a scale read; the body lists both reasons."""
        body = await get_json(client, "/readyz", status=503)
        assert body["ready"] is False
        assert body["problems"] == [
            "no trusted Consul snapshot yet",
            "the Deployment's scale has not been read yet",
        ]

    async def test_readyz_ready_then_stale(self, client: TestClient[Any, Any], state: StateByHand):
        """Ready with a fresh trusted snapshot and a scale; not ready once it is older than the bound."""
        state.snapshot = fleet(server(1, Status.AVAILABLE))
        state.trusted_at = NOW - 10
        state.scale = Scale(replicas=1, status_replicas=1, resource_version="7", selector="app=bolina")
        state.scale_read_at = NOW - 1
        assert await get_json(client, "/readyz") == {"ready": True}
        state.trusted_at = NOW - 601  # default http.readiness_max_age is 10m
        state.snapshot = fleet(server(1, Status.AVAILABLE), trusted=False)
        problems = (await get_json(client, "/readyz", status=503))["problems"]
        assert problems[0] == "the last trusted Consul snapshot is 601s old (limit 600s)"
        assert "consul down" in problems[1]

    async def test_readyz_reports_a_failing_scale_read(self, client: TestClient[Any, Any], state: StateByHand):
        """A failing read of the scale makes the replica unready, with the error."""
        state.trusted_at = NOW
        state.read_error = "forbidden (HTTP 403): ..."
        problems = (await get_json(client, "/readyz", status=503))["problems"]
        assert problems == ["reading the Deployment's scale failed: forbidden (HTTP 403): ..."]


class TestDecision:
    async def test_explains_inputs_and_clamps(self, client: TestClient[Any, Any], state: StateByHand):
        """/v1/decision carries the summary, the inputs and every clamp."""
        assert (await client.get("/v1/decision")).status == 503
        state.decision, state.decided_at, state.outcome = decision(), NOW - 1, Outcome.PATCHED
        body = await get_json(client, "/v1/decision")
        assert body["summary"].startswith("scaled 4 → 6 (below_target)")
        assert body["role"] == "leader"
        assert body["decision"]["inputs"]["available"] == 1
        assert body["decision"]["clamps"] == []
        assert body["age_seconds"] == 1.0

    async def test_follower_says_would(self, client: TestClient[Any, Any], state: StateByHand):
        """A follower's decision reads "follower: would ..."."""
        state.decision, state.decided_at, state.outcome = decision(), NOW, Outcome.NOT_LEADER
        state.role = Role.FOLLOWER
        body = await get_json(client, "/v1/decision")
        assert body["summary"].startswith("follower: would scale 4 → 6 (below_target)")
        assert body["role"] == "follower"

    def test_summary_without_change(self):
        """A decision that changes nothing says so."""
        assert summary(decision(desired=4), outcome=Outcome.UNCHANGED, role=Role.LEADER).startswith("no change at 4")


class TestOpenApi:
    async def test_spec_describes_exactly_the_routes(self, client: TestClient[Any, Any]):
        """/openapi.yaml is valid YAML, OpenAPI 3.1, and lists exactly the app's GET routes."""
        response = await client.get("/openapi.yaml")
        spec = yaml.safe_load(await response.text())
        assert spec["openapi"].startswith("3.1")
        routes = {r.resource.canonical for r in client.app.router.routes() if r.method == "GET"}
        assert set(spec["paths"]) == routes

    async def test_server_example_matches_what_is_served(self, client: TestClient[Any, Any], state: StateByHand):
        """The schema's required keys are exactly the keys the API serves."""
        text = await (await client.get("/openapi.yaml")).text()
        schema = yaml.safe_load(text)["components"]["schemas"]["Server"]
        state.snapshot = fleet(server(1, Status.AVAILABLE))
        served = (await get_json(client, "/v1/servers"))[0]
        assert set(served) == set(schema["required"])
        assert set(served["Address"]) == set(schema["properties"]["Address"]["required"])
        assert set(served["Metadata"]) == set(schema["properties"]["Metadata"]["required"])


# -- the real daemon ---------------------------------------------------------------------------


def http_config(world: World, **overrides: Any) -> Config:
    config = world.config()
    http = config.http.model_copy(update={"enabled": True, "port": 0, "host": "127.0.0.1"})
    return config.model_copy(update={"http": http, **overrides})


async def fetch(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


@pytest.mark.looptime
class TestWithTheDaemon:
    async def test_endpoints_of_a_running_daemon(self, world: World):
        """A running daemon serves health, readiness, servers, its decision and metrics."""
        world.kube.scale_by_hand("bolina", "bolina", 4)
        for n in range(4):
            world.register(n, "passing" if n else "warning")
        async with running(http_config(world)) as daemon:
            await until(lambda: daemon.state.evaluations >= 1 and daemon.http is not None)
            assert daemon.http is not None
            base = daemon.http.url
            assert (await fetch(f"{base}/healthz"))[0] == 200
            assert await fetch(f"{base}/readyz") == (200, {"ready": True})
            status, servers = await fetch(f"{base}/v1/servers")
            assert status == 200
            assert [s["Metadata"]["Status"] for s in servers] == ["available"] * 3 + ["warning"]
            status, explain = await fetch(f"{base}/v1/decision")
            assert status == 200
            assert explain["role"] == "leader"
            status, text = await fetch(f"{base}/metrics")
            assert 'bolina_scaler_servers{status="warning"} 1.0' in text
            assert "bolina_scaler_leader 1.0" in text

    async def test_no_consul_query_per_request(self, world: World):
        """Serving /v1/servers many times causes no Consul request."""
        world.register(1)
        async with running(http_config(world)) as daemon:
            await until(lambda: daemon.state.snapshot is not None and daemon.http is not None)
            await world.consul.wait_parked("bolina")
            before = sum(world.consul.request_counts.values())
            assert daemon.http is not None
            for _ in range(20):
                assert (await fetch(f"{daemon.http.url}/v1/servers"))[0] == 200
            assert sum(world.consul.request_counts.values()) == before

    async def test_reaction_latency_is_exported(self, world: World):
        """After a scale-up caused by a Consul change, the reaction histogram has one observation."""
        world.kube.scale_by_hand("bolina", "bolina", 4)
        for n in range(4):
            world.register(n)
        async with running(http_config(world)) as daemon:
            await until(lambda: daemon.state.evaluations >= 1 and daemon.http is not None)
            world.set_statuses("warning", 1, 2, 3)
            await until(lambda: world.replicas() == 6)
            assert daemon.http is not None
            _, text = await fetch(f"{daemon.http.url}/metrics")
        assert "bolina_scaler_reaction_latency_seconds_count 1.0" in text
        assert 'bolina_scaler_patches_total{outcome="patched"} 1.0' in text


_servers = st.lists(
    st.builds(
        server,
        st.integers(1, 250),
        st.sampled_from(list(Status)),
        st.one_of(st.none(), st.floats(0, 1)),
        st.one_of(st.none(), st.integers(1, 65535)),
    ),
    max_size=40,
    unique_by=lambda s: s.instance_id,
)


class TestServersView:
    @settings(max_examples=200, deadline=None)
    @given(_servers, st.sets(st.sampled_from(list(Status)), min_size=1))
    def test_the_same_answer_as_the_seed_shape(self, servers: list[Server], wanted: set[Status]) -> None:
        """Encoded in slices, the listing is exactly the seed's JSON of the ranked fleet, filtered."""
        snapshot = FleetSnapshot.of(servers, index=1, observed_at=0.0)
        view = servers_view.ServersView(snapshot.servers)
        expected = [
            {
                "Address": {"IP": s.address, "Port": {"TCP": s.tcp_port, "UDP": s.udp_port}},
                "Metadata": {"ServerID": s.server_id, "Status": str(s.status)},
            }
            for s in snapshot.ranked()
            if s.status in wanted
        ]
        assert json.loads(view.listing(frozenset(wanted))) == expected
        best = next((e for e in expected if e["Metadata"]["Status"] == "available"), None)
        if Status.AVAILABLE in wanted:
            assert (json.loads(view.best()) if view.best() is not None else None) == best

    def test_a_large_fleet_is_encoded_in_slices(self) -> None:
        """More servers than one slice: still one valid JSON list, in rank order."""
        servers = [server(n % 250 + 1, Status.AVAILABLE, n / 2000) for n in range(1234)]
        servers = [msgspec.structs.replace(s, instance_id=f"b{n}", server_id=f"{n:05}") for n, s in enumerate(servers)]
        listing = json.loads(servers_view.ServersView(tuple(servers)).listing(frozenset(Status)))
        assert [entry["Metadata"]["ServerID"] for entry in listing] == [f"{n:05}" for n in range(1234)]
