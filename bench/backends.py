"""The servers a run talks to: the in-process fakes, or the real Consul agent when it is built.

Does I/O (HTTP servers and clients on 127.0.0.1, child processes). Each Consul side can load a
fleet, write one server's status and say when the write was made; each Kubernetes side can
reset the Deployment and time the arrival of the next PATCH of its scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bolina_scaler.testing import consul as fake_consul
from bolina_scaler.testing.consul import FakeConsul
from bolina_scaler.testing.kubernetes import FakeKubernetes

__all__ = [
    "NAMESPACE",
    "SERVICE",
    "BenchConsul",
    "ConsulSide",
    "FakeConsulSide",
    "FakeKubeSide",
    "KubeSide",
    "RealConsulSide",
    "consul_binary",
    "fleet_entry",
]

NAMESPACE = "bolina"
SERVICE = "bolina"
ROOT = Path(__file__).resolve().parent.parent
TESTBIN = Path(os.environ.get("BOLINA_TESTBIN", ROOT / ".testbin")) / "bin"


def consul_binary() -> Path | None:
    """The Consul agent built by tools/testbin, if it is there."""
    path = TESTBIN / "consul"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def fleet_entry(n: int, status: str) -> dict[str, Any]:
    """Server ``n`` of a benchmark fleet: its own node, the registration convention's Meta."""
    return {
        "instance_id": f"bolina-{n}",
        "node": f"node-{n}",
        "address": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
        "meta": {"server_id": str(100000 + n), "udp_port": "9002", "pod": f"bolina-{n}"},
        "status": status,
    }


class ConsulSide(Protocol):
    url: str

    async def load(self, statuses: list[str]) -> None: ...

    async def set_status(self, instance_id: str, status: str) -> float:
        """Write a status; return the ``time.perf_counter()`` at which the write was made."""
        ...

    async def idle(self) -> None:
        """Return once the client's blocking query is parked again (best effort for real Consul)."""
        ...

    def health_queries(self) -> int | None: ...

    def cpu(self) -> float | None:
        """CPU seconds the Consul agent has used so far (None: the fake, in the harness's process)."""
        ...


class KubeSide(Protocol):
    kubeconfig: Path
    scale_url: str
    token: str

    async def reset(self, replicas: int) -> None: ...

    def next_patch(self) -> Awaitable[float]:
        """Resolves to the ``time.perf_counter()`` at which the next scale PATCH arrived."""
        ...

    def patch_log(self) -> list[int]:
        """The replicas of every PATCH so far (since the last reset or mark)."""
        ...

    def mark(self) -> None:
        """Start ``patch_log`` afresh (after a warm-up)."""
        ...


# ------------------------------------------------------------------------------------ fakes


class BenchConsul(FakeConsul):
    """``FakeConsul`` with a bulk loader: ``add_instance`` is O(fleet) per call (it rescans every
    node and check), which makes 10,000 servers take minutes to register. ``load_fleet`` builds
    the same records directly; ``equivalent_to_add_instance`` checks it against the slow path."""

    def load_fleet(self, statuses: list[str]) -> None:
        for n, status in enumerate(statuses):
            spec = fleet_entry(n, status)
            node, instance_id = spec["node"], spec["instance_id"]
            self._nodes[node] = fake_consul._Node(
                name=node,
                id=f"00000000-0000-4000-8000-{n:012d}",
                address=spec["address"],
                meta={},
            )
            self._index += 1
            self._checks[fake_consul._check_key(node, "serfHealth")] = fake_consul._Check(
                id="serfHealth",
                node=node,
                name="Serf Health Status",
                status="passing",
                create_index=self._index,
                modify_index=self._index,
            )
            self._instances[instance_id] = fake_consul._Instance(
                id=instance_id,
                service=SERVICE,
                node=node,
                address=spec["address"],
                port=9001,
                tags=[],
                meta=spec["meta"],
                create_index=self._index,
                modify_index=self._index,
            )
            self._checks[fake_consul._check_key(node, f"service:{instance_id}")] = fake_consul._Check(
                id=f"service:{instance_id}",
                node=node,
                name=f"Service '{SERVICE}' check",
                status=status,
                service_id=instance_id,
                type="script",
                create_index=self._index,
                modify_index=self._index,
            )
        self._write({SERVICE}, catalog=True)

    def set_status_fast(self, instance_id: str, status: str) -> None:
        """``set_status`` for a fleet from ``load_fleet`` (one service check, on the server's node)."""
        instance = self._instances[instance_id]
        check = self._checks[fake_consul._check_key(instance.node, f"service:{instance_id}")]
        self._set_check(check, status, "")


def equivalent_to_add_instance(size: int = 6) -> bool:
    """Does ``load_fleet`` give the same health answer as ``add_instance`` (indexes and node IDs aside)?"""

    def strip(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            entry["Node"].pop("ID")
            for part in [entry["Service"], *entry["Checks"]]:
                part.pop("CreateIndex")
                part.pop("ModifyIndex")
        return entries

    statuses = ["passing", "warning", "critical"] * (size // 3 + 1)
    bulk, slow = BenchConsul(), FakeConsul()
    bulk.load_fleet(statuses[:size])
    for n, status in enumerate(statuses[:size]):
        spec = fleet_entry(n, status)
        slow.add_node(spec["node"], address=spec["address"])
        slow.add_instance(
            SERVICE,
            instance_id=spec["instance_id"],
            node=spec["node"],
            address=spec["address"],
            port=9001,
            meta=spec["meta"],
            status=status,
        )
    return strip(bulk._entries(SERVICE, passing=False)) == strip(slow._entries(SERVICE, passing=False))


class FakeConsulSide:
    """The in-process ``FakeConsul`` (the harness's own event loop serves it)."""

    def __init__(self, consul: BenchConsul) -> None:
        self.consul = consul
        self.url = consul.url

    async def load(self, statuses: list[str]) -> None:
        self.consul.load_fleet(statuses)
        # The fleet lives as long as the run: keep the collector from re-scanning it (in this
        # harness process only; the daemon is measured as it is).
        gc.collect()
        gc.freeze()

    async def set_status(self, instance_id: str, status: str) -> float:
        started = time.perf_counter()
        self.consul.set_status_fast(instance_id, status)
        return started

    async def idle(self) -> None:
        await asyncio.wait_for(self.consul.wait_parked(SERVICE), 30)

    def health_queries(self) -> int | None:
        return self.consul.request_counts["health.service"]

    def cpu(self) -> float | None:
        return None


class FakeKubeSide:
    """The in-process ``FakeKubernetes``; a PATCH is timed when the fake has read its body."""

    def __init__(self, kube: FakeKubernetes, workdir: Path) -> None:
        self.kube = kube
        self.kubeconfig = kube.kubeconfig(workdir / "kubeconfig", namespace=NAMESPACE)
        self.scale_url = f"{kube.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/bolina/scale"
        self.token = kube.token
        self._since = 0

    async def reset(self, replicas: int) -> None:
        self.kube.add_deployment(NAMESPACE, "bolina", replicas=replicas, labels={"app": "bolina"})
        self._since = len(self.kube.requests)

    def next_patch(self) -> Awaitable[float]:
        arrival = asyncio.ensure_future(self.kube.next_request(method="PATCH", path_contains="/scale"))
        stamped: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def stamp(_: object) -> None:  # runs in the loop turn right after the arrival
            if not stamped.done():
                stamped.set_result(time.perf_counter())

        arrival.add_done_callback(stamp)
        return stamped

    def mark(self) -> None:
        self._since = len(self.kube.requests)

    def patch_log(self) -> list[int]:
        return [
            int(r.body["spec"]["replicas"])
            for r in self.kube.requests[self._since :]
            if r.method == "PATCH" and r.status == 200
        ]


# -------------------------------------------------------------------------------- real Consul


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class RealConsulSide:
    """A real single-server Consul agent on 127.0.0.1; servers are catalog registrations, one node
    each (as with one Consul client agent per pod), and status writes are catalog check updates.

    Not ``consul agent -dev``: a dev agent indents every JSON answer (1,609 bytes per health entry
    instead of 749, measured on 1.14.11), which no production agent does; the daemon would be
    measured reading twice the bytes users' agents send.
    """

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._datadir = Path(tempfile.mkdtemp(prefix="bench-consul-"))
        self._specs: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> RealConsulSide:
        http, serf_lan, serf_wan, server = free_ports(4)
        self._process = await asyncio.create_subprocess_exec(
            *[
                str(self.binary), "agent", "-server", "-bootstrap-expect=1", f"-data-dir={self._datadir}",
                "-node=bench", "-bind=127.0.0.1", "-client=127.0.0.1",
                f"-http-port={http}", "-dns-port=-1", "-grpc-port=-1", f"-serf-lan-port={serf_lan}",
                f"-serf-wan-port={serf_wan}", f"-server-port={server}", "-log-level=warn",
                "-hcl", "limits { http_max_conns_per_client = 1000 }",
            ],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{http}"
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self._session.get(f"{self.url}/v1/status/leader") as response:
                    if response.status == 200 and (await response.json()) not in ("", None):
                        return self
            await asyncio.sleep(0.2)
        raise RuntimeError("consul agent did not elect itself leader within 60 s")

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 20)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        shutil.rmtree(self._datadir, ignore_errors=True)

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "version"], capture_output=True, text=True, timeout=30, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "consul (unknown version)"

    async def _put(self, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        async with self._session.put(f"{self.url}{path}", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"consul {path}: HTTP {response.status}: {await response.text()}")

    async def load(self, statuses: list[str]) -> None:
        """Replace the fleet (deregister the previous nodes) and register this one, 32 at a time."""
        gone = [spec["node"] for spec in self._specs.values()]
        self._specs.clear()
        limit = asyncio.Semaphore(32)

        async def deregister(node: str) -> None:
            async with limit:
                await self._put("/v1/catalog/deregister", {"Node": node})

        await asyncio.gather(*(deregister(node) for node in gone))

        async def register(n: int, status: str) -> None:
            spec = fleet_entry(n, status)
            self._specs[spec["instance_id"]] = spec
            body = {
                "Node": spec["node"],
                "Address": spec["address"],
                "Service": self._service(spec),
                # No serfHealth: the leader reaps catalog nodes that have one but are not Serf
                # members (its reconcile loop), as it would a node whose agent left.
                "Checks": [self._check(spec["instance_id"], status)],
            }
            async with limit:
                await self._put("/v1/catalog/register", body)

        await asyncio.gather(*(register(n, status) for n, status in enumerate(statuses)))

    @staticmethod
    def _service(spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "ID": spec["instance_id"],
            "Service": SERVICE,
            "Address": spec["address"],
            "Port": 9001,
            "Meta": spec["meta"],
        }

    @staticmethod
    def _check(instance_id: str, status: str) -> dict[str, Any]:
        return {
            "CheckID": f"service:{instance_id}",
            "Name": f"Service '{SERVICE}' check",
            "Status": status,
            "ServiceID": instance_id,
        }

    async def set_status(self, instance_id: str, status: str) -> float:
        spec = self._specs[instance_id]
        # The service goes along with its check (unchanged, so Consul does not rewrite it): a
        # check-only write once failed with "Unknown service ID" right after a fleet reload.
        body = {
            "Node": spec["node"],
            "Address": spec["address"],
            "SkipNodeUpdate": True,
            "Service": self._service(spec),
            "Check": self._check(instance_id, status),
        }
        started = time.perf_counter()
        await self._put("/v1/catalog/register", body)
        return started

    async def idle(self) -> None:
        await asyncio.sleep(0.05)  # a real agent does not say who is parked

    def health_queries(self) -> int | None:
        return None

    def cpu(self) -> float | None:
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
