"""The Consul watch: parsing the health answer, and the blocking-query loop against FakeConsul."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bolina_scaler.config import ConsulConfig
from bolina_scaler.core.fleet import FleetSnapshot
from bolina_scaler.core.model import ConsulIndex, Status
from bolina_scaler.source import ConsulWatch, parse_health
from bolina_scaler.source.parse import parse_fast
from bolina_scaler.testing.consul import FakeConsul, Fault


class _Ceiling(random.Random):
    """Randomness that always picks the top of the range: backoff and jitter become exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


def entry(
    *,
    instance_id: str = "b1",
    service_address: str = "",
    node_address: str = "10.0.0.1",
    port: Any = 7000,
    meta: dict[str, Any] | None = None,
    node_meta: dict[str, str] | None = None,
    checks: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """One raw health entry in Consul's shape; ``checks`` as (CheckID, Status), node ones first."""
    checks = checks if checks is not None else [("serfHealth", "passing"), (f"service:{instance_id}", "passing")]
    return {
        "Node": {"ID": "x", "Node": "n1", "Address": node_address, "Datacenter": "dc1", "Meta": node_meta or {}},
        "Service": {
            "ID": instance_id,
            "Service": "bolina",
            "Tags": [],
            "Address": service_address,
            "Meta": meta or {},
            "Port": port,
        },
        "Checks": [
            {
                "CheckID": cid,
                "Status": status,
                "ServiceID": "" if cid in ("serfHealth", "_node_maintenance") else instance_id,
            }
            for cid, status in checks
        ],
    }


def parse(*entries: Any) -> tuple[Any, ...]:
    return parse_health(orjson.dumps(list(entries)))


class TestParseHealth:
    @pytest.mark.parametrize(
        ("checks", "expected"),
        [
            ([("serfHealth", "passing"), ("service:b1", "passing")], Status.AVAILABLE),
            ([("serfHealth", "passing"), ("service:b1", "warning")], Status.WARNING),
            ([("serfHealth", "passing"), ("service:b1", "critical")], Status.CRITICAL),
            ([("serfHealth", "critical"), ("service:b1", "passing")], Status.CRITICAL),
            ([("serfHealth", "warning"), ("service:b1", "passing")], Status.WARNING),
            ([("_node_maintenance", "critical"), ("service:b1", "passing")], Status.CRITICAL),
            ([("_service_maintenance:b1", "critical"), ("service:b1", "passing")], Status.CRITICAL),
            ([("service:b1", "passing"), ("service:b1:2", "maintenance")], Status.CRITICAL),
        ],
    )
    def test_status_is_worst_of_all_checks(self, checks: list[tuple[str, str]], expected: Status) -> None:
        """Node checks and maintenance count; the worst wins."""
        (server,), problems, _ = parse(entry(checks=checks))
        assert server.status is expected
        assert problems == ()

    @pytest.mark.parametrize("status", ["PASSING", "bogus", "", "ok"])
    def test_an_unknown_status_makes_the_entry_broken(self, status: str) -> None:
        """A status Consul does not have is not read as anything: the entry is broken (untrusted)."""
        servers, problems, _ = parse(entry(instance_id="good"), entry(checks=[("service:b1", status)]))
        assert [s.instance_id for s in servers] == ["good"]
        assert len(problems) == 1
        assert "not passing, warning or critical" in problems[0]

    @pytest.mark.parametrize("checks", [[], [("serfHealth", "passing")]], ids=["none", "node-only"])
    def test_no_check_of_its_own_is_not_capacity(self, checks: list[tuple[str, str]]) -> None:
        """No check of its own (its status unknown): Critical, never Available, and noted."""
        (server,), problems, notes = parse(entry(checks=checks))
        assert server.status is Status.CRITICAL
        assert problems == ()
        assert notes == ("b1: no health check of its own (its status is unknown): counted as Critical",)

    def test_servers_are_their_node_and_id(self) -> None:
        """The same Service.ID on two nodes is two servers; twice on one node is a broken answer."""
        on_two = [entry(), {**entry(), "Node": {**entry()["Node"], "Node": "n2"}}]
        servers, problems, _ = parse(*on_two)
        assert [s.key for s in servers] == [("n1", "b1"), ("n2", "b1")]
        assert problems == ()
        servers, problems, _ = parse(entry(), entry())
        assert len(servers) == 1
        assert problems == ("entry 1: b1: a second entry for node 'n1' (the first is entry 0)",)

    @pytest.mark.parametrize(
        ("service_address", "node_address", "expected"),
        [("10.9.9.9", "10.0.0.1", "10.9.9.9"), ("", "10.0.0.1", "10.0.0.1")],
    )
    def test_address_falls_back_to_node(self, service_address: str, node_address: str, expected: str) -> None:
        """Service.Address wins; empty, the node's address is used."""
        (server,), _, _ = parse(entry(service_address=service_address, node_address=node_address))
        assert server.address == expected

    def test_meta_convention(self) -> None:
        """server_id, udp_port, pod and load come from Service.Meta."""
        meta = {"server_id": "srv-7", "udp_port": "7001", "pod": "bolina-abc", "load": "0.25"}
        (server,), _, notes = parse(entry(meta=meta))
        assert (server.server_id, server.udp_port, server.pod, server.load) == ("srv-7", 7001, "bolina-abc", 0.25)
        assert (server.instance_id, server.tcp_port, server.node) == ("b1", 7000, "n1")
        assert notes == ()

    def test_meta_defaults(self) -> None:
        """Without meta: server id is Service.ID, pod from Node.Meta, no udp port, no load."""
        (server,), _, _ = parse(entry(node_meta={"pod": "bolina-node-pod"}))
        assert (server.server_id, server.udp_port, server.pod, server.load) == ("b1", None, "bolina-node-pod", None)

    @pytest.mark.parametrize(
        ("meta", "field"),
        [
            ({"udp_port": "seven"}, "udp_port"),
            ({"udp_port": "70000"}, "udp_port"),
            ({"load": "1.5"}, "load"),
            ({"load": "nan"}, "load"),
            ({"load": "heavy"}, "load"),
        ],
    )
    def test_bad_optional_meta_is_normalised(self, meta: dict[str, str], field: str) -> None:
        """A bad optional field becomes None with a note; the entry stays and stays trusted."""
        (server,), problems, notes = parse(entry(meta=meta))
        assert getattr(server, field) is None
        assert problems == ()
        assert len(notes) == 1
        assert field in notes[0]

    @pytest.mark.parametrize(
        "broken",
        [
            "not an object",
            {"Node": {}, "Checks": []},
            entry(port="7000"),
            entry(port=True),
            entry(instance_id=""),
            entry(node_address=""),
            {**entry(), "Checks": [{"CheckID": "x"}]},
            {**entry(), "Checks": "none"},
        ],
    )
    def test_broken_entry_is_skipped_and_reported(self, broken: Any) -> None:
        """A structurally broken entry is skipped as a problem; the others are kept."""
        servers, problems, _ = parse(entry(instance_id="good"), broken)
        assert [s.instance_id for s in servers] == ["good"]
        assert len(problems) == 1
        assert problems[0].startswith("entry 1:")

    @pytest.mark.parametrize("body", [b'[{"Node": ', b"", b'{"Node": {}}', b"null", b"\xff"])
    def test_unusable_body_raises(self, body: bytes) -> None:
        """A body that is not a JSON list raises ValueError."""
        with pytest.raises(ValueError):  # noqa: PT011
            parse_health(body)


# ------------------------------------------------------------------------------ the watch


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        fake.add_instance("bolina", instance_id="b1", node="n1", port=7000, meta={"udp_port": "7001"})
        fake.add_instance("bolina", instance_id="b2", node="n2", port=7000)
        yield fake


def config(consul: FakeConsul, **overrides: Any) -> ConsulConfig:
    values: dict[str, Any] = {"address": consul.url, "wait": "5m", "retry_initial": 1, "retry_max": 8}
    return ConsulConfig(**(values | overrides))


async def collect(watch: ConsulWatch, turns: int) -> list[FleetSnapshot]:
    return [snapshot async for snapshot in watch.snapshots(_iterations=turns)]


class TestConsulWatchFetch:
    async def test_first_answer(self, consul: FakeConsul) -> None:
        """A plain fetch gives a trusted snapshot of every instance at the service's index."""
        async with ConsulWatch(config(consul)) as watch:
            snapshot = await watch.fetch()
        assert snapshot.trusted
        assert snapshot.index == consul.service_index("bolina")
        assert sorted(s.instance_id for s in snapshot.servers) == ["b1", "b2"]
        assert watch.last_index == snapshot.index
        assert watch.queries == 1

    async def test_query_parameters(self, consul: FakeConsul) -> None:
        """Never passing=; consistency, dc and filter are sent; wait carries units."""
        cfg = config(consul, consistency="stale", datacenter="dc1", filter='Service.Meta.pod != "x"', wait=90)
        async with ConsulWatch(cfg) as watch:
            await watch.fetch(ConsulIndex(1))
        query = consul.requests[-1].query
        assert "passing" not in query
        assert query["wait"] == "90s"
        assert query["index"] == "1"
        assert "stale" in query
        assert (query["dc"], query["filter"]) == ("dc1", 'Service.Meta.pod != "x"')

    async def test_token_file_beats_env(
        self, consul: FakeConsul, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """consul.token_file is sent as X-Consul-Token even when CONSUL_HTTP_TOKEN is set."""
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        consul.token = "from-file"
        token_file = tmp_path / "token"
        token_file.write_text("from-file\n")
        async with ConsulWatch(config(consul, token_file=token_file)) as watch:
            snapshot = await watch.fetch()
        assert snapshot.trusted
        assert consul.requests[-1].headers["X-Consul-Token"] == "from-file"

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (b"\xff\xfe token", "not UTF-8"),
            (b"abc\ndef", "cannot carry"),
            (b"caf\xc3\xa9", "cannot carry"),
            (b"x" * 5000, "larger than 4096 bytes"),
        ],
        ids=["not-utf8", "newline", "not-ascii", "huge"],
    )
    async def test_an_unusable_token_file_is_a_failed_query(
        self, consul: FakeConsul, tmp_path: Path, content: bytes, problem: str
    ) -> None:
        """A token file rotated to something no header can carry: untrusted, the watch goes on."""
        token_file = tmp_path / "token"
        token_file.write_bytes(content)
        async with ConsulWatch(config(consul, token_file=token_file)) as watch:
            snapshot = await watch.fetch()
        assert problem in str(snapshot.trust)

    async def test_env_token_without_token_file(self, consul: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without token_file, CONSUL_HTTP_TOKEN is used."""
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        consul.token = "from-env"
        async with ConsulWatch(config(consul)) as watch:
            assert (await watch.fetch()).trusted

    async def test_acl_denied_is_untrusted(self, consul: FakeConsul, monkeypatch: pytest.MonkeyPatch) -> None:
        """A 403 gives an untrusted snapshot that names the ACL token."""
        monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
        consul.token = "s3cret"
        async with ConsulWatch(config(consul)) as watch:
            snapshot = await watch.fetch()
        assert not snapshot.trusted
        assert "ACL token" in str(snapshot.trust)
        assert watch.errors == 1

    @pytest.mark.parametrize(
        ("fault", "problem"),
        [
            (Fault.http_error(500), "HTTP 500"),
            (Fault.malformed_json(), "malformed"),
            (Fault.truncated_body(), "unreachable"),
            (Fault.response(200, b'{"Node": {}}', {"X-Consul-Index": "9"}), "malformed"),
            (Fault.response(200, b"[]", {"X-Consul-Index": "0"}), "below 1"),
            (Fault.response(200, b"[]", {"X-Consul-Index": "-3"}), "not an index"),
            (Fault.response(200, b"[]"), "no X-Consul-Index"),
        ],
        ids=["500", "malformed", "truncated", "shape", "index0", "negative", "noindex"],
    )
    async def test_unusable_answers_are_untrusted(self, consul: FakeConsul, fault: Fault, problem: str) -> None:
        """Errors, bad bodies and bad indexes give an untrusted snapshot, never an exception."""
        consul.inject(fault)
        async with ConsulWatch(config(consul)) as watch:
            snapshot = await watch.fetch()
        assert not snapshot.trusted
        assert problem in str(snapshot.trust)
        assert watch.last_error is not None

    async def test_connection_reset_is_untrusted(self, consul: FakeConsul) -> None:
        """A dropped connection gives an untrusted snapshot (aiohttp retried once already)."""
        async with ConsulWatch(config(consul)) as watch:
            await watch.fetch()
            consul.inject(Fault.connection_reset(), times=2)
            snapshot = await watch.fetch()
        assert "consul unreachable" in str(snapshot.trust)

    async def test_unreachable(self) -> None:
        """Nothing listening gives an untrusted 'consul unreachable' snapshot."""
        fake = FakeConsul()
        url = await fake.start()
        await fake.stop()
        async with ConsulWatch(ConsulConfig(address=url)) as watch:
            snapshot = await watch.fetch()
        assert str(snapshot.trust).startswith("consul unreachable: ")

    @pytest.mark.parametrize(
        ("consistency", "problem"),
        [("default", "No cluster leader"), ("stale", "knows no leader")],
    )
    async def test_no_known_leader_is_untrusted(self, consul: FakeConsul, consistency: str, problem: str) -> None:
        """No leader: default reads fail (500), stale reads carry KnownLeader false; both untrusted."""
        consul.known_leader = False
        async with ConsulWatch(config(consul, consistency=consistency)) as watch:
            snapshot = await watch.fetch()
        assert not snapshot.trusted
        assert problem in str(snapshot.trust)

    async def test_known_leader_not_required(self, consul: FakeConsul) -> None:
        """With require_known_leader off, a stale answer without a leader is trusted."""
        consul.known_leader = False
        async with ConsulWatch(config(consul, consistency="stale", require_known_leader=False)) as watch:
            assert (await watch.fetch()).trusted

    async def test_last_contact_too_old_is_untrusted(self, consul: FakeConsul) -> None:
        """X-Consul-LastContact above max_last_contact makes the answer untrusted, with its servers."""
        consul.last_contact_ms = 12_000
        async with ConsulWatch(config(consul, consistency="stale", max_last_contact=10)) as watch:
            snapshot = await watch.fetch()
        assert "12000 ms" in str(snapshot.trust)
        assert snapshot.registered == 2

    async def test_streaming_answers_are_trusted(self) -> None:
        """The streaming backend's KnownLeader false / LastContact 0 are unset defaults, not a problem."""
        async with FakeConsul(streaming=True) as consul:
            consul.add_instance("bolina", instance_id="b1")
            async with ConsulWatch(config(consul)) as watch:
                snapshot = await watch.fetch(ConsulIndex(1))
                assert snapshot.trusted
                async with aiohttp.ClientSession() as http:
                    url = f"{consul.url}/v1/health/service/bolina?index=1&wait=1s"
                    async with http.get(url) as response:
                        assert response.headers["X-Consul-Query-Backend"] == "streaming"
                        assert response.headers["X-Consul-KnownLeader"] == "false"

    async def test_broken_entry_untrusted_but_others_kept(self, consul: FakeConsul) -> None:
        """One broken entry: the rest are parsed, the snapshot is untrusted."""
        body = orjson.dumps([entry(instance_id="ok"), {"Node": "?"}])
        consul.inject(Fault.response(200, body, {"X-Consul-Index": "40"}))
        async with ConsulWatch(config(consul)) as watch:
            snapshot = await watch.fetch()
        assert [s.instance_id for s in snapshot.servers] == ["ok"]
        assert "1 malformed entries skipped" in str(snapshot.trust)

    def test_http_timeout_exceeds_wait_jitter(self) -> None:
        """A blocking query's HTTP timeout is above wait*17/16 (py-consul's 300 s default is not)."""
        cfg = ConsulConfig(address="http://127.0.0.1:8500", wait="10m")
        watch = ConsulWatch(cfg)
        assert watch.request_timeout(ConsulIndex(5)) > 600 * 17 / 16

    @pytest.mark.looptime
    async def test_survives_a_fully_jittered_five_minute_wait(self) -> None:
        """A 5 min wait answered with the full wait/16 jitter (318.75 s) still succeeds."""
        async with FakeConsul(jitter=True, rng=_Ceiling()) as consul:
            consul.add_instance("bolina", instance_id="b1")
            index = ConsulIndex(consul.service_index("bolina"))
            async with ConsulWatch(config(consul, wait="5m")) as watch:
                loop = asyncio.get_running_loop()
                start = loop.time()
                snapshot = await watch.fetch(index)
                elapsed = loop.time() - start
        assert snapshot.trusted
        assert elapsed == pytest.approx(318.75, abs=0.1)


class TestConsulWatchLoop:
    async def test_blocks_then_wakes_on_change(self, consul: FakeConsul) -> None:
        """The second query parks at the first index and yields when the service changes."""
        async with ConsulWatch(config(consul)) as watch:
            snapshots = watch.snapshots()
            first = await anext(snapshots)
            second_task = asyncio.ensure_future(anext(snapshots))
            await consul.wait_parked("bolina")
            consul.set_status("b2", "warning")
            second = await second_task
            await snapshots.aclose()
        assert first.trusted
        assert second.trusted
        assert second.index > first.index
        assert (first.warning, second.warning) == (0, 1)

    @pytest.mark.looptime
    async def test_quiet_wakeups_refresh_observed_at(self, consul: FakeConsul) -> None:
        """Wake-ups at the same index yield the same fleet with a fresh observed_at (never stale)."""
        async with ConsulWatch(config(consul, wait="5m")) as watch:
            snapshots = await collect(watch, 3)
            assert watch.queries == 3
        assert len({s.index for s in snapshots}) == 1
        assert snapshots[0].servers is snapshots[2].servers  # not re-parsed into new objects
        assert [round(s.observed_at) for s in snapshots] == [0, 300, 600]
        assert asyncio.get_running_loop().time() == pytest.approx(600, abs=1)

    async def test_index_backwards_resets_and_rereads(self, consul: FakeConsul) -> None:
        """An index lower than ours resets to 0, re-reads without blocking, and yields the new index."""
        async with ConsulWatch(config(consul, rate_per_second=100)) as watch:
            snapshots = watch.snapshots(_iterations=3)
            first = await anext(snapshots)
            second_task = asyncio.ensure_future(anext(snapshots))
            await consul.wait_parked("bolina")
            consul.set_index(3)
            second = await second_task
            await snapshots.aclose()
            assert watch.index_resets == 1
        assert first.index > 3
        assert (second.index, second.trusted, second.registered) == (3, True, 2)
        assert consul.requests[-1].query.get("index") is None

    @pytest.mark.looptime
    async def test_error_yields_one_untrusted_then_recovers_with_backoff(self, consul: FakeConsul) -> None:
        """Consecutive errors yield ONE untrusted snapshot keeping the servers, then a trusted one."""
        cfg = config(consul, rate_per_second=100, rate_burst=10, retry_initial=1)
        async with ConsulWatch(cfg, rng=_Ceiling()) as watch:
            task = asyncio.ensure_future(collect(watch, 5))
            await consul.wait_parked("bolina")
            consul.inject(Fault.http_error(500), times=2)
            consul.touch("bolina")  # wakes the parked query: same servers, new index
            snapshots = await task
            assert watch.errors == 2
        first, touched, failed, recovered = snapshots
        assert [s.trusted for s in snapshots] == [True, True, False, True]
        assert touched.index > first.index
        assert "HTTP 500" in str(failed.trust)
        assert failed.servers == touched.servers
        # Backoff (rng at the ceiling): 1 s after the first error, 2 s after the second.
        assert recovered.observed_at - failed.observed_at == pytest.approx(3, abs=0.01)

    @pytest.mark.looptime
    async def test_malformed_answers_never_crash_the_loop(self, consul: FakeConsul) -> None:
        """Malformed, truncated and wrongly-shaped answers are errors; the loop recovers."""
        consul.inject(Fault.malformed_json())
        consul.inject(Fault.truncated_body())
        consul.inject(Fault.response(200, b'{"not": "a list"}', {"X-Consul-Index": "99"}))
        async with ConsulWatch(config(consul, rate_per_second=100)) as watch:
            snapshots = await collect(watch, 4)
            assert watch.errors == 3
        assert [s.trusted for s in snapshots] == [False, True]
        assert snapshots[0].servers == ()
        assert snapshots[1].registered == 2

    @pytest.mark.looptime
    async def test_stale_answer_rereads_until_fresh(self, consul: FakeConsul) -> None:
        """An answer with an old LastContact is yielded untrusted once, re-read, then trusted."""
        consul.last_contact_ms = 30_000

        async def heal() -> None:
            await asyncio.sleep(5)
            consul.last_contact_ms = 10

        healer = asyncio.ensure_future(heal())
        cfg = config(consul, consistency="stale", rate_per_second=100, retry_initial=1, retry_max=2)
        async with ConsulWatch(cfg, rng=_Ceiling()) as watch:
            snapshots = await collect(watch, 6)
        await healer
        trust = [s.trusted for s in snapshots]
        assert [t for i, t in enumerate(trust) if i == 0 or t != trust[i - 1]] == [False, True]
        assert snapshots[0].registered == 2

    @pytest.mark.looptime
    async def test_rate_limited_under_churn(self, consul: FakeConsul) -> None:
        """A service changing every 50 ms is polled no faster than the token bucket allows."""

        async def churn() -> None:
            for n in range(600):  # 30 s of changes
                consul.set_status("b1", "warning" if n % 2 else "passing")
                await asyncio.sleep(0.05)

        churner = asyncio.ensure_future(churn())
        async with ConsulWatch(config(consul, rate_per_second=1, rate_burst=2)) as watch:
            task = asyncio.ensure_future(collect(watch, 1000))
            try:
                await churner
            finally:
                churner.cancel()
                task.cancel()
                await asyncio.gather(churner, task, return_exceptions=True)
        queries = consul.request_counts["health.service"]
        assert 25 <= queries <= 2 + 30 * 1 + 1


class TestLoadFromCheckOutput:
    @staticmethod
    def body(output: str, meta_load: str | None = "0.9", service_id: str = "b1") -> bytes:
        meta = {"server_id": "1", "udp_port": "9002"} | ({"load": meta_load} if meta_load is not None else {})
        entry = {
            "Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {"ID": "b1", "Service": "bolina", "Port": 9001, "Address": "", "Meta": meta},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing", "ServiceID": "", "Output": "Agent alive load=0.1"},
                {"CheckID": "service:b1", "Status": "passing", "ServiceID": service_id, "Output": output},
            ],
        }
        return orjson.dumps([entry])

    def test_output_load_wins_over_meta(self):
        """The reporter's fresh "load=" in the service check output beats the registration's Meta.load."""
        servers, problems, _ = parse_health(self.body("load=0.35 available: cpu=0.3"))
        assert problems == ()
        assert servers[0].load == pytest.approx(0.35)

    def test_meta_load_when_the_output_has_none(self):
        """Without a load token in the output, Service.Meta.load is used."""
        servers, _, _ = parse_health(self.body("available: cpu=0.3"))
        assert servers[0].load == pytest.approx(0.9)

    def test_node_checks_do_not_count(self):
        """A load token in a node check (serfHealth) is not the server's load."""
        servers, _, _ = parse_health(self.body("available", meta_load=None))
        assert servers[0].load is None

    def test_bad_output_load_is_ignored_and_noted(self):
        """A load token that is not a number in 0..1 is dropped with a note; the snapshot stays trusted."""
        servers, problems, notes = parse_health(self.body("load=lots", meta_load=None))
        assert problems == ()
        assert servers[0].load is None
        assert any("ignored load 'lots'" in note for note in notes)

    def test_checked_path_agrees(self):
        """The checked parser (taken for odd answers) reads the same load from the output as the fast one."""
        odd = self.body("load=0.35 available").replace(b'"server_id":"1"', b'"server_id":1')
        assert parse_fast(odd) is None  # a known Meta key that is not a string: the fast path steps aside
        servers, problems, _ = parse_health(odd)
        assert problems == ()
        assert servers[0].load == pytest.approx(0.35)
        assert servers[0].server_id == "b1"  # the checked path drops the non-string server_id
