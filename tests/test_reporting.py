"""The ``report`` sidecar against the Consul fake (a real local HTTP server) and a metrics server."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bolina_scaler.cli import main
from bolina_scaler.core.model import Status
from bolina_scaler.reporter.agent import ConsulAgentError, check_status, registration
from bolina_scaler.reporter.availability import ClassifierConfig, Stage, Thresholds, classify
from bolina_scaler.reporter.metrics_reading import (
    MAX_DEPTH,
    MetricsError,
    parse_json_metrics,
    parse_metrics,
    parse_prometheus,
)
from bolina_scaler.reporter.reporter import Reporter
from bolina_scaler.reporter.settings import ReporterSettings
from bolina_scaler.source.parse import parse_checked
from bolina_scaler.testing.consul import FakeConsul

CLASSIFIER = ClassifierConfig(
    metrics={"cpu": Thresholds(warning=0.8, critical=0.95, warning_clear=0.7)},
    min_dwell=10.0,
)


class MetricsServer:
    """A Bolina server's metrics endpoint whose answer the test changes."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {"cpu": 0.1}
        self.format = "json"
        self.status = 200
        self.raw: web.Response | None = None
        """When set, the answer as it is (an HTML page, a huge body, gzip...)."""
        self.chunks: list[bytes] | None = None
        """When set, the answer is these chunks, chunked (no Content-Length)."""
        self.sent = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.raw is not None:
            return self.raw
        if self.chunks is not None:
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for chunk in self.chunks:
                    await response.write(chunk)
                    self.sent += len(chunk)
                await response.write_eof()
            return response
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        if self.format == "json":
            return web.json_response({"bolina": self.values} if "nested" in request.query else self.values)
        text = "".join(f"# TYPE {k} gauge\n{k} {v}\n" for k, v in self.values.items())
        return web.Response(text=text, content_type="text/plain")

    async def __aenter__(self) -> MetricsServer:
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/metrics"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class HostileAgent:
    """The three agent endpoints a reporter uses, over real HTTP, answering what the test queues.

    Without a queued answer it behaves: register adds the ID, deregister removes it, an update of
    a registered check is a 200 (404 otherwise). A queued answer is used once, by the next request
    to its endpoint (``register``, ``update``, ``deregister``); ``endless`` streams a body until the
    client hangs up (or ``ENDLESS_LIMIT`` bytes, so a client that reads it all ends the test).
    """

    ENDLESS_LIMIT = 256 * 1024 * 1024

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.sent = 0
        """Bytes of endless bodies written."""
        self.url = ""
        self._answers: dict[str, list[tuple[int, bytes | None, dict[str, str]]]] = {}
        self._runner: web.AppRunner | None = None

    def queue(
        self, endpoint: str, *, status: int = 500, body: bytes | None, headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``endpoint`` request with this (``body=None``: an endless chunked body)."""
        self._answers.setdefault(endpoint, []).append((status, body, headers or {}))

    async def _answer(self, request: web.Request, endpoint: str) -> web.StreamResponse | None:
        self.calls[endpoint] += 1
        queued = self._answers.get(endpoint)
        if not queued:
            return None
        status, body, headers = queued.pop(0)
        if body is not None:
            return web.Response(status=status, body=body, headers=headers)
        response = web.StreamResponse(status=status, headers={"Content-Type": "text/plain", **headers})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            while self.sent < self.ENDLESS_LIMIT:
                await response.write(chunk)
                self.sent += len(chunk)
            await response.write_eof()
        return response

    async def _register(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        answer = await self._answer(request, "register")
        if answer is None:
            self.registered.add(body["ID"])
        return answer or web.Response()

    async def _update(self, request: web.Request) -> web.StreamResponse:
        answer = await self._answer(request, "update")
        known = request.match_info["check_id"].removeprefix("service:") in self.registered
        return answer or (web.Response() if known else web.Response(status=404, text="Unknown check ID"))

    async def _deregister(self, request: web.Request) -> web.StreamResponse:
        answer = await self._answer(request, "deregister")
        if answer is None:
            self.registered.discard(request.match_info["service_id"])
        return answer or web.Response()

    async def __aenter__(self) -> HostileAgent:
        app = web.Application()
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/check/update/{check_id}", self._update)
        app.router.add_put("/v1/agent/service/deregister/{service_id}", self._deregister)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def agent() -> AsyncIterator[HostileAgent]:
    async with HostileAgent() as fake:
        yield fake


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        yield fake


@pytest.fixture
async def metrics() -> AsyncIterator[MetricsServer]:
    async with MetricsServer() as server:
        yield server


def settings_for(consul: FakeConsul | HostileAgent, metrics: MetricsServer, **overrides: Any) -> ReporterSettings:
    values: dict[str, Any] = {
        "consul_address": consul.url,
        "token": None,
        "instance_id": "bolina-7f9c-abcde",
        "server_id": "805390934",
        "address": "10.1.2.3",
        "tcp_port": 9001,
        "udp_port": 9002,
        "pod": "bolina-7f9c-abcde",
        "metrics_url": metrics.url,
        "interval": 5,
        "ttl": 30,
        "load_metric": "cpu",
        **overrides,
    }
    return ReporterSettings.model_validate(values)


async def health(consul: FakeConsul) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{consul.url}/v1/health/service/bolina") as response:
        data: list[dict[str, Any]] = await response.json()
        return data


class TestParsing:
    def test_prometheus(self):
        """Unlabelled samples by name, labelled ones by name{labels}; comments, timestamps and junk skipped."""
        text = (
            "# HELP cpu x\n# TYPE cpu gauge\ncpu 0.5\nloop_seconds 0.01 1700000000000\n"
            'rps{route="a", code="200"} 12\nbad line here\nnan_metric NaN\nbroken abc\n'
        )
        metrics = parse_prometheus(text)
        assert metrics["cpu"] == 0.5
        assert metrics["loop_seconds"] == 0.01
        assert metrics['rps{route="a",code="200"}'] == 12
        assert "broken" not in metrics
        assert "nan_metric" not in metrics  # NaN is no measurement: the metric is missing

    def test_json_flattens_and_keeps_numbers(self):
        """Nested objects flatten with dots; booleans and strings are not metrics."""
        assert parse_json_metrics({"cpu": 0.5, "loop": {"p99": 0.02}, "ok": True, "name": "x"}) == {
            "cpu": 0.5,
            "loop.p99": 0.02,
        }


class TestRegistration:
    def test_body_follows_the_convention(self, consul: FakeConsul, metrics: MetricsServer):
        """Name, ID, Address, Port, Meta(server_id, udp_port, pod, load) and a TTL check with the stage."""
        body = registration(settings_for(consul, metrics), status=Status.WARNING, load=0.8512)
        assert body["Name"] == "bolina"
        assert (body["ID"], body["Address"], body["Port"]) == ("bolina-7f9c-abcde", "10.1.2.3", 9001)
        assert body["Meta"] == {
            "server_id": "805390934",
            "udp_port": "9002",
            "pod": "bolina-7f9c-abcde",
            "load": "0.851",
        }
        check = body["Check"]
        assert check["TTL"] == "30s"
        assert check["Status"] == "warning"
        assert check["DeregisterCriticalServiceAfter"] == "60s"

    @pytest.mark.parametrize(
        ("status", "check"), [(Status.AVAILABLE, "passing"), (Status.WARNING, "warning"), (Status.CRITICAL, "critical")]
    )
    def test_status_mapping(self, status, check):
        assert check_status(status) == check

    def test_settings_validation(self, consul: FakeConsul, metrics: MetricsServer):
        """Consul refuses DeregisterCriticalServiceAfter under 1m; the heartbeat must beat the TTL."""
        with pytest.raises(ValueError, match="minimum is 1m"):
            settings_for(consul, metrics, deregister_critical_after=30)
        with pytest.raises(ValueError, match="heartbeat"):
            settings_for(consul, metrics, heartbeat=40)
        assert settings_for(consul, metrics).heartbeat_every == 15


class TestReporter:
    async def test_registers_what_the_scaler_reads(self, consul: FakeConsul, metrics: MetricsServer):
        """After register(), Consul's health endpoint shows the server under the convention, passing."""
        async with Reporter(settings_for(consul, metrics), CLASSIFIER) as reporter:
            await reporter.register()
            (entry,) = await health(consul)
            service = entry["Service"]
            assert (service["ID"], service["Address"], service["Port"]) == ("bolina-7f9c-abcde", "10.1.2.3", 9001)
            assert service["Meta"]["server_id"] == "805390934"
            assert service["Meta"]["udp_port"] == "9002"
            assert service["Meta"]["load"] == "0.100"
            (check,) = [c for c in entry["Checks"] if c["ServiceID"] == "bolina-7f9c-abcde"]
            assert check["Status"] == "passing"
            assert "cpu=0.1" in check["Output"]
            await reporter.deregister()

    async def test_updates_on_stage_change_only(self, consul: FakeConsul, metrics: MetricsServer):
        """A stage change updates the check at once; an unchanged stage waits for the heartbeat."""
        clock = [0.0]
        settings = settings_for(consul, metrics, metrics_format="prometheus")
        metrics.format = "prometheus"
        async with Reporter(settings, CLASSIFIER, clock=lambda: clock[0]) as reporter:
            await reporter.register()
            clock[0] = 5.0
            assert await reporter.report_once() is False
            metrics.values["cpu"] = 0.85
            clock[0] = 10.0
            assert await reporter.report_once() is True
            assert consul.check_status(settings.check_id) == "warning"
            metrics.values["cpu"] = 0.99
            clock[0] = 11.0
            assert await reporter.report_once() is True
            assert consul.check_status(settings.check_id) == "critical"
            assert consul.request_counts["agent.check.update"] == 1 + 2  # output after registering, two changes
            await reporter.deregister()

    async def test_unreadable_metrics_report_critical(self, consul: FakeConsul, metrics: MetricsServer):
        """A server whose metrics cannot be read is reported Critical, saying why."""
        settings = settings_for(consul, metrics)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            metrics.status = 503
            await reporter.report_once()
            assert consul.check_status(settings.check_id) == "critical"
            (entry,) = await health(consul)
            output = next(c["Output"] for c in entry["Checks"] if c["ServiceID"])
            assert "metrics unreadable" in output
            await reporter.deregister()

    async def test_registers_again_when_the_agent_forgot(self, consul: FakeConsul, metrics: MetricsServer):
        """If the agent lost the registration (404 on update), the reporter registers again."""
        clock = [0.0]
        settings = settings_for(consul, metrics)
        async with Reporter(settings, CLASSIFIER, clock=lambda: clock[0]) as reporter:
            await reporter.register()
            consul.remove_instance(settings.instance_id)
            clock[0] = 20.0  # heartbeat due
            await reporter.report_once()
            assert consul.instances("bolina") == [settings.instance_id]
            await reporter.deregister()

    @pytest.mark.looptime
    async def test_heartbeats_keep_the_ttl_check_alive_and_stop_deregisters(
        self, consul: FakeConsul, metrics: MetricsServer
    ):
        """Over an hour of (fake) time the check never expires; stop deregisters the server."""
        settings = settings_for(consul, metrics, interval=5, ttl=30)
        stop = asyncio.Event()
        seen: list[str] = []
        async with Reporter(settings, CLASSIFIER) as reporter:
            task = asyncio.create_task(reporter.run(stop), name="reporter")
            for _ in range(360):
                await asyncio.sleep(10)
                seen.append(consul.check_status(settings.check_id))
            assert set(seen) == {"passing"}
            updates = consul.request_counts["agent.check.update"]
            assert 3600 / 15 - 2 <= updates <= 3600 / 15 + 3  # one heartbeat per ttl/2, no more
            stop.set()
            await task
        assert consul.instances("bolina") == []
        assert consul.request_counts["agent.service.deregister"] == 1

    @pytest.mark.looptime
    async def test_silent_reporter_expires_to_critical(self, consul: FakeConsul, metrics: MetricsServer):
        """Without heartbeats Consul turns the TTL check critical: what the heartbeat protects against."""
        settings = settings_for(consul, metrics, ttl=30)
        async with Reporter(settings, CLASSIFIER) as reporter:
            await reporter.register()
            await asyncio.sleep(31)
            assert consul.check_status(settings.check_id) == "critical"
            await reporter.deregister()


class TestUnreadableMetrics:
    """Issue 13, #5 and #10: whatever the metrics endpoint answers, a server that cannot show it is
    healthy is never reported Available, and no answer ends or exhausts the reporter."""

    @pytest.mark.parametrize(
        ("body", "content_type"),
        [
            (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
            (b"", "text/plain"),
            (b"cpu NaN\n", "text/plain"),
            (b"cpu -Inf\n", "text/plain"),
            (b'{"cpu": "0.1"}', "application/json"),
            (b'{"cpu": null}', "application/json"),
            (b"cpu_renamed 0.1\n", "text/plain"),
            (b"# only comments\n" * 1000, "text/plain"),
            (b"[0.1]", "application/json"),
            (b'{"a":' * 1000 + b"1" + b"}" * 1000, "application/json"),
        ],
    )
    async def test_critical_not_available(self, consul: FakeConsul, metrics: MetricsServer, body, content_type):
        """HTML, empty, NaN/-Inf, strings, renamed metrics, comments only, not an object, nested 1,000 deep."""
        settings = settings_for(consul, metrics, load_metric=None)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            assert consul.check_status(settings.check_id) == "passing"
            metrics.raw = web.Response(body=body, content_type=content_type)
            await reporter.report_once()
            assert consul.check_status(settings.check_id) == "critical"
            await reporter.deregister()

    async def test_a_body_over_the_limit_is_not_read(self, consul: FakeConsul, metrics: MetricsServer):
        """A 5 MB answer (4 MiB limit) is unreadable: Critical, and read no further than the limit."""
        settings = settings_for(consul, metrics)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            metrics.raw = web.Response(body=b"# padding\n" * 500_000 + b"cpu 0.1\n", content_type="text/plain")
            await reporter.report_once()
            assert consul.check_status(settings.check_id) == "critical"
            assert "5000008 bytes is over the limit of 4194304" in reporter.output
            await reporter.deregister()

    async def test_a_chunked_body_over_the_limit_is_cut(self, consul: FakeConsul, metrics: MetricsServer):
        """Without a Content-Length (300 MB of comments, chunked), reading stops past the limit."""
        settings = settings_for(consul, metrics, max_metrics_bytes=1024 * 1024)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            metrics.chunks = [b"# " + b"x" * 65_534 + b"\n"] * 4_600  # 300 MB if it were all sent
            await reporter.report_once()
            assert consul.check_status(settings.check_id) == "critical"
            assert "over the limit of 1048576 bytes" in reporter.output
            await reporter.deregister()
        assert metrics.sent < 50 * 1024 * 1024  # the server stopped when the reporter hung up

    async def test_a_compressed_body_is_not_inflated(self, consul: FakeConsul, metrics: MetricsServer):
        """A gzip answer (a bomb would inflate to gigabytes) is refused: the reporter asks for identity."""
        settings = settings_for(consul, metrics)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            bomb = gzip.compress(b"#" * 10_000_000)
            metrics.raw = web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
            await reporter.report_once()
            assert consul.check_status(settings.check_id) == "critical"
            assert "gzip-encoded" in reporter.output
            await reporter.deregister()


# What a metrics endpoint may answer: JSON of any shape (deeply nested too), Prometheus-ish text
# with odd values, HTML, random bytes.
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
_json = st.recursive(
    st.dictionaries(st.sampled_from(["cpu", "loop", "cpu_", "Cpu", "x"]), _values, max_size=3),
    lambda inner: st.dictionaries(st.sampled_from(["cpu", "loop", "bolina", "x"]), inner, max_size=3),
    max_leaves=12,
)
_deep = st.integers(1, 3000).map(lambda depth: '{"a":' * depth + "0.1" + "}" * depth)
_prom_line = st.tuples(
    st.sampled_from(["cpu", "loop", "cpu_total", "# cpu", 'cpu{a="b"}', ""]),
    st.one_of(st.sampled_from(["0.1", "0.5", "NaN", "+Inf", "-Inf", "nan", "1e999", "x", ""]), st.text(max_size=4)),
).map(" ".join)
_bodies = st.one_of(
    _json.map(lambda d: (json.dumps(d).encode(), "application/json")),
    _deep.map(lambda text: (text.encode(), "application/json")),
    st.lists(_prom_line, max_size=6).map(lambda lines: ("\n".join(lines).encode(), "text/plain")),
    st.binary(max_size=64).map(lambda b: (b, "text/html")),
    st.binary(max_size=64).map(lambda b: (b, "application/json")),
)
SAFE = ClassifierConfig(
    metrics={"cpu": Thresholds(warning=0.8, critical=0.95), "loop": Thresholds(warning=1, critical=2)}
)


class TestAnyMetricsBody:
    @settings(max_examples=500, deadline=None)
    @given(_bodies, st.sampled_from(["auto", "prometheus", "json"]), st.sampled_from(["critical", "ignore"]))
    def test_available_only_when_every_metric_reads_healthy(self, answer, fmt, missing):
        """Whatever the body: a MetricsError (reported Critical), or a sample that is Available only
        if every configured metric was read as a finite number below its warning threshold (with
        ``missing: ignore``: the ones read, and at least one). Never any other exception."""
        body, content_type = answer
        config = SAFE.model_copy(update={"missing": missing})
        try:
            sample = parse_metrics(body, content_type=content_type, fmt=fmt)
        except MetricsError:
            return
        stage = classify(sample, config=config, stage=Stage.initial(0.0), now=1.0)
        read = {m: sample[m] for m in ("cpu", "loop") if m in sample}
        assert all(math.isfinite(v) for v in sample.values())
        if stage.status is Status.AVAILABLE:
            assert read
            assert missing == "ignore" or len(read) == 2
            assert read.get("cpu", 0) < 0.8
            assert read.get("loop", 0) < 1

    @settings(max_examples=100, deadline=None)
    @given(st.integers(1, 5000))
    def test_nesting_never_exhausts_the_stack(self, depth):
        """JSON nested to any depth is parsed or refused with MetricsError, never a RecursionError."""
        body = ('{"a":' * depth + "0.1" + "}" * depth).encode()
        if depth > MAX_DEPTH:
            with pytest.raises(MetricsError, match=r"nested deeper|JSON"):
                parse_metrics(body, content_type="application/json")
        else:
            assert list(parse_metrics(body, content_type="application/json").values()) == [0.1]


class TestDemand:
    async def test_output_carries_load_and_stamped_demand(self, consul: FakeConsul, metrics: MetricsServer):
        """With --demand-metric the output starts ``load=… demand=…@<unix time>``, as the scaler parses it."""
        metrics.values = {"cpu": 0.1, "conns": 0.42, "offered": 1.234}
        settings = settings_for(consul, metrics, load_metric="conns", demand_metric="offered")
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0, wall_clock=lambda: 1712345678.9) as reporter:
            await reporter.register()
            (entry,) = await health(consul)
            (output,) = [c["Output"] for c in entry["Checks"] if c["ServiceID"]]
            assert output.startswith("load=0.40 demand=1.23@1712345678 available")
            (server,), problems, notes = parse_checked(orjson.dumps([entry]))
            assert (server.load, server.demand, server.demand_at) == (0.4, 1.23, 1712345678.0)
            assert not problems
            assert not notes
            await reporter.deregister()

    async def test_registered_critical_then_set_at_once(self, consul: FakeConsul, metrics: MetricsServer):
        """The check is registered Critical and updated at once: a status change, so a real agent writes
        the first output with it instead of waiting for check_update_interval."""
        settings = settings_for(consul, metrics, demand_metric="cpu")
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            bodies: list[Any] = []
            register = reporter.agent.register

            async def spy(body: Any) -> None:
                bodies.append(body)
                await register(body)

            reporter.agent.register = spy  # type: ignore[method-assign]
            await reporter.register()
            assert [b["Check"]["Status"] for b in bodies] == ["critical"]
            assert consul.check_status(settings.check_id) == "passing"
            await reporter.deregister()

    async def test_deadband_then_refresh(self, consul: FakeConsul, metrics: MetricsServer):
        """Moves inside the deadband are not written (heartbeats repeat the output); a bigger move, or
        the refresh, writes a new output with a new stamp."""
        metrics.values = {"cpu": 0.1, "offered": 1.0}
        clock, wall = [0.0], [1000.0]
        settings = settings_for(consul, metrics, load_metric="cpu", demand_metric="offered", ttl=30, refresh=300)
        async with Reporter(settings, CLASSIFIER, clock=lambda: clock[0], wall_clock=lambda: wall[0]) as reporter:
            await reporter.register()
            first = reporter.output
            outputs = [first]
            for offered in [1.05, 0.95, 1.09, 1.3, 1.3, 1.3]:
                metrics.values["offered"] = offered
                clock[0] += 5
                wall[0] += 5
                await reporter.report_once()
                outputs.append(reporter.output)
            assert outputs[1:4] == [first] * 3  # within 10 % of 1.0: nothing new
            assert "demand=1.30@1020" in outputs[4]
            assert outputs[5:] == [outputs[4]] * 2
            clock[0] += 14  # the heartbeat is due (ttl/2) with nothing new: the same output again
            wall[0] += 14
            updates = consul.request_counts["agent.check.update"]
            await reporter.report_once()
            assert consul.request_counts["agent.check.update"] == updates + 1
            assert reporter.output == outputs[4]
            wall[0] = 1020 + 300  # refresh: the same figures, a new stamp
            clock[0] += 5
            await reporter.report_once()
            assert "demand=1.30@1320" in reporter.output
            await reporter.deregister()


NOT_UTF8 = b"\xff\xfe rpc \x80error\x1b[31m\r\nsecond line\x00"


class TestAnyAgentAnswer:
    """Issue 20, #3 and #4: whatever the agent answers, the sidecar reads at most a few KiB of it
    and fails with one short ``ConsulAgentError`` line, never a traceback."""

    @pytest.mark.parametrize("kind", ["endless", "large", "gzip-bomb"])
    async def test_a_refusal_is_read_no_further_than_its_first_line(
        self, agent: HostileAgent, metrics: MetricsServer, kind: str
    ):
        """An endless 500 body, a 48 MB one (Content-Length) and a gzip bomb: one short error line,
        the endless body abandoned after a few KiB (the agent stops writing when the sidecar hangs up)."""
        settings = settings_for(agent, metrics)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            if kind == "endless":
                agent.queue("update", body=None)
            elif kind == "large":
                agent.queue("update", body=b"x" * 48_000_000)
            else:
                bomb = gzip.compress(b"#" * 50_000_000)
                agent.queue("update", body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})
            with pytest.raises(ConsulAgentError) as failed:
                await reporter.agent.update_check(settings.check_id, status="passing", output="x")
        message = str(failed.value)
        assert message.startswith(f"PUT /v1/agent/check/update/{settings.check_id}: 500 ")
        assert len(message) < 400
        assert "\n" not in message
        if kind == "endless":
            assert agent.sent < 32 * 1024 * 1024, agent.sent
        if kind == "gzip-bomb":
            assert "gzip-encoded body not read" in message
            assert "#" not in message

    async def test_non_utf8_at_registration_is_a_one_line_error(self, agent: HostileAgent, metrics: MetricsServer):
        """A 500 of bytes that are not UTF-8 (and control characters): the first line, replaced."""
        settings = settings_for(agent, metrics)
        agent.queue("register", body=NOT_UTF8)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            with pytest.raises(ConsulAgentError) as failed:
                await reporter.register()
            assert not reporter.registered
        message = str(failed.value)
        assert message.startswith("PUT /v1/agent/service/register: 500 ")
        assert "rpc \ufffderror\ufffd[31m" in message
        assert "second line" not in message
        assert failed.value.status == 500

    async def test_non_utf8_at_the_first_update_is_a_one_line_error_and_deregisters(
        self, agent: HostileAgent, metrics: MetricsServer
    ):
        """Registered, then the first update answered with non-UTF-8: a ConsulAgentError, and leaving
        the reporter deregisters the server (it does not linger until DeregisterCriticalServiceAfter)."""
        settings = settings_for(agent, metrics)
        agent.queue("update", body=NOT_UTF8)
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            with pytest.raises(ConsulAgentError, match=r"check/update/.*: 500 .*rpc"):
                await reporter.register()
            assert agent.registered == {settings.instance_id}
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1


class TestEveryExitDeregisters:
    """Issue 20, #4: whatever ends the reporter after a successful registration, it deregisters."""

    async def test_an_error_at_the_first_update(self, agent: HostileAgent, metrics: MetricsServer):
        settings = settings_for(agent, metrics)
        agent.queue("update", body=b"rpc error: internal error")
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            with pytest.raises(ConsulAgentError):
                await reporter.register()
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1

    async def test_an_unexpected_exception(self, agent: HostileAgent, metrics: MetricsServer):
        settings = settings_for(agent, metrics)

        async def fail_once_registered() -> None:
            async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
                await reporter.register()
                assert agent.registered == {settings.instance_id}
                raise ZeroDivisionError  # a bug anywhere in the loop

        with pytest.raises(ZeroDivisionError):
            await fail_once_registered()
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1

    async def test_a_stop_deregisters_once(self, agent: HostileAgent, metrics: MetricsServer):
        """run() deregisters on stop; leaving the reporter afterwards sends nothing more."""
        settings = settings_for(agent, metrics)
        stop = asyncio.Event()
        async with Reporter(settings, CLASSIFIER, clock=lambda: 0.0) as reporter:
            await reporter.register()
            stop.set()
            await reporter.run(stop)
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1


async def until_real(condition: Callable[[], bool], *, within: float) -> None:
    """Poll ``condition`` in real time (a child process runs on its own clock) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"condition not met within {within}s"
        await asyncio.sleep(0.005)


class TestReportProcess:
    """The real ``bolina-scaler report`` process against the hostile agent: signals and bad answers."""

    @pytest.fixture
    def spawn(
        self, agent: HostileAgent, metrics: MetricsServer, tmp_path: Path
    ) -> Callable[[], asyncio.Future[asyncio.subprocess.Process]]:
        classifier = tmp_path / "availability.yaml"
        classifier.write_text("metrics:\n  cpu: {warning: 0.8, critical: 0.95}\n")

        def start() -> asyncio.Future[asyncio.subprocess.Process]:
            command = [
                *("report", "--classifier", str(classifier), "--metrics-url", metrics.url, "--consul", agent.url),
                *("--id", "bolina-0", "--pod", "bolina-0", "--address", "10.0.0.1", "--interval", "1s"),
            ]
            return asyncio.ensure_future(
                asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bolina_scaler",
                    *command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )

        return start

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
    async def test_a_stop_signal_deregisters_and_exits_0(self, agent: HostileAgent, spawn, signum: signal.Signals):
        process = await spawn()
        await until_real(lambda: agent.calls["update"] >= 1 and bool(agent.registered), within=30)
        process.send_signal(signum)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, (out + err).decode()[-2000:]
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1

    @pytest.mark.skipif(not hasattr(signal, "pidfd_send_signal"), reason="needs Linux pidfd_send_signal")
    async def test_stop_signals_during_teardown_still_exit_0(self, agent: HostileAgent, spawn):
        """SIGTERM, then SIGINT and SIGTERM again and again until the process is gone: deregistered, exit 0."""
        process = await spawn()
        await until_real(lambda: agent.calls["update"] >= 1 and bool(agent.registered), within=30)
        output = asyncio.ensure_future(process.communicate())
        pidfd = os.pidfd_open(process.pid)  # Popen.send_signal would reap the child before asyncio does
        sent = 0
        try:
            while process.returncode is None and sent < 20_000:
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGINT if sent % 2 else signal.SIGTERM)
                except ProcessLookupError:
                    break
                sent += 1
                await asyncio.sleep(0.0005)
        finally:
            os.close(pidfd)
        out, err = await asyncio.wait_for(output, 30)
        assert process.returncode == 0, (sent, (out + err).decode()[-2000:])
        assert sent > 2, "the process exited before a second signal was sent"
        assert agent.registered == set()
        assert agent.calls["deregister"] == 1

    async def test_non_utf8_answers_are_one_line_errors_not_a_crash(self, agent: HostileAgent, spawn):
        """Non-UTF-8 500s at registration and at the first update: the sidecar logs them, registers on
        its next turn, and on SIGTERM deregisters and exits 0. No traceback anywhere."""
        agent.queue("register", body=NOT_UTF8)
        agent.queue("update", body=NOT_UTF8)
        process = await spawn()
        await until_real(lambda: agent.calls["update"] >= 2 and bool(agent.registered), within=30)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        text = (out + err).decode(errors="replace")
        assert process.returncode == 0, text[-2000:]
        assert "Traceback" not in text
        failing = [line for line in text.splitlines() if "report.register_failing" in line]
        assert len(failing) == 2, text[-2000:]
        assert all("500" in line and "second line" not in line for line in failing)
        assert agent.registered == set()


class TestCommand:
    def test_report_requires_identity(self, monkeypatch, capsys, tmp_path):
        """Without --id/--pod/--address (or POD_NAME/POD_IP) the command is a usage error."""
        for name in ("POD_NAME", "POD_IP", "BOLINA_SERVER_ID"):
            monkeypatch.delenv(name, raising=False)
        classifier = tmp_path / "a.yaml"
        classifier.write_text("metrics:\n  cpu: {warning: 0.8, critical: 0.9}\n")
        code = main(["report", "--classifier", str(classifier), "--metrics-url", "http://127.0.0.1:1/m"])
        assert code == 2
        assert "--id" in capsys.readouterr().err
