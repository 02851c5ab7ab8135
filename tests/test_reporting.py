"""The ``report`` sidecar against the Consul fake (a real local HTTP server) and a metrics server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bolina_scaler.cli import main
from bolina_scaler.core.model import Status
from bolina_scaler.reporter.agent import check_status, registration
from bolina_scaler.reporter.availability import ClassifierConfig, Thresholds
from bolina_scaler.reporter.metrics_reading import parse_json_metrics, parse_prometheus
from bolina_scaler.reporter.reporter import Reporter
from bolina_scaler.reporter.settings import ReporterSettings
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
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
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


@pytest.fixture
async def consul() -> AsyncIterator[FakeConsul]:
    async with FakeConsul() as fake:
        yield fake


@pytest.fixture
async def metrics() -> AsyncIterator[MetricsServer]:
    async with MetricsServer() as server:
        yield server


def settings_for(consul: FakeConsul, metrics: MetricsServer, **overrides: Any) -> ReporterSettings:
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
        assert metrics["nan_metric"] != metrics["nan_metric"]  # NaN: the classifier ignores it

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
