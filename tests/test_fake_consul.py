"""The Consul fake follows Consul's documented HTTP semantics (the watch's tests rely on it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bolina_scaler.testing.consul import FakeConsul, Fault, parse_go_duration

HEALTH = "/v1/health/service/bolina"


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No total timeout: looptime tests park queries for (fake) minutes.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


async def get(
    http: aiohttp.ClientSession, consul: FakeConsul, path: str = HEALTH, **params: str
) -> tuple[int, Any, Any]:
    async with http.get(consul.url + path, params=params) as response:
        body = await response.read()
        data = await response.json() if response.content_type == "application/json" else body.decode()
        return response.status, response.headers, data


async def put(
    http: aiohttp.ClientSession, consul: FakeConsul, path: str, json: Any = None, **params: str
) -> tuple[int, str]:
    async with http.put(consul.url + path, json=json, params=params) as response:
        return response.status, await response.text()


class TestGoDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"), [("5m", 300.0), ("1m30s", 90.0), ("250ms", 0.25), ("0", 0.0), ("1h", 3600.0)]
    )
    def test_parses_units(self, text: str, seconds: float) -> None:
        """Go durations with units parse to seconds."""
        assert parse_go_duration(text) == seconds

    @pytest.mark.parametrize("text", ["1", "300", "5 m", "m", ""])
    def test_rejects_missing_units(self, text: str) -> None:
        """A number without a unit is not a Go duration."""
        with pytest.raises(ValueError, match="missing unit"):
            parse_go_duration(text)


class TestHealthService:
    async def test_answer_has_consul_shape(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """An entry has Node, Service and Checks, the node's serfHealth included with ServiceID ""."""
        consul.add_instance("bolina", instance_id="b1", port=7000, meta={"server_id": "s1"})
        status, headers, data = await get(http, consul)
        assert status == 200
        assert headers["Content-Type"].startswith("application/json")
        (entry,) = data
        assert set(entry["Node"]) >= {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta"}
        assert set(entry["Service"]) >= {"ID", "Service", "Tags", "Address", "Meta", "Port", "Weights"}
        assert entry["Service"]["Meta"] == {"server_id": "s1"}
        checks = {c["CheckID"]: c for c in entry["Checks"]}
        assert checks["serfHealth"]["ServiceID"] == ""
        assert checks["service:b1"]["ServiceID"] == "b1"
        assert checks["service:b1"]["Status"] == "passing"

    async def test_headers(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Index, known leader, last contact and effective consistency headers are sent."""
        consul.add_instance("bolina", instance_id="b1")
        _, headers, _ = await get(http, consul)
        assert int(headers["X-Consul-Index"]) == consul.service_index("bolina") >= 1
        assert headers["X-Consul-KnownLeader"] == "true"
        assert headers["X-Consul-LastContact"] == "0"
        assert headers["X-Consul-Effective-Consistency"] == "leader"

    async def test_unknown_service_is_empty_with_an_index(
        self, consul: FakeConsul, http: aiohttp.ClientSession
    ) -> None:
        """An unknown service answers [] with an index >= 1 (Consul never returns index 0)."""
        status, headers, data = await get(http, consul, "/v1/health/service/nope")
        assert (status, data) == (200, [])
        assert int(headers["X-Consul-Index"]) >= 1

    async def test_index_is_per_service(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A write to another service does not move this service's index."""
        consul.add_instance("bolina", instance_id="b1")
        before = consul.service_index("bolina")
        consul.add_instance("other", instance_id="o1")
        consul.set_status("o1", "critical")
        assert consul.service_index("bolina") == before < consul.index

    async def test_passing_filters_unhealthy(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """?passing drops instances with any non-passing check, node checks included."""
        consul.add_instance("bolina", instance_id="b1", node="n1")
        consul.add_instance("bolina", instance_id="b2", node="n2", status="warning")
        consul.add_instance("bolina", instance_id="b3", node="n3")
        consul.set_node_health("n3", "critical")
        _, _, data = await get(http, consul, passing="")
        assert [e["Service"]["ID"] for e in data] == ["b1"]

    async def test_filter_subset(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Simple bexpr clauses on Service/Node fields filter the answer."""
        consul.add_instance("bolina", instance_id="b1", tags=["blue"], meta={"zone": "a"})
        consul.add_instance("bolina", instance_id="b2", tags=["green"], meta={"zone": "b"})
        _, _, data = await get(http, consul, filter='Service.Meta.zone == "a"')
        assert [e["Service"]["ID"] for e in data] == ["b1"]
        _, _, data = await get(http, consul, filter='"green" in Service.Tags and Service.ID != "b1"')
        assert [e["Service"]["ID"] for e in data] == ["b2"]

    @pytest.mark.parametrize("expression", ["Checks.Status == passing", "Service.Port > 3", "Service.Nope == 1"])
    async def test_unsupported_filter_is_400(
        self, consul: FakeConsul, http: aiohttp.ClientSession, expression: str
    ) -> None:
        """A filter the fake cannot evaluate is rejected, never silently ignored."""
        status, _, _ = await get(http, consul, filter=expression)
        assert status == 400

    @pytest.mark.parametrize(
        "params", [{"stale": "", "consistent": ""}, {"cached": "", "consistent": ""}], ids=["stale", "cached"]
    )
    async def test_conflicting_consistency_is_400(
        self, consul: FakeConsul, http: aiohttp.ClientSession, params: dict[str, str]
    ) -> None:
        """?consistent cannot be combined with ?stale or ?cached."""
        status, _, _ = await get(http, consul, **params)
        assert status == 400

    async def test_unknown_datacenter_is_500(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """?dc of another datacenter fails like Consul: no path to it."""
        assert (await get(http, consul, dc="dc1"))[0] == 200
        status, _, text = await get(http, consul, dc="dc9")
        assert status == 500
        assert "No path to datacenter" in text

    async def test_no_leader(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Without a leader default reads fail; stale reads answer with KnownLeader false."""
        consul.known_leader = False
        consul.last_contact_ms = 12_000
        status, _, text = await get(http, consul)
        assert (status, text) == (500, "No cluster leader")
        status, headers, _ = await get(http, consul, stale="")
        assert status == 200
        assert headers["X-Consul-KnownLeader"] == "false"
        assert headers["X-Consul-LastContact"] == "12000"
        assert headers["X-Consul-Effective-Consistency"] == "stale"

    async def test_streaming_sends_unset_leader_headers(self, http: aiohttp.ClientSession) -> None:
        """Like Consul 1.14's streaming backend: blocking answers say KnownLeader false, LastContact 0."""
        async with FakeConsul(streaming=True) as consul:
            _, headers, _ = await get(http, consul)
            assert headers["X-Consul-KnownLeader"] == "true"
            assert headers["X-Consul-Query-Backend"] == "blocking-query"
            consul.touch("bolina")
            _, headers, _ = await get(http, consul, index="1", wait="1s")
            assert headers["X-Consul-Query-Backend"] == "streaming"
            assert headers["X-Consul-KnownLeader"] == "false"
            assert headers["X-Consul-LastContact"] == "0"


class TestBlocking:
    async def test_blocks_until_change(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A query at the current index parks and answers once the service changes."""
        consul.add_instance("bolina", instance_id="b1")
        index = consul.service_index("bolina")
        query = asyncio.create_task(get(http, consul, index=str(index), wait="5m"))
        await consul.wait_parked("bolina")
        assert not query.done()
        consul.set_status("b1", "critical")
        _, headers, data = await query
        assert int(headers["X-Consul-Index"]) > index
        assert data[0]["Checks"][1]["Status"] == "critical"

    @pytest.mark.looptime
    async def test_wait_elapses_with_same_index(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Without a change, the query answers after wait with the same index."""
        index = consul.service_index("bolina")
        loop = asyncio.get_running_loop()
        start = loop.time()
        _, headers, _ = await get(http, consul, index=str(index), wait="30s")
        assert int(headers["X-Consul-Index"]) == index
        assert loop.time() - start == pytest.approx(30, abs=0.1)

    @pytest.mark.looptime
    async def test_wait_capped_at_ten_minutes(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A wait above 10m is capped at 10m."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await get(http, consul, index=str(consul.service_index("bolina")), wait="1h")
        assert loop.time() - start == pytest.approx(600, abs=0.1)

    @pytest.mark.looptime
    async def test_jitter_at_most_a_sixteenth(self, http: aiohttp.ClientSession) -> None:
        """With jitter on, the wait grows by at most wait/16."""
        async with FakeConsul(jitter=True) as consul:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await get(http, consul, index=str(consul.service_index("bolina")), wait="160s")
            assert 160 - 0.1 <= loop.time() - start <= 170 + 0.1

    async def test_index_zero_never_blocks(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """index=0 answers at once, as does a query without index."""
        status, _, _ = await asyncio.wait_for(get(http, consul, index="0", wait="5m"), 5)
        assert status == 200
        assert consul.parked() == 0

    @pytest.mark.parametrize("params", [{"index": "1", "wait": "1"}, {"index": "x"}])
    async def test_bad_blocking_params_are_400(
        self, consul: FakeConsul, http: aiohttp.ClientSession, params: dict[str, str]
    ) -> None:
        """A wait without units ("wait=1") or a non-numeric index is a 400."""
        status, _, _ = await get(http, consul, **params)
        assert status == 400

    async def test_set_index_goes_backwards_and_wakes(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A snapshot restore wakes parked queries, which answer with the lower index."""
        consul.add_instance("bolina", instance_id="b1")
        index = consul.service_index("bolina")
        query = asyncio.create_task(get(http, consul, index=str(index), wait="5m"))
        await consul.wait_parked("bolina")
        consul.set_index(2)
        _, headers, _ = await query
        assert headers["X-Consul-Index"] == "2"

    async def test_stop_releases_parked_queries(self, http: aiohttp.ClientSession) -> None:
        """Stopping the fake answers parked queries instead of hanging."""
        consul = FakeConsul()
        await consul.start()
        query = asyncio.create_task(get(http, consul, index="1", wait="5m"))
        await consul.wait_parked()
        await asyncio.wait_for(consul.stop(), 5)
        status, _, _ = await asyncio.wait_for(query, 5)
        assert status == 200


class TestAgent:
    REGISTRATION: dict[str, Any] = {
        "Name": "bolina",
        "ID": "b1",
        "Port": 7000,
        "Address": "10.1.0.7",
        "Meta": {"udp_port": "7001"},
        "Check": {"TTL": "15s", "DeregisterCriticalServiceAfter": "1m"},
    }

    async def test_register_with_ttl_check_starts_critical(
        self, consul: FakeConsul, http: aiohttp.ClientSession
    ) -> None:
        """A registered TTL check without Status starts critical, as in Consul."""
        assert (await put(http, consul, "/v1/agent/service/register", self.REGISTRATION))[0] == 200
        assert consul.instances("bolina") == ["b1"]
        assert consul.check_status("service:b1") == "critical"
        _, _, data = await get(http, consul)
        assert data[0]["Service"]["Address"] == "10.1.0.7"

    async def test_check_update(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """PUT /check/update sets status and output and bumps the service's index."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        before = consul.service_index("bolina")
        body = {"Status": "warning", "Output": "near capacity"}
        assert (await put(http, consul, "/v1/agent/check/update/service:b1", body))[0] == 200
        assert consul.check_status("service:b1") == "warning"
        assert consul.service_index("bolina") > before

    async def test_check_update_rejects_bad_status(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """An unknown status is a 400; an unknown check a 404."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        status, _ = await put(http, consul, "/v1/agent/check/update/service:b1", {"Status": "fine"})
        assert status == 400
        status, _ = await put(http, consul, "/v1/agent/check/update/nope", {"Status": "passing"})
        assert status == 404

    @pytest.mark.parametrize(("verb", "expected"), [("pass", "passing"), ("warn", "warning"), ("fail", "critical")])
    async def test_pass_warn_fail(
        self, consul: FakeConsul, http: aiohttp.ClientSession, verb: str, expected: str
    ) -> None:
        """PUT /check/pass|warn|fail sets the status, the note becomes the output."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        await put(http, consul, "/v1/agent/check/update/service:b1", {"Status": "warning"})
        assert (await put(http, consul, f"/v1/agent/check/{verb}/service:b1", note="hi"))[0] == 200
        _, _, data = await get(http, consul)
        check = data[0]["Checks"][1]
        assert (check["Status"], check["Output"]) == (expected, "hi")

    @pytest.mark.looptime
    async def test_ttl_expiry_turns_critical(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Without an update within the TTL, the check turns critical (on the loop clock)."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        await put(http, consul, "/v1/agent/check/pass/service:b1")
        await asyncio.sleep(10)
        await put(http, consul, "/v1/agent/check/pass/service:b1")  # refreshes the TTL
        await asyncio.sleep(10)
        assert consul.check_status("service:b1") == "passing"
        await asyncio.sleep(6)
        assert consul.check_status("service:b1") == "critical"

    @pytest.mark.looptime
    async def test_deregister_critical_service_after(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A check critical for DeregisterCriticalServiceAfter gets its service reaped."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        await asyncio.sleep(59)
        assert consul.instances("bolina") == ["b1"]
        await asyncio.sleep(2)
        assert consul.instances("bolina") == []

    async def test_deregister(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Deregistering removes the instance and its checks; unknown IDs are a 404."""
        await put(http, consul, "/v1/agent/service/register", self.REGISTRATION)
        assert (await put(http, consul, "/v1/agent/service/deregister/b1"))[0] == 200
        assert (await get(http, consul))[2] == []
        assert (await put(http, consul, "/v1/agent/service/deregister/b1"))[0] == 404

    async def test_maintenance_checks(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Node and service maintenance appear as critical checks with the reserved IDs."""
        consul.add_instance("bolina", instance_id="b1", node="n1")
        consul.set_node_maintenance("n1", True, reason="kernel upgrade")
        consul.set_service_maintenance("b1", True)
        _, _, data = await get(http, consul)
        checks = {c["CheckID"]: c["Status"] for c in data[0]["Checks"]}
        assert checks["_node_maintenance"] == checks["_service_maintenance:b1"] == "critical"
        consul.set_node_maintenance("n1", False)
        _, _, data = await get(http, consul)
        assert "_node_maintenance" not in {c["CheckID"] for c in data[0]["Checks"]}


class TestAcl:
    @pytest.mark.parametrize(
        ("headers", "status"),
        [
            ({}, 403),
            ({"X-Consul-Token": "wrong"}, 403),
            ({"X-Consul-Token": "s3cret"}, 200),
            ({"Authorization": "Bearer s3cret"}, 200),
        ],
    )
    async def test_token_required(self, http: aiohttp.ClientSession, headers: dict[str, str], status: int) -> None:
        """With a token configured, requests need it (header or Bearer), else 403."""
        async with FakeConsul(token="s3cret") as consul, http.get(consul.url + HEALTH, headers=headers) as response:
            assert response.status == status
            if status == 403:
                assert await response.text() == "Permission denied"


class TestFaults:
    async def test_http_error_then_normal(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """An injected 500 answers the next request only."""
        consul.inject(Fault.http_error(500))
        assert (await get(http, consul))[0] == 500
        assert (await get(http, consul))[0] == 200

    async def test_fault_only_hits_its_path(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A fault waits for a request on its path prefix."""
        consul.inject(Fault.http_error(503))
        await put(http, consul, "/v1/agent/service/register", {"Name": "bolina"})
        assert (await get(http, consul))[0] == 503

    async def test_connection_reset(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A reset drops the connection (twice: aiohttp retries once on a reused connection)."""
        await get(http, consul)
        consul.inject(Fault.connection_reset(), times=2)
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(http, consul)

    async def test_malformed_json(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A malformed body comes with status 200 and the usual index header."""
        consul.inject(Fault.malformed_json())
        async with http.get(consul.url + HEALTH) as response:
            assert response.status == 200
            assert "X-Consul-Index" in response.headers
            with pytest.raises(ValueError):  # noqa: PT011
                await response.json()

    async def test_truncated_body(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A truncated body fails the client's read."""
        consul.add_instance("bolina", instance_id="b1")
        consul.inject(Fault.truncated_body())
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(http, consul)

    @pytest.mark.looptime
    async def test_slow_response(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """A slow fault delays the answer by its seconds of loop time."""
        consul.inject(Fault.slow(42))
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await get(http, consul))[0] == 200
        assert loop.time() - start == pytest.approx(42, abs=0.1)

    async def test_request_counts(self, consul: FakeConsul, http: aiohttp.ClientSession) -> None:
        """Requests are counted per endpoint and recorded with their headers."""
        await get(http, consul)
        await get(http, consul)
        await put(http, consul, "/v1/agent/service/register", {"Name": "bolina"})
        assert consul.request_counts["health.service"] == 2
        assert consul.request_counts["agent.service.register"] == 1
        assert consul.requests[-1].method == "PUT"
