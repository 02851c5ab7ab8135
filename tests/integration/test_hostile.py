"""Hostile input against the real daemon (issue 13): its HTTP port, oversized Consul answers, and
the servers API polled at 10,000 servers. Each records one row of docs/reliability.md through the
``reliability`` fixture, with figures, in the style of ``test_faults.py`` (same steady state:
4 replicas, 2 of 4 servers passing; "the change" needs 4 → 5).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

import pytest

from tests.integration.conftest import BolinaNamespace, Reliability, Scalers
from tests.integration.flood import HALF_OPEN
from tests.integration.harness import ROOT, SHIPPED_CONFIG, ConsulAgent, ConsulProxy, Fleet, Scaler, wait_until
from tests.integration.test_faults import (
    AFTER_CHANGE,
    CHANGE,
    STEADY,
    hold_window,
    reason_of,
    scaled,
    settle,
    steady,
    the_change,
    wait_scale,
)

pytestmark = pytest.mark.integration

MB = 1024 * 1024


# ---------------------------------------------------------------------------------- the HTTP port

NOFILE = 256
"""The scaler's descriptor limit in the fuzz run (a quarter of a container's common 1,024)."""
FLOOD_SECONDS = 20
PROBE_TIMEOUT = 3.0
"""timeoutSeconds of the shipped liveness and readiness probes."""


@dataclass
class Probe:
    """A kubelet: GET /healthz every 0.25 s with the shipped probe's timeout; every answer recorded."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[tuple[float, int | str]] = field(default_factory=list)

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=PROBE_TIMEOUT) as answer:
                    outcome: int | str = answer.status
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            self.answers.append((time.monotonic() - started, outcome))
            self.stop.wait(0.25)

    def failures(self) -> list[str]:
        return [f"{took:.2f}s {outcome}" for took, outcome in self.answers if outcome != 200]

    def latencies_ms(self) -> list[float]:
        return sorted(took * 1000 for took, outcome in self.answers if outcome == 200)


def test_hostile_http_clients_with_a_low_file_limit(
    consul: ConsulAgent, bolina_ns: BolinaNamespace, scalers: Scalers, reliability: Reliability
) -> None:
    reliability.case(
        "http-hostile-clients-low-fd-limit",
        fault=f"the scaler runs with a file limit of {NOFILE}; for {FLOOD_SECONDS} s, from a process of its own, "
        f"{HALF_OPEN:,} clients hold connections "
        "that sent half a request line (reopened as soon as they are dropped), one in 20 asks for "
        "/v1/servers?all=1 and never reads, and short connections send odd bytes (TLS hello, HTTP/0.9, "
        f"bad lengths, 20 KB headers, junk); the fleet needs {CHANGE} in the middle of it",
        expected="the daemon keeps its descriptors (peak well under the limit, no 'Too many open files'), "
        f"/healthz answers every probe within the shipped probe timeout ({PROBE_TIMEOUT:g} s), {CHANGE} is applied, "
        "and every log line is JSON",
    )
    bolina_ns.set_scale(STEADY)
    pods = bolina_ns.wait_running(STEADY)
    fleet = Fleet(consul, bolina_ns)
    fleet.sync("warning")
    fleet.set(pods[:2], "passing")
    config = scalers.config(consul.address, consul.scaler_token_file, bolina_ns)
    scaler = scalers.start(config, nofile=NOFILE)
    settle(scaler, consul)
    assert scaler.file_limit() == NOFILE
    files_before = scaler.open_files()
    peak_files = files_before
    flood = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.flood", str(scaler.port), str(FLOOD_SECONDS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with Probe(scaler.url) as probe:
            started = time.monotonic()
            reaction = None
            while time.monotonic() - started < FLOOD_SECONDS:
                peak_files = max(peak_files, scaler.open_files())
                if reaction is None and time.monotonic() - started > 5:
                    the_change(fleet)
                    changed = time.monotonic()
                    wait_until(lambda: bolina_ns.scale() == AFTER_CHANGE, timeout=30, what=CHANGE, alive=scaler.exited)
                    reaction = time.monotonic() - changed
                time.sleep(0.2)
        out, _ = flood.communicate(timeout=30)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(10)
    attack = json.loads(out)
    assert not attack["errors"], attack["errors"]
    assert scaler.exited() is None
    assert reaction is not None
    scaler.wait_log(lambda line: line["event"] == "scale.patched", timeout=10, what="'scale.patched'")
    assert scaled(scaler) == [AFTER_CHANGE]
    assert probe.failures() == [], probe.failures()
    assert peak_files < NOFILE // 2, peak_files
    assert scaler.not_json() == [], scaler.not_json()[:5]
    assert not any("Too many open files" in str(line) for line in scaler.lines())
    latencies = probe.latencies_ms()
    reliability.observed(
        f"{attack['opened']:,} hostile connections opened ({attack['most_held']:,} held at once, "
        f"{attack['dropped']:,} closed by the daemon), {attack['junk_sent']:,} odd requests; the daemon's "
        f"descriptors: {files_before} before, "
        f"peak {peak_files} of {NOFILE}; /healthz {len(latencies)}/{len(probe.answers)} answered, median "
        f"{statistics.median(latencies):.0f} ms, max {latencies[-1]:.0f} ms; {CHANGE} {reaction:.2f} s after the "
        "change; "
        "no line that is not JSON",
        recovery_s=reaction,
    )


# ---------------------------------------------------------------------------- oversized answers


def _padded(total: int) -> Callable[[], Iterator[bytes]]:
    """A JSON list padded with spaces to ``total`` bytes, made 1 MB at a time."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(total // MB):
            yield b" " * MB
        yield b"]"

    return chunks


def _gzip_bomb(total: int) -> Callable[[], Iterator[bytes]]:
    """``total`` bytes of padding, gzipped as they are made (~1,000:1)."""

    def chunks() -> Iterator[bytes]:
        squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
        yield squeeze.compress(b"[")
        for _ in range(total // MB):
            yield squeeze.compress(b" " * MB)
        yield squeeze.compress(b"]") + squeeze.flush()

    return chunks


@pytest.mark.parametrize(
    ("key", "what", "stream", "headers"),
    [
        ("consul-answer-oversized", "a 200 MB health answer (chunked, no Content-Length)", _padded(200 * MB), {}),
        (
            "consul-answer-gzip-bomb",
            "a gzip health answer of ~200 KB that inflates to 200 MB (Content-Encoding: gzip, unasked for)",
            _gzip_bomb(200 * MB),
            {"Content-Encoding": "gzip"},
        ),
    ],
    ids=["200MB", "gzip-bomb"],
)
def test_oversized_consul_answers(
    consul: ConsulAgent,
    bolina_ns: BolinaNamespace,
    scalers: Scalers,
    reliability: Reliability,
    key: str,
    what: str,
    stream: Callable[[], Iterator[bytes]],
    headers: dict[str, str],
) -> None:
    reliability.case(
        key,
        fault=f"a proxy in front of the real agent answers every health query with {what} while a server turns Warning",
        expected="untrusted ('too large') → hold at 4; the daemon reads no more than consul.max_answer_bytes "
        "(derived: 1 MiB at max_replicas 12) and its peak RSS barely moves (was: 498 MB for 200 MB, 2.1 GB for "
        "a 1 GB bomb); the change is acted on once answers are whole again",
    )
    with ConsulProxy(consul.address) as proxy:
        scaler, fleet = steady(consul, bolina_ns, scalers, address=proxy.address)
        _, peak_before = scaler.memory_mb()
        proxy.faults.stream, proxy.faults.stream_headers = stream, headers
        the_change(fleet)  # wakes the blocking query: its answer is the oversized one
        wait_until(
            lambda: "too large" in str(scaler.decision()), timeout=20, what="a 'too large' hold", alive=scaler.exited
        )
        during = reason_of(scaler)
        hold_window(bolina_ns, scaler, 4)
        rss_during, peak_during = scaler.memory_mb()
        hits, streamed = proxy.faults.hits, proxy.faults.streamed
        proxy.faults.stream = None
        recovery = wait_scale(bolina_ns, scaler, AFTER_CHANGE)
    assert scaled(scaler) == [AFTER_CHANGE]
    assert peak_during - peak_before < 64, (peak_before, peak_during)
    reliability.observed(
        f"{hits} such answers, {streamed / MB:.1f} MB of them written by the proxy before the daemon hung up "
        f"({streamed / max(hits, 1) / MB:.2f} MB each); held at 4 ({during}); peak RSS {peak_before:.0f} MB "
        f"before, {peak_during:.0f} MB after (RSS {rss_during:.0f} MB); {CHANGE} {recovery:.2f} s after the answers "
        "were whole",
        recovery_s=recovery,
    )


# ----------------------------------------------------------------------- the servers API at scale


def _fleet_for_one_more(size: int, target: Fraction) -> tuple[int, int]:
    """A fleet of about ``size`` servers and how many of them pass, such that the share meets
    ``target`` and one passing server turning Warning makes the policy ask for exactly one more."""
    for fleet in range(size, size + 100):
        passing = math.ceil(target * fleet)
        after = passing - 1
        need = math.ceil((target * fleet - after) / (1 - target))
        if Fraction(after, fleet) < target and need == 1:
            return fleet, passing
    raise AssertionError(f"no fleet near {size} where one server crosses {target}")


TARGET = Fraction(str(SHIPPED_CONFIG["policy"]["target_available_ratio"]))
FLEET, PASSING = _fleet_for_one_more(10_000, TARGET)
"""With the shipped target 0.3: 10,001 servers, 3,001 passing; one of them turning Warning needs 4 → 5."""
POLLERS = 8
FLIPS = 16
"""Even: each series ends where it started (warning), so the next one begins with a real change."""


def _evaluated_after(scaler: Scaler, since_wall: float, index_before: int) -> float | None:
    """Seconds from ``since_wall`` to the first evaluation of a newer Consul index, from its log line."""
    for line in scaler.lines():
        if line.get("event") == "decision.evaluated" and line.get("consul_index", 0) > index_before:
            stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
            if stamp >= since_wall:
                return max(stamp - since_wall, 1e-6)
    return None


def _reactions(consul: ConsulAgent, scaler: Scaler, flipping: str) -> list[float]:
    """Flip one Warning server to Critical and back ``FLIPS`` times (no scale change: neither is
    Available); each time, the seconds until the daemon evaluated the new index."""
    took: list[float] = []
    for n in range(FLIPS):
        decision = scaler.decision()
        assert decision is not None
        index_before = decision["decision"]["inputs"]["consul_index"]
        flipped = time.time()
        consul.set_external(flipping, "critical" if n % 2 == 0 else "warning")
        seen = wait_until(
            lambda flipped=flipped, index_before=index_before: _evaluated_after(scaler, flipped, index_before),
            timeout=30,
            what="an evaluation of the flip",
        )
        took.append(seen)
        time.sleep(0.5)
    return took


@dataclass
class Pollers:
    """``POLLERS`` load balancers asking for ``/v1/servers?all=1`` as fast as they get answers."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sizes: set[int] = field(default_factory=set)

    def __enter__(self) -> Pollers:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(POLLERS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"{self.url}/v1/servers?all=1", timeout=30) as answer:
                    self.sizes.add(len(answer.read()))
                self.answers.append(time.monotonic() - started)
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def _p90_ms(values: list[float]) -> str:
    return f"{sorted(values)[int(len(values) * 0.9)] * 1000:.0f} ms"


def test_servers_api_polled_at_10k(
    consul: ConsulAgent, bolina_ns: BolinaNamespace, scalers: Scalers, reliability: Reliability
) -> None:
    reliability.case(
        "servers-api-polled-at-10k",
        fault=f"{FLEET:,} servers in the real agent's catalog ({PASSING:,} passing, the rest warning), "
        f"{POLLERS} clients polling GET /v1/servers?all=1 as fast as they are answered (in the test's "
        "process, on the same 2 cores); consul.max_answer_bytes 64 MiB (the derived limit at "
        "max_replicas 12, 1 MiB, is below the agent's answer)",
        expected=f"the reaction to a Consul change (a server flipped {FLIPS} times; the daemon's evaluation of "
        "the new index) stays within 4× of the reaction without pollers (or 1 s), where re-encoding per "
        "request took it from a median of 59 ms to 4.9 s on emulators; /healthz keeps answering; a change "
        f"that needs {CHANGE} is applied while they poll",
    )
    bolina_ns.set_scale(STEADY)
    bolina_ns.wait_running(STEADY)
    servers = {f"srv-{n:05}": "passing" if n < PASSING else "warning" for n in range(FLEET)}
    consul.register_external(servers)
    fetched = time.monotonic()
    whole = consul.api("GET", "/v1/health/service/bolina", timeout=60)
    fetch_s = time.monotonic() - fetched
    assert whole.status == 200
    assert len(whole.json()) == FLEET
    config = scalers.config(consul.address, consul.scaler_token_file, bolina_ns, consul={"max_answer_bytes": 64 * MB})
    scaler = scalers.start(config)
    wait_until(scaler.ready, timeout=60, what="ready", alive=scaler.exited)
    decision = wait_until(
        lambda: (d := scaler.decision()) and d["decision"]["inputs"]["registered"] == FLEET and d,
        timeout=60,
        what=f"an evaluation of {FLEET:,} servers",
        alive=scaler.exited,
    )
    assert decision["decision"]["desired"] == STEADY, decision
    flipping = f"srv-{FLEET - 1:05}"  # warning: flipping it to critical and back never changes the Available share
    quiet = _reactions(consul, scaler, flipping)
    with Pollers(scaler.url) as pollers, Probe(scaler.url) as probe:
        time.sleep(2)
        polled = _reactions(consul, scaler, flipping)
        changed = time.monotonic()
        consul.set_external("srv-00000", "warning")  # one fewer Available: just below the target, 1 more needed
        wait_until(lambda: bolina_ns.scale() == AFTER_CHANGE, timeout=60, what=CHANGE, alive=scaler.exited)
        scale_reaction = time.monotonic() - changed
        answers = len(pollers.answers)
    assert not pollers.failures, pollers.failures[:3]
    assert answers > 0
    assert scaled(scaler) == [AFTER_CHANGE]
    assert probe.failures() == [], probe.failures()
    health = probe.latencies_ms()
    reliability.observed(
        f"the agent's answer is {len(whole.body) / MB:.1f} MB (one plain GET of it: {fetch_s * 1000:.0f} ms); "
        f"evaluation of a change: median {_median_ms(quiet)}, p90 {_p90_ms(quiet)} without pollers; median "
        f"{_median_ms(polled)}, p90 {_p90_ms(polled)} with "
        f"{POLLERS} pollers, which got {answers:,} answers (~{max(pollers.sizes) / MB:.1f} MB each, median "
        f"{_median_ms(pollers.answers)}: the test's pollers and the daemon share 2 cores); /healthz meanwhile "
        f"median {statistics.median(health):.0f} ms, max {health[-1]:.0f} ms; {CHANGE} applied {scale_reaction:.2f} s "
        "after the change while they polled",
        recovery_s=None,
    )
    assert statistics.median(polled) < max(1.0, 4 * statistics.median(quiet)), (quiet, polled)
