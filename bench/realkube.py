"""A real kube-apiserver (with its etcd) for the benchmark, when tools/testbin has built them.

Does I/O: starts ``etcd`` and ``kube-apiserver`` from ``.testbin/bin`` on 127.0.0.1 (static
token, RBAC with ``system:masters``, self-signed serving certificate, no controller manager: the
Deployment's scale subresource works without pods). A PATCH is timed when the harness's own
watch on the Deployment delivers the change, so these rows include the API server's etcd write
and watch fan-out (a few milliseconds) for the daemon and the floor alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.backends import NAMESPACE, TESTBIN, free_ports

__all__ = ["RealKubeSide", "kube_binaries"]

TOKEN = "bolina-bench-token"


def kube_binaries() -> tuple[Path, Path] | None:
    etcd, apiserver = TESTBIN / "etcd", TESTBIN / "kube-apiserver"
    return (etcd, apiserver) if etcd.is_file() and apiserver.is_file() else None


class RealKubeSide:
    def __init__(self, etcd: Path, apiserver: Path, workdir: Path) -> None:
        self._binaries = (etcd, apiserver)
        self._dir = Path(tempfile.mkdtemp(prefix="bench-kube-"))
        self._processes: list[asyncio.subprocess.Process] = []
        self._session: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[float]] = []
        self._log: list[int] = []
        self._replicas: int | None = None
        self.url = ""
        self.token = TOKEN
        self.kubeconfig = workdir / "real-kubeconfig"
        self.scale_url = ""

    def version(self) -> str:
        return "kube-apiserver v1.35.4 (tools/testbin pin), etcd embedded v3"

    async def __aenter__(self) -> RealKubeSide:
        etcd, apiserver = self._binaries
        client, peer, secure = free_ports(3)
        (self._dir / "tokens.csv").write_text(f"{TOKEN},bench,bench-uid,system:masters\n")
        key = self._dir / "sa.key"
        openssl = await asyncio.create_subprocess_exec(
            "openssl", "genrsa", "-out", str(key), "2048",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await openssl.wait()
        etcd_args = [
            f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
        ]
        apiserver_args = [
            f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure}",
            f"--cert-dir={self._dir / 'certs'}",
            f"--token-auth-file={self._dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={key}",
            f"--service-account-signing-key-file={key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount",
        ]
        for binary, args in ((etcd, etcd_args), (apiserver, apiserver_args)):
            with (self._dir / f"{binary.name}.log").open("wb") as log:
                process = await asyncio.create_subprocess_exec(str(binary), *args, stdout=log, stderr=log)
            self._processes.append(process)
        self.url = f"https://127.0.0.1:{secure}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        self._session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(ssl=False))
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self._session.get(f"{self.url}/readyz") as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready within 120 s; see {self._dir}/apiserver.log")
            await asyncio.sleep(0.5)
        await self._create()
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "bench", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
                    "users": [{"name": "bench", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                    "current-context": "bench",
                }
            )
        )
        base = f"{self.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        self.scale_url = f"{base}/bolina/scale"
        self._watch = asyncio.create_task(self._follow(base))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._session is not None:
            await self._session.close()
        for process in reversed(self._processes):
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _request(self, method: str, url: str, body: Any, content_type: str = "application/json") -> Any:
        assert self._session is not None
        data = json.dumps(body).encode()
        async with self._session.request(method, url, data=data, headers={"Content-Type": content_type}) as r:
            answer = await r.json(content_type=None)
            if r.status >= 300 and r.status != 409:
                raise RuntimeError(f"{method} {url}: HTTP {r.status}: {answer}")
            return answer

    async def _create(self) -> None:
        await self._request("POST", f"{self.url}/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        labels = {"app": "bolina"}
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bolina", "labels": labels},
            "spec": {
                "replicas": 10,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "bolina", "image": "bolina:bench"}]},
                },
            },
        }
        await self._request("POST", f"{self.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments", deployment)

    async def _follow(self, base: str) -> None:
        """Watch the Deployment; every change of spec.replicas resolves the waiting futures."""
        assert self._session is not None
        params = {"watch": "true", "fieldSelector": "metadata.name=bolina", "allowWatchBookmarks": "false"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        while True:
            async with self._session.get(base, params=params, timeout=timeout) as response:
                async for line in response.content:
                    seen = time.perf_counter()
                    event = json.loads(line)
                    replicas = event.get("object", {}).get("spec", {}).get("replicas")
                    if event.get("type") != "MODIFIED" or replicas == self._replicas:
                        self._replicas = replicas
                        continue
                    self._replicas = replicas
                    self._log.append(int(replicas))
                    waiters, self._waiters = self._waiters, []
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(seen)

    async def reset(self, replicas: int) -> None:
        if self._replicas != replicas:
            changed = self.next_patch()
            await self._request(
                "PATCH", self.scale_url, {"spec": {"replicas": replicas}}, "application/merge-patch+json"
            )
            await asyncio.wait_for(changed, 30)
        self._log.clear()

    def next_patch(self) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def mark(self) -> None:
        self._log.clear()

    def patch_log(self) -> list[int]:
        return list(self._log)
