"""What a Consul client agent writes to the catalog when a TTL check is updated: ``python -m bench.check_sync``.

Does I/O: starts a real Consul server and a real client agent (``.testbin/bin/consul``) on
127.0.0.1, registers Bolina servers on the client as ``bolina-scaler report`` does, and updates
their checks as reporters would. It measures, for a given ``check_update_interval``:

* **semantics**: after a status change, an output-only change and an identical update, when the
  new check shows in ``/v1/health/service/bolina`` on the server and whether ``X-Consul-Index``
  moved (a new index wakes every blocking query on the service); and for a new registration,
  when the first output shows if the check is registered with the reading's status (the first
  output is then an output-only change) or Critical first (``bolina-scaler report`` does that);
* **write rate**: with every check's output changing on every report (the worst case: each
  reporter writes a new ``load=``/``demand=`` every interval), how many Raft entries the
  servers apply per second (``Stats.raft.applied_index`` of ``/v1/agent/self``, less the idle
  rate measured first) and how many of them move the service's index.

The figures go into docs/policy.md ("How fresh the data is, and what it costs Consul"). Every
process is stopped at the end; the run takes about ``2 × duration`` plus the semantics rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from bench.backends import consul_binary
from bolina_scaler.config import Duration

__all__ = ["main"]

SERVICE = "bolina"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return dict(response.headers), response.read()


@dataclass
class Agents:
    """A one-node Consul server and one client agent joined to it."""

    server: str
    client: str

    def health(self) -> tuple[int, dict[str, tuple[str, str]]]:
        """The service's index and, per check id, (status, output) as the servers hold them."""
        headers, body = _request("GET", f"{self.server}/v1/health/service/{SERVICE}")
        checks = {}
        for entry in json.loads(body):
            for check in entry["Checks"]:
                if check.get("ServiceID"):
                    checks[check["CheckID"]] = (check["Status"], check["Output"])
        return int(headers["X-Consul-Index"]), checks

    def applied(self) -> int:
        _, body = _request("GET", f"{self.server}/v1/agent/self")
        return int(json.loads(body)["Stats"]["raft"]["applied_index"])

    def register(self, n: int, status: str = "passing") -> None:
        body = {
            "Name": SERVICE,
            "ID": f"bolina-{n}",
            "Address": f"10.0.{n // 250}.{n % 250 + 1}",
            "Port": 9001,
            "Meta": {"server_id": str(800000 + n), "pod": f"bolina-{n}", "udp_port": "9002"},
            "Check": {
                "CheckID": f"service:bolina-{n}",
                "Name": "Bolina availability",
                "TTL": "10m",
                "Status": status,
            },
        }
        _request("PUT", f"{self.client}/v1/agent/service/register", body)

    def update(self, n: int, status: str, output: str) -> None:
        _request("PUT", f"{self.client}/v1/agent/check/update/service:bolina-{n}", {"Status": status, "Output": output})


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if condition():
                return
        time.sleep(0.2)
    raise TimeoutError(what)


@contextlib.contextmanager
def agents(interval: str) -> Iterator[Agents]:
    binary = consul_binary()
    if binary is None:
        raise SystemExit("needs the real Consul agent: tools/testbin/build.sh consul")
    workdir = Path(tempfile.mkdtemp(prefix="bolina-check-sync-"))
    ports = {name: _port() for name in ("s_http", "s_serf", "s_wan", "s_server", "c_http", "c_serf")}
    common = ["-bind=127.0.0.1", "-client=127.0.0.1", "-dns-port=-1", "-grpc-port=-1", "-log-level=warn"]
    server_argv = [
        str(binary), "agent", "-server", "-bootstrap-expect=1", "-node=consul-0", *common,
        f"-http-port={ports['s_http']}", f"-serf-lan-port={ports['s_serf']}", f"-serf-wan-port={ports['s_wan']}",
        f"-server-port={ports['s_server']}", f"-data-dir={workdir / 'server'}",
    ]  # fmt: skip
    client_argv = [
        str(binary), "agent", "-node=bolina-node", *common, f"-http-port={ports['c_http']}",
        f"-serf-lan-port={ports['c_serf']}", f"-data-dir={workdir / 'client'}",
        f"-retry-join=127.0.0.1:{ports['s_serf']}", "-hcl", f'check_update_interval = "{interval}"',
    ]  # fmt: skip
    procs = []
    try:
        for name, argv in (("server", server_argv), ("client", client_argv)):
            log = (workdir / f"{name}.log").open("w")
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        pair = Agents(f"http://127.0.0.1:{ports['s_http']}", f"http://127.0.0.1:{ports['c_http']}")
        _wait(lambda: _request("GET", f"{pair.server}/v1/status/leader")[1].strip() not in (b"", b'""'), "leader")
        _wait(lambda: len(json.loads(_request("GET", f"{pair.server}/v1/catalog/nodes")[1])) == 2, "client joined")
        yield pair
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Change:
    kind: str
    delays: list[float]
    """Seconds from the agent update until the servers show it (one per check)."""
    index_moved_before: bool
    """Whether the service's index moved before the new output was visible (it should not)."""
    index_moved: bool


def _observe(pair: Agents, servers: int, kind: str, status: str, output: str, timeout: float) -> Change:
    index_before, _ = pair.health()
    started = time.monotonic()
    for n in range(servers):
        pair.update(n, status, output)
    seen: dict[int, float] = {}
    moved_before = False
    index_after = index_before
    while len(seen) < servers and time.monotonic() - started < timeout:
        index_after, checks = pair.health()
        now = time.monotonic() - started
        for n in range(servers):
            if n not in seen and checks.get(f"service:bolina-{n}") == (status, output):
                seen[n] = now
        if not seen and index_after != index_before:
            moved_before = True
        time.sleep(0.1)
    return Change(kind, sorted(seen.values()), moved_before, index_after != index_before)


def semantics(pair: Agents, servers: int, interval: float) -> list[Change]:
    """Status change, output-only change, identical update: how long until the servers show each."""
    for n in range(servers):
        pair.register(n)
    _wait(lambda: len(pair.health()[1]) == servers, "registrations synced")
    _wait(lambda: all(v == ("passing", "") for v in pair.health()[1].values()), "initial status")
    timeout = 1.5 * interval + 10
    changes = [_observe(pair, servers, "output-only", "passing", "load=0.40 demand=0.41", timeout)]
    changes.append(_observe(pair, servers, "status change", "warning", "load=0.80 demand=0.90", timeout))
    changes.append(_observe(pair, servers, "output-only", "warning", "load=0.85 demand=1.10", timeout))
    index, _ = pair.health()
    for n in range(servers):
        pair.update(n, "warning", "load=0.85 demand=1.10")
    time.sleep(3)
    changes.append(Change("identical", [], False, pair.health()[0] != index))
    return changes


def registrations(pair: Agents, servers: int, first: int, interval: float) -> list[Change]:
    """A new server's first output: registered with the reading's status, or registered Critical first."""
    changes = []
    for kind, status in (("new, passing", "passing"), ("new, critical", "critical")):
        index_before, _ = pair.health()
        numbers = range(first, first + servers)
        started = time.monotonic()
        for n in numbers:
            pair.register(n, status)
            pair.update(n, "passing", f"load=0.00 demand=0.00@{n}")
        seen: dict[int, float] = {}
        while len(seen) < servers and time.monotonic() - started < 1.5 * interval + 10:
            _, checks = pair.health()
            for n in numbers:
                if n not in seen and checks.get(f"service:bolina-{n}") == ("passing", f"load=0.00 demand=0.00@{n}"):
                    seen[n] = time.monotonic() - started
            time.sleep(0.1)
        changes.append(Change(f"{kind} first", sorted(seen.values()), False, pair.health()[0] != index_before))
        first += servers
    return changes


@dataclass
class Rate:
    idle_per_s: float
    writes_per_s: float
    index_moves_per_s: float
    updates_per_s: float


def write_rate(pair: Agents, servers: int, every: float, duration: float, seed: int = 0) -> Rate:
    """Every ``every`` seconds each server reports a new output (same status): Raft writes per second."""
    rng = random.Random(seed)
    start = pair.applied()
    time.sleep(duration / 2)
    idle = (pair.applied() - start) / (duration / 2)
    start = pair.applied()
    index, _ = pair.health()
    moves, updates = 0, 0
    began = time.monotonic()
    next_round = began
    while time.monotonic() - began < duration:
        if time.monotonic() >= next_round:
            next_round += every
            for n in range(servers):
                load = rng.random()
                pair.update(n, "passing", f"load={load:.2f} demand={load * 1.1:.2f}")
                updates += 1
        new_index, _ = pair.health()
        if new_index != index:
            moves += 1
            index = new_index
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    writes = (pair.applied() - start) / elapsed - idle
    return Rate(idle, max(0.0, writes), moves / elapsed, updates / elapsed)


def _fmt(delays: list[float]) -> str:
    if not delays:
        return "never"
    if max(delays) - min(delays) < 0.5:
        return f"{statistics.median(delays):.1f} s"
    return f"{min(delays):.1f}–{max(delays):.1f} s (median {statistics.median(delays):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--interval", action="append", help="check_update_interval to try (repeatable; default 0s, 30s)"
    )
    parser.add_argument("--servers", type=int, default=50, help="Bolina servers registered on the client agent")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between two reports of one server")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of reporting per interval (0: none)")
    args = parser.parse_args(argv)
    intervals = args.interval or ["0s", "30s"]
    print(
        f"consul {subprocess.run([str(consul_binary()), 'version'], capture_output=True, text=True).stdout.split()[1]}"
    )
    print(f"{args.servers} servers on one client agent, each reporting every {args.every:g} s")
    for spec in intervals:
        interval = TypeAdapter(Duration).validate_python(spec)
        with agents(spec) as pair:
            print(f"\ncheck_update_interval = {spec}")
            for change in [*semantics(pair, args.servers, interval), *registrations(pair, 5, 10_000, interval)]:
                moved = "index moved" if change.index_moved else "index unchanged"
                early = " (index moved before the output showed)" if change.index_moved_before else ""
                shown = "not written" if change.kind == "identical" else f"shown after {_fmt(change.delays)}"
                print(f"  {change.kind:<14} {shown}; {moved}{early}")
            if not args.duration:
                continue
            rate = write_rate(pair, args.servers, args.every, args.duration)
            print(
                f"  write rate: {rate.updates_per_s:.1f} check updates/s to the agent -> "
                f"{rate.writes_per_s:.2f} Raft writes/s above the idle {rate.idle_per_s:.2f}/s "
                f"({rate.writes_per_s / args.servers * 3600:.0f} per server-hour); "
                f"the service's index moved {rate.index_moves_per_s:.2f} times/s (polled every 50 ms)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
