"""Real servers for the integration tests: Consul, etcd, kube-apiserver, controller-manager,
scheduler, kwok, the real ``bolina-scaler run`` process, and a fault-injecting proxy.

Everything binds to 127.0.0.1 on free ports, lives in a temporary directory, runs in its own
process group, and is stopped by whoever started it (fixtures, with ``finally``); anything
still alive at interpreter exit is killed by ``kill_leftovers``. The command lines are the
ones ``tools/testbin/README.md`` documents (and ``tools/testbin/smoke.sh`` runs).

Helpers here are synchronous (``subprocess``, ``urllib``); the fault proxy runs its own event
loop in a thread, so the tests are plain functions that poll for conditions with deadlines.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
TESTBIN = Path(os.environ.get("BOLINA_TESTBIN") or ROOT / ".testbin")
BIN = TESTBIN / "bin"
KWOK_STAGES = TESTBIN / "share" / "kwok-stages.yaml"
KUBECTL = Path(os.environ.get("KUBECTL") or ROOT / ".venv" / "bin" / "kubectl")
BINARIES = ("consul", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

_T = TypeVar("_T")


def missing_binaries() -> list[str]:
    """Paths the integration tests need that do not exist (empty: all there)."""
    wanted = [BIN / name for name in BINARIES] + [KWOK_STAGES, KUBECTL]
    return [str(path) for path in wanted if not (path.is_file() and os.access(path, os.R_OK))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Timeout(AssertionError):
    pass


def wait_until(
    condition: Callable[[], _T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], str | None] | None = None,
) -> _T:
    """Poll ``condition`` every ``interval`` until it returns something truthy; fail after ``timeout``.

    ``alive`` returns a problem (e.g. "consul exited: <log tail>") to fail early.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:  # a poll that fails is a "not yet"
            value, last_error = None, exc
        if value:
            return value
        if alive is not None:
            problem = alive()
            if problem:
                raise Timeout(f"while waiting for {what}: {problem}")
        if time.monotonic() >= deadline:
            extra = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


# ------------------------------------------------------------------------------ processes

_LIVE: set[Proc] = set()


class Proc:
    """A child in its own process group, output appended to ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} already running"
        with self.log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=self.log.parent,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exited(self) -> str | None:
        """For ``wait_until(alive=...)``: a problem when the process is gone."""
        if self.running():
            return None
        code = None if self.popen is None else self.popen.returncode
        return f"{self.name} exited with {code}; log tail:\n{self.tail()}"

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def send(self, signum: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the group, wait ``timeout``, then SIGKILL; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.send(signal.SIGCONT)  # a SIGSTOPped process cannot handle SIGTERM
            self.send(signum)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group
        _LIVE.discard(self)
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@atexit.register
def kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(signal.SIGKILL)


# ------------------------------------------------------------------------------------ HTTP


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
    content_type: str = "application/json",
) -> Answer:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", content_type)
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return Answer(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), dict(exc.headers or {}))


# ---------------------------------------------------------------------------------- Consul

SCALER_POLICY = """
service "bolina" { policy = "read" }
node_prefix "" { policy = "read" }
"""


class ConsulAgent:
    """``consul agent -dev`` with ACLs on (default deny), a management token, and helpers to
    play Bolina servers (service registrations with TTL checks) in it."""

    def __init__(
        self,
        workdir: Path,
        *,
        http_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        default_token: bool = False,
    ) -> None:
        """``default_token``: anonymous requests (and services defined in config files, which the
        agent syncs with the default token) act with the management token."""
        self.dir = workdir
        self.extra_args = extra_args
        self.default_token = default_token
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.ports = {"serf_lan": free_port(), "serf_wan": free_port(), "server": free_port()}
        self.token = str(uuid.uuid4())
        self.proc: Proc | None = None
        self.scaler_token_file = self.dir / "scaler-consul-token"
        self.services: dict[str, dict[str, Any]] = {}
        """What this test registered (so a restarted -dev agent can be given it again)."""
        self.external: dict[str, str] = {}
        """Servers registered in the catalog on external nodes (``register_external``): id → node."""

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def argv(self) -> list[str]:
        p = self.ports
        acl = (
            "acl { enabled = true\n"
            'default_policy = "deny"\n'
            "enable_token_persistence = false\n"
            f'tokens {{ initial_management = "{self.token}"\n'
            f'agent = "{self.token}"\n' + (f'default = "{self.token}"\n' if self.default_token else "") + "} }"
        )
        return [
            str(BIN / "consul"), "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
            f"-http-port={self.http_port}", "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
            f"-serf-lan-port={p['serf_lan']}", f"-serf-wan-port={p['serf_wan']}", f"-server-port={p['server']}",
            f"-data-dir={self.dir / 'data'}", "-log-level=warn", f"-hcl={acl}", *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout: float = 60.0) -> float:
        """Start (or restart) and wait for a leader and working ACLs; returns seconds taken."""
        started = time.monotonic()
        if self.proc is None:
            self.proc = Proc("consul", self.argv(), self.dir / "consul.log")
        else:
            self.proc.start()
        leader = f'"127.0.0.1:{self.ports["server"]}"'
        wait_until(
            lambda: http("GET", f"{self.address}/v1/status/leader", timeout=2).body.decode().strip() == leader,
            timeout=timeout,
            what="consul leader",
            alive=self.proc.exited,
        )
        # The ACL system needs a moment after leadership (bootstrap of the management token).
        wait_until(
            lambda: self.api("GET", "/v1/acl/token/self").status == 200,
            timeout=timeout,
            what="consul ACLs ready",
            alive=self.proc.exited,
        )
        self._scaler_token()
        return time.monotonic() - started

    def _scaler_token(self) -> None:
        """A least-privilege token for the scaler (read the bolina service and nodes), in a file."""
        policy = self.api("PUT", "/v1/acl/policy", {"Name": "bolina-scaler", "Rules": SCALER_POLICY})
        assert policy.status == 200, policy
        secret = str(uuid.uuid4())
        token = self.api("PUT", "/v1/acl/token", {"SecretID": secret, "Policies": [{"Name": "bolina-scaler"}]})
        assert token.status == 200, token
        self.scaler_token_file.write_text(secret + "\n")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.stop(signum)

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Answer:
        return http(method, f"{self.address}{path}", body=body, headers={"X-Consul-Token": self.token}, timeout=timeout)

    def index(self, service: str = "bolina") -> int:
        return int(self.api("GET", f"/v1/health/service/{service}").headers["X-Consul-Index"])

    # -- Bolina servers ------------------------------------------------------------------

    def register(self, server_id: str, *, status: str = "passing", pod: str | None = None, n: int = 0) -> None:
        """Register one Bolina server as the convention says: service bolina, a TTL check."""
        registration = {
            "Name": "bolina",
            "ID": server_id,
            "Address": f"127.0.{n // 250}.{n % 250 + 1}",
            "Port": 9001,
            "Meta": {"server_id": server_id, "udp_port": "9002", "pod": pod or server_id},
            "Check": {"CheckID": f"service:{server_id}", "Name": "Bolina availability", "TTL": "10m", "Status": status},
        }
        answer = self.api("PUT", "/v1/agent/service/register", registration)
        assert answer.status == 200, answer
        self.services[server_id] = registration

    def set_status(self, server_id: str, status: str) -> None:
        answer = self.api("PUT", f"/v1/agent/check/update/service:{server_id}", {"Status": status, "Output": status})
        assert answer.status == 200, answer
        self.services[server_id]["Check"]["Status"] = status

    def deregister(self, server_id: str) -> None:
        answer = self.api("PUT", f"/v1/agent/service/deregister/{server_id}")
        assert answer.status == 200, answer
        self.services.pop(server_id, None)

    def reregister_all(self) -> None:
        for registration in list(self.services.values()):
            assert self.api("PUT", "/v1/agent/service/register", registration).status == 200

    def txn(self, operations: list[dict[str, Any]]) -> None:
        """Catalog writes in transactions of at most 64 operations (Consul's limit per transaction)."""
        for start in range(0, len(operations), 64):
            answer = self.api("PUT", "/v1/txn", operations[start : start + 64], timeout=60)
            assert answer.status == 200, answer

    def register_external(self, servers: dict[str, str], *, per_node: int = 100) -> None:
        """Register many servers at once in the catalog (external nodes, no agent, no serfHealth): each
        a ``bolina`` service with its own check in the given status. For large fleets, fast."""
        operations: list[dict[str, Any]] = []
        for n, (server_id, status) in enumerate(servers.items()):
            node = f"ext-{n // per_node}"
            if n % per_node == 0:
                address = f"10.{n // 65536 % 256}.{n // 256 % 256}.1"
                operations.append({"Node": {"Verb": "set", "Node": {"Node": node, "Address": address}}})
            service = {
                "ID": server_id,
                "Service": "bolina",
                "Port": 9001,
                "Address": f"10.9.{n // 250 % 250}.{n % 250}",
                "Meta": {"server_id": server_id, "udp_port": "9002"},
            }
            operations.append({"Service": {"Verb": "set", "Node": node, "Service": service}})
            operations.append({"Check": {"Verb": "set", "Check": self._check(node, server_id, status)}})
        self.txn(operations)
        self.external.update({server_id: f"ext-{n // per_node}" for n, server_id in enumerate(servers)})

    def set_external(self, server_id: str, status: str) -> None:
        """One external server's check to ``status`` (a catalog write: one new index)."""
        node = self.external[server_id]
        self.txn([{"Check": {"Verb": "set", "Check": self._check(node, server_id, status)}}])

    @staticmethod
    def _check(node: str, server_id: str, status: str) -> dict[str, Any]:
        return {"Node": node, "CheckID": f"service:{server_id}", "Name": "Bolina availability", "Status": status,
                "ServiceID": server_id, "Output": status}  # fmt: skip

    def statuses(self) -> dict[str, str]:
        entries = self.api("GET", "/v1/health/service/bolina").json()
        return {e["Service"]["ID"]: e["Checks"][-1]["Status"] for e in entries}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONSUL_HTTP_ADDR": self.address, "CONSUL_HTTP_TOKEN": self.token}
        return subprocess.run([str(BIN / "consul"), *args], env=env, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------ Kubernetes


class Kube:
    """Plain REST calls to the API server with one bearer token (admin or a ServiceAccount's)."""

    def __init__(self, server: str, ca_file: Path, token: str) -> None:
        self.server, self.token = server, token
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> Answer:
        return http(
            method,
            f"{self.server}{path}",
            body=body,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            context=self.context,
            content_type=content_type,
            timeout=10,
        )

    def scale(self, ns: str, name: str = "bolina") -> int:
        answer = self.call("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale")
        assert answer.status == 200, answer
        return int(answer.json()["spec"].get("replicas") or 0)

    def patch_scale(self, ns: str, replicas: int, name: str = "bolina") -> Answer:
        return self.call(
            "PATCH",
            f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale",
            {"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def pods(self, ns: str, selector: str = "app=bolina") -> list[dict[str, Any]]:
        answer = self.call("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")
        assert answer.status == 200, answer
        return list(answer.json()["items"])

    def running_pods(self, ns: str) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.pods(ns)
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        )

    def ready(self) -> bool:
        try:
            return self.call("GET", "/readyz").body.strip() == b"ok"
        except (OSError, ssl.SSLError):
            return False


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok with fake nodes."""

    def __init__(self, workdir: Path, *, nodes: int = 1) -> None:
        self.dir = workdir
        self.pki = workdir / "pki"
        self.pki.mkdir(parents=True)
        self.ports = {name: free_port() for name in ("etcd", "etcd_peer", "api", "kcm", "sched")}
        self.admin_token = secrets.token_hex(16)
        self.kubeconfig = workdir / "kubeconfig"
        self.ca_file = self.pki / "apiserver" / "apiserver.crt"
        self.procs: dict[str, Proc] = {}
        self.nodes = nodes
        self._admin: Kube | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['api']}"

    @property
    def admin(self) -> Kube:
        if self._admin is None:
            self._admin = Kube(self.server, self.ca_file, self.admin_token)
        return self._admin

    def start(self) -> None:
        d, p = self.dir, self.ports
        subprocess.run(["openssl", "genrsa", "-out", str(self.pki / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(self.pki / "sa.key"), "-pubout", "-out", str(self.pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (self.pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        self.procs["etcd"] = Proc(
            "etcd",
            [
                str(BIN / "etcd"), f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd_peer']}",
                "--unsafe-no-fsync",
            ],
            d / "etcd.log",
        )  # fmt: skip
        wait_until(
            lambda: b'"health":"true"' in http("GET", f"http://127.0.0.1:{p['etcd']}/health", timeout=2).body,
            timeout=60,
            what="etcd /health",
            alive=self.procs["etcd"].exited,
        )
        self.procs["kube-apiserver"] = Proc("kube-apiserver", self.apiserver_argv(), d / "kube-apiserver.log")
        self.kubeconfig.write_text(
            kubeconfig_text(self.server, self.ca_file, self.admin_token, user="admin", namespace="default")
        )
        self.wait_apiserver()
        for name, port in (("kube-controller-manager", p["kcm"]), ("kube-scheduler", p["sched"])):
            argv = [
                str(BIN / name),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
            ]
            if name == "kube-controller-manager":
                argv += [
                    "--controllers=*",
                    f"--service-account-private-key-file={self.pki / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                ]
            self.procs[name] = Proc(name, argv, d / f"{name}.log")
        self.procs["kwok"] = Proc(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
            ],
            d / "kwok.log",
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        for name, port in (("kube-controller-manager", p["kcm"]), ("kube-scheduler", p["sched"])):
            wait_until(
                lambda port=port: (
                    http("GET", f"https://127.0.0.1:{port}/healthz", context=insecure, timeout=2).body == b"ok"
                ),
                timeout=60,
                what=f"{name} /healthz",
                alive=self.procs[name].exited,
            )
        for n in range(self.nodes):
            self.kubectl_apply(fake_node(f"kwok-node-{n}"))
        for n in range(self.nodes):
            wait_until(
                lambda n=n: any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in self.admin.call("GET", f"/api/v1/nodes/kwok-node-{n}")
                    .json()["status"]
                    .get("conditions", [])
                ),
                timeout=60,
                what=f"kwok-node-{n} Ready",
                alive=self.procs["kwok"].exited,
            )

    def apiserver_argv(self) -> list[str]:
        p, pki = self.ports, self.pki
        return [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={p['api']}",
            f"--cert-dir={pki / 'apiserver'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
        ]  # fmt: skip

    def wait_apiserver(self, timeout: float = 120.0) -> None:
        wait_until(
            lambda: self.ca_file.is_file() and self.admin.ready(),
            timeout=timeout,
            what="kube-apiserver /readyz",
            alive=self.procs["kube-apiserver"].exited,
        )

    def restart_apiserver(self, *, down_for: float = 0.0, during: Callable[[], None] | None = None) -> float:
        """Stop the API server (SIGTERM), run ``during``, start it again on the same port with the same
        certificates and keys; returns the seconds from the restart until ``/readyz`` said ok."""
        api = self.procs["kube-apiserver"]
        api.stop()
        try:
            if during is not None:
                during()
            time.sleep(down_for)
        finally:  # the other tests share this API server: it comes back whatever ``during`` did
            started = time.monotonic()
            api.start()
            self.wait_apiserver()
        return time.monotonic() - started

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop()

    def kubectl(
        self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(KUBECTL), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def kubectl_apply(
        self, objects: list[dict[str, Any]] | dict[str, Any], *, manager: str = "integration-test"
    ) -> None:
        docs = objects if isinstance(objects, list) else [objects]
        self.kubectl("apply", "--server-side", f"--field-manager={manager}", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def sa_token(self, ns: str, name: str = "bolina-scaler", duration: str = "2h") -> str:
        """A TokenRequest for the ServiceAccount (what the kubelet projects into the pod)."""
        return self.kubectl("-n", ns, "create", "token", name, f"--duration={duration}").stdout.strip()


def kubeconfig_text(server: str, ca_file: Path, token: str, *, user: str, namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user, "namespace": namespace}}],
            "current-context": "local",
        }
    )


def fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }


# ------------------------------------------------------------------------------ manifests

SHIPPED = {
    ("Namespace", "bolina"),
    ("Deployment", "bolina"),
    ("ServiceAccount", "bolina-scaler"),
    ("Role", "bolina-scaler"),
    ("RoleBinding", "bolina-scaler"),
}


def grant_status_annotation(kube: KubeCluster, namespace: str) -> None:
    """Patch the shipped Role as manifests/components/status-annotation does (its own JSON patch):
    the scaler may then write the opt-in bolina-scaler/status annotation."""
    component = ROOT / "manifests" / "components" / "status-annotation" / "kustomization.yaml"
    (patch,) = yaml.safe_load(component.read_text())["patches"]
    grant = json.dumps(yaml.safe_load(patch["patch"]))
    kube.kubectl("-n", namespace, "patch", "role", "bolina-scaler", "--type=json", "-p", grant)


def render_manifests() -> list[dict[str, Any]]:
    """``kubectl kustomize manifests/overlays/dev``: the objects this project ships."""
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "manifests" / "overlays" / "dev")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def scaler_objects(rendered: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The Namespace, the bolina Deployment and the scaler's RBAC from the dev overlay, moved to
    ``namespace`` (as another overlay with ``namespace:`` would), everything else left out."""
    picked = []
    for doc in rendered:
        if (doc["kind"], doc["metadata"]["name"]) not in SHIPPED:
            continue
        doc = json.loads(json.dumps(doc))  # deep copy
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        else:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
        picked.append(doc)
    assert {(d["kind"], d["metadata"]["name"]) for d in picked} == {
        (k, namespace if k == "Namespace" else n) for k, n in SHIPPED
    }, "the dev overlay no longer ships the objects this test applies"
    return picked


# --------------------------------------------------------------------------------- scaler


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


SHIPPED_CONFIG: dict[str, Any] = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
"""``config/config.yaml``: what the Kubernetes ConfigMap ships, and what users run."""

# What a test may set without departing from the shipped config: where things are and what they
# are called, the replica bounds, and how the log is written (JSON in a pod anyway: not a TTY).
NEUTRAL_KEYS = frozenset(
    {
        "consul.address",
        "consul.token_file",
        "consul.service",
        "kubernetes.namespace",
        "kubernetes.kubeconfig",
        "kubernetes.deployment",
        "http.host",
        "http.port",
        "policy.min_replicas",
        "policy.max_replicas",
        "leader_election.identity",
        "logging.format",
        "logging.level",
    }
)

# The fault matrix runs the shipped config (docs/reliability.md names every departure per row).
BASE_CONFIG: dict[str, Any] = deep_merge(
    SHIPPED_CONFIG,
    {"policy": {"max_replicas": 12}, "http": {"host": "127.0.0.1"}, "logging": {"format": "json"}},
)

# The end-to-end tests walk the policy through scale-ups and scale-downs in real time: their
# windows are seconds, not minutes. They check behaviour, and publish no figure.
FAST_POLICY: dict[str, Any] = {
    "policy": {
        "min_replicas": 1,
        "target_available_ratio": 0.5,
        "scale_down_ratio": 0.8,
        "scale_down_stabilization": "3s",
        "scale_down_max_load": None,
        "startup_grace": "60s",
        "scale_up": {"max_step": 4, "max_percent": 0, "period": "1s"},
        "scale_down": {"max_step": 1, "max_percent": 0, "period": "1s"},
        "mass_change": {"ratio": 0.5, "min_fleet": 1000, "confirmation": "3s"},
    },
    "leader_election": {"lease_duration": "6s", "renew_deadline": "4s", "retry_period": "1s"},
    # A Retry-After must stay below renew_deadline − retry_period (config validation).
    "kubernetes": {"retry_after_max": "2s"},
}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def departures(config: dict[str, Any]) -> list[str]:
    """The settings of ``config`` that differ from the shipped config, beyond the neutral keys."""
    shipped, given = _flatten(SHIPPED_CONFIG), _flatten(config)
    return sorted(
        f"{key} {given.get(key)}"
        for key in set(shipped) | set(given)
        if key not in NEUTRAL_KEYS and given.get(key) != shipped.get(key)
    )


_COUNTER = itertools.count()


class Scaler:
    """The real ``bolina-scaler run --config PATH`` process (``python -m bolina_scaler``)."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, nofile: int | None = None) -> None:
        """``nofile``: run it with this file-descriptor limit (soft and hard), as a container might."""
        self.dir = workdir
        self.nofile = nofile
        self.name = f"scaler-{next(_COUNTER)}"
        self.port = free_port()
        self.config = deep_merge(config, {"http": {"port": self.port}})
        self.config_path = workdir / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log = workdir / f"{self.name}.log"
        self.proc: Proc | None = None
        self._read = 0
        self._lines: list[dict[str, Any]] = []

    def start(self) -> Scaler:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "KUBECONFIG", "KUBERNETES_"))}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-m", "bolina_scaler", "run", "--config", str(self.config_path)]
        if self.nofile is not None:
            # Lower the limit in the child itself, then exec the daemon (same pid): no preexec_fn,
            # which is unsafe while the test runs threads (the Consul proxy's).
            trampoline = (
                "import os, resource, sys; n = int(sys.argv[1]); "
                "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.executable, sys.argv[2:])"
            )
            argv = [sys.executable, "-c", trampoline, str(self.nofile), *argv]
        self.proc = Proc(self.name, argv, self.log, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory_mb(self) -> tuple[float, float]:
        """(resident now, peak resident since start) in MB, from /proc."""
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines() if ":" in line
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def file_limit(self) -> int:
        limits = Path(f"/proc/{self.pid}/limits").read_text().splitlines()
        line = next(line for line in limits if line.startswith("Max open files"))
        return int(line.split()[3])

    def not_json(self) -> list[str]:
        """Lines of the log that are not JSON objects (the harness's own '===' start lines aside)."""
        text = self.log.read_text(errors="replace")
        bad = []
        for raw in text.splitlines():
            if not raw.strip() or raw.startswith("=== "):
                continue
            try:
                ok = isinstance(json.loads(raw), dict)
            except ValueError:
                ok = False
            if not ok:
                bad.append(raw)
        return bad

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Answer:
        return http("GET", f"{self.url}{path}", timeout=5)

    def ready(self) -> bool:
        try:
            return self.get("/readyz").status == 200
        except OSError:
            return False

    def decision(self) -> dict[str, Any] | None:
        try:
            answer = self.get("/v1/decision")
        except OSError:
            return None
        return answer.json() if answer.status == 200 else None

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON log line so far."""
        with contextlib.suppress(OSError), self.log.open("rb") as f:
            f.seek(self._read)
            chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            self._read += cut
            for raw in chunk[:cut].splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict):
                        self._lines.append(line)
        return self._lines

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, what: str, after: int = 0
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((line for line in self.lines()[after:] if predicate(line)), None)

        return wait_until(found, timeout=timeout, what=what, alive=self.exited)

    def exited(self) -> str | None:
        return None if self.proc is None else self.proc.exited()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int | None, float]:
        """Signal it; returns (exit code, seconds until it exited)."""
        assert self.proc is not None
        started = time.monotonic()
        code = self.proc.stop(signum, timeout)
        return code, time.monotonic() - started


# ------------------------------------------------------------------------- the fault proxy


@dataclass
class ProxyFaults:
    """What the proxy does to answers of ``GET /v1/health/service/...`` (everything else passes)."""

    delay: float = 0.0
    corrupt: Callable[[bytes], bytes] | None = None
    cut: bool = False
    """Promise the whole body (Content-Length), send half, then drop the connection."""
    index_offset: int = 0
    """Added to X-Consul-Index of health answers (and taken off the ``index`` the client sends back):
    setting it back to 0 makes the index the client sees go backwards, as after a snapshot restore."""
    stream: Callable[[], Iterator[bytes]] | None = None
    """Replace the body of health answers by these chunks (made on demand: a 200 MB answer is never
    held), with ``stream_headers`` added (e.g. Content-Encoding) and no Content-Length."""
    stream_headers: dict[str, str] = field(default_factory=dict)
    streamed: int = 0
    """Bytes of ``stream`` bodies actually sent so far (what the client read, give or take a buffer)."""
    hits: int = 0
    """Health answers tampered with so far."""
    outage: bool = False
    """Answer every health query 500 "No cluster leader" (what an agent whose servers lost their
    leader answers), at once, including the blocking queries parked when the outage began. Set it
    with ``ConsulProxy.outage`` (thread-safe)."""
    health_requests: list[float] = field(default_factory=list)
    """``time.monotonic()`` of every health query that reached the proxy."""
    good_after_outage: float | None = None
    """``time.monotonic()`` of the first 200 health answer after the last outage ended."""


class _ProxyThread:
    """An asyncio server in its own thread and event loop, for the proxies below: ``with`` starts
    it and returns once it listens, leaving the block stops it. Subclasses write ``_serve``, which
    sets ``self._stopped`` to an ``asyncio.Event``, calls ``self._ready.set()`` once it listens, and
    returns after ``self._stopped`` is set."""

    _what = "proxy"
    port: int

    def __post_init__(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: Any = None
        self._thread = threading.Thread(target=self._run, name=f"{self._what}-{self.port}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the {self._what} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(15)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        raise NotImplementedError


@dataclass
class ConsulProxy(_ProxyThread):
    """An aiohttp reverse proxy in front of the real agent, in its own thread and event loop."""

    upstream: str
    port: int = field(default_factory=free_port)
    faults: ProxyFaults = field(default_factory=ProxyFaults)
    _what = "Consul proxy"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage(self, on: bool) -> float:
        """Begin or end an outage (see ``ProxyFaults.outage``); returns when, on ``time.monotonic()``."""
        at = time.monotonic()
        self.faults.good_after_outage = None
        self.faults.outage = on
        if on:
            self._loop.call_soon_threadsafe(self._outage_began.set)
        else:
            self._loop.call_soon_threadsafe(self._outage_began.clear)
        return at

    async def _serve(self) -> None:
        import asyncio

        import aiohttp
        from aiohttp import web

        self._stopped = asyncio.Event()
        self._outage_began = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)

        def no_leader() -> web.Response:  # a new one each time: an aiohttp Response is sent once
            return web.Response(status=500, text="No cluster leader")

        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def handle(request: web.Request) -> web.StreamResponse:
                faults = self.faults
                health = request.method == "GET" and request.path.startswith("/v1/health/service/")
                if health:
                    faults.health_requests.append(time.monotonic())
                    if faults.outage:
                        return no_leader()
                    proxied = asyncio.ensure_future(forward(request, health))
                    began = asyncio.ensure_future(self._outage_began.wait())
                    try:
                        await asyncio.wait({proxied, began}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (began, proxied):
                            if not task.done():
                                task.cancel()
                        await asyncio.gather(began, proxied, return_exceptions=True)
                    if proxied.cancelled():  # parked when the outage began: it fails now, as the agent's would
                        return no_leader()
                    response = proxied.result()
                    if response.status == 200 and faults.good_after_outage is None:
                        faults.good_after_outage = time.monotonic()
                    return response
                return await forward(request, health)

            async def forward(request: web.Request, health: bool) -> web.StreamResponse:
                faults = self.faults
                url = request.rel_url
                if health and "index" in url.query:
                    index = int(url.query["index"]) - faults.index_offset
                    url = url.update_query(index=str(max(1, index)))
                async with session.request(
                    request.method,
                    f"{self.upstream}{url}",
                    headers={
                        k: v
                        for k, v in request.headers.items()
                        if k.lower() not in {"host", "content-length", "accept-encoding"}
                    },
                    data=await request.read() if request.can_read_body else None,
                ) as upstream:
                    body = await upstream.read()
                    headers = {
                        k: v
                        for k, v in upstream.headers.items()
                        if k.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}
                    }
                    status = upstream.status
                if health and faults.index_offset and "X-Consul-Index" in headers:
                    headers["X-Consul-Index"] = str(int(headers["X-Consul-Index"]) + faults.index_offset)
                if health and faults.delay:
                    # Re-read the delay while waiting: lowering it releases the answers held back.
                    held = time.monotonic()
                    while time.monotonic() - held < faults.delay:  # noqa: ASYNC110 (set from another thread)
                        await asyncio.sleep(0.05)
                if health and faults.stream is not None and status == 200:
                    faults.hits += 1
                    response = web.StreamResponse(status=status, headers={**headers, **faults.stream_headers})
                    await response.prepare(request)
                    try:
                        for chunk in faults.stream():
                            await response.write(chunk)
                            faults.streamed += len(chunk)
                        await response.write_eof()
                    except (ConnectionError, RuntimeError):
                        pass  # the client stopped reading: that is the point
                    return response
                if health and (faults.corrupt is not None or faults.cut):
                    faults.hits += 1
                    if faults.cut:
                        response = web.StreamResponse(status=status, headers=headers)
                        response.content_length = len(body)
                        await response.prepare(request)
                        await response.write(body[: len(body) // 2])
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    assert faults.corrupt is not None
                    body = faults.corrupt(body)
                return web.Response(status=status, body=body, headers=headers)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                await runner.cleanup()


@dataclass
class ApiServerProxy(_ProxyThread):
    """A TCP proxy in front of the kube-apiserver (TLS passes through untouched), in its own thread.

    ``down(True)`` makes the API server unreachable for whoever connects through the proxy: open
    connections are cut and every new one is closed at once (the client sees a connection
    reset, as from a dead API server), while the real API server goes on serving the other
    tests. ``attempts`` records when each connection was tried: with the API server down every
    request is a new connection, so they are the requests the daemon sends while it fails.
    """

    upstream_port: int
    port: int = field(default_factory=free_port)
    attempts: list[float] = field(default_factory=list)
    is_down: bool = False
    _what = "API server proxy"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._open: set[Any] = set()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def down(self, on: bool) -> float:
        """Take the API server away (or give it back); returns when, on ``time.monotonic()``."""
        at = time.monotonic()
        self.is_down = on
        if on:
            self._loop.call_soon_threadsafe(self._cut_all)
        return at

    def _cut_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()

    async def _serve(self) -> None:
        import asyncio

        self._stopped = asyncio.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.attempts.append(time.monotonic())
            if self.is_down:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                writer.transport.abort()
                return
            self._open.update({writer, up_writer})
            try:
                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            finally:
                self._open.difference_update({writer, up_writer})

        server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            self._cut_all()


_EXPIRED: Final = (
    b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
    b'"message":"too old resource version: 1 (2)","reason":"Expired","code":410}}\n'
)
"""The line kube-apiserver sends on a watch whose resourceVersion was compacted away."""


@dataclass
class ApiServerHttpProxy(_ProxyThread):
    """An HTTP reverse proxy in front of the kube-apiserver, in its own thread: the scaler talks plain
    HTTP to it (its kubeconfig points here), it talks HTTPS to the API server with the cluster's CA,
    passing the ServiceAccount's token on, and streams every answer (watches included) as it comes.

    ``break_watches("gone")`` answers each watch of a Deployment with what kube-apiserver sends for
    a resourceVersion too old (a 200, one ``ERROR`` event with the 410 ``Expired`` Status, the end
    of the stream); ``break_watches("close")`` ends each one at once, without an event (a proxy or
    load balancer cutting watches); ``break_watches(None)`` passes them through again. Turning a
    fault on cuts the watches open through the proxy, so the next ones meet it. ``refuse(...)``
    answers the next matching request itself, with a status, a ``Retry-After`` sent verbatim and
    a Status body as kube-apiserver words it (``refused`` records when). ``requests`` holds
    ``(time.monotonic(), what)`` of every request (``what``: ``WATCH <path>`` or ``<method> <path>``).
    """

    upstream: str
    ca_file: Path
    port: int = field(default_factory=free_port)
    requests: list[tuple[float, str]] = field(default_factory=list)
    watch_fault: str | None = None
    broken: int = 0
    """Watches answered with the fault so far."""
    _what = "API server HTTP proxy"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._watches: set[Any] = set()
        self._refusals: list[list[Any]] = []
        self.refused: list[tuple[float, str]] = []

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def break_watches(self, how: str | None) -> float:
        """Start (``gone``, ``close``) or end (None) the fault; returns when, on ``time.monotonic()``."""
        at = time.monotonic()
        self.watch_fault = how
        if how is not None:
            self._loop.call_soon_threadsafe(self._cut_watches)
        return at

    def _cut_watches(self) -> None:
        for transport in list(self._watches):
            transport.abort()

    def refuse(self, method: str, path_ending: str, *, status: int, retry_after: str | None, count: int = 1) -> None:
        """Answer the next ``count`` requests ``method`` on a path ending in ``path_ending`` with
        ``status`` (and ``Retry-After: retry_after``) instead of passing them on."""
        self._refusals.append([method, path_ending, status, retry_after, count])

    def times(self, *, deployment: bool = False) -> list[float]:
        """When requests arrived (``deployment``: only the Deployment's GETs and watches)."""
        return [t for t, what in self.requests if not deployment or _about_the_deployment(what)]

    async def _serve(self) -> None:
        import asyncio

        import aiohttp
        from aiohttp import web

        self._stopped = asyncio.Event()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        dropped = {"host", "content-length", "accept-encoding", "transfer-encoding", "connection"}

        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

            async def handle(request: web.Request) -> web.StreamResponse:
                watch = request.query.get("watch") in {"true", "1"}
                self.requests.append((time.monotonic(), f"{'WATCH' if watch else request.method} {request.path}"))
                for refusal in self._refusals:
                    method, ending, status, retry_after, left = refusal
                    if left > 0 and request.method == method and request.path.endswith(ending) and not watch:
                        refusal[4] -= 1
                        self.refused.append((time.monotonic(), f"{method} {request.path}"))
                        reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(status, "InternalError")
                        status_body = {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "message": "the server is currently unable to handle the request (injected by the proxy)",
                            "reason": reason,
                            "code": status,
                        }
                        extra = {} if retry_after is None else {"Retry-After": retry_after}
                        return web.json_response(status_body, status=status, headers=extra)
                fault = self.watch_fault
                if watch and fault is not None and "/deployments" in request.path:
                    self.broken += 1
                    response = web.StreamResponse(headers={"Content-Type": "application/json"})
                    await response.prepare(request)
                    if fault == "gone":
                        await response.write(_EXPIRED)
                    await response.write_eof()
                    return response
                headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
                body = await request.read() if request.can_read_body else None
                async with session.request(
                    request.method, f"{self.upstream}{request.rel_url}", headers=headers, data=body, ssl=context
                ) as upstream:
                    answer = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped - {"host"}}
                    response = web.StreamResponse(status=upstream.status, headers=answer)
                    await response.prepare(request)
                    if watch and request.transport is not None:
                        self._watches.add(request.transport)
                    try:
                        async for chunk in upstream.content.iter_any():
                            await response.write(chunk)
                        await response.write_eof()
                    except (ConnectionError, RuntimeError):
                        pass  # the scaler hung up (or the proxy cut the watch)
                    finally:
                        self._watches.discard(request.transport)
                    return response

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                self._cut_watches()
                await runner.cleanup()


def _about_the_deployment(what: str) -> bool:
    """A GET of a Deployment (not its scale) or a watch of Deployments."""
    method, _, path = what.partition(" ")
    return "/deployments" in path and not path.endswith("/scale") and method in {"GET", "WATCH"}


def rate_while(times: list[float], start: float, end: float) -> tuple[float, int]:
    """Mean requests per second in [start, end), and the most in any one-second window."""
    inside = sorted(t for t in times if start <= t < end)
    mean = len(inside) / max(end - start, 1e-9)
    busiest = max((sum(1 for u in inside if t <= u < t + 1.0) for t in inside), default=0)
    return mean, busiest


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    yield lambda: time.monotonic() - started


# ------------------------------------------------------------------ simulated Bolina servers


class Fleet:
    """The simulated Bolina servers: a registration per Running pod of the namespace."""

    def __init__(self, consul: ConsulAgent, ns: Any) -> None:
        self.consul, self.ns = consul, ns
        self.registered: dict[str, str] = {}

    def sync(self, status: str = "passing", *, register: bool = True, only: list[str] | None = None) -> list[str]:
        """Register Running pods not registered yet (with ``status``), deregister vanished ones.

        ``only`` limits the registering to those pods, so that a test can choose the order in which a
        scaler that is already watching sees the fleet fill up. Returns once Consul lists the result.
        """
        running = self.ns.running()
        before = dict(self.registered)
        for pod in sorted(set(self.registered) - set(running)):
            self.consul.deregister(pod)
            del self.registered[pod]
        if register:
            for n, pod in enumerate(running):
                if pod not in self.registered and (only is None or pod in only):
                    self.consul.register(pod, status=status, n=n)
                    self.registered[pod] = status
        if self.registered != before:
            self.wait_listed()
        return running

    def set(self, pods: list[str] | None, status: str) -> None:
        for pod in self.registered if pods is None else pods:
            self.consul.set_status(pod, status)
            self.registered[pod] = status

    def wait_listed(self, *, timeout: float = 10.0) -> None:
        """Wait until the agent's health view lists exactly the registered servers.

        The agent syncs a registration to its catalog just after answering it: before this,
        "Consul's latest index" may be one with a server missing.
        """
        wait_until(
            lambda: self.consul.statuses().keys() == self.registered.keys() or None,
            timeout=timeout,
            what="the fleet listed in Consul",
        )


def decided_at_latest(
    scaler: Any, consul: ConsulAgent, *, timeout: float = 20.0, index_offset: int = 0
) -> dict[str, Any]:
    """Wait until the daemon's last evaluation is of Consul's current index, on trusted data;
    return that decision (``/v1/decision``)."""

    def current() -> dict[str, Any] | None:
        decision = scaler.decision()
        if decision is None:
            return None
        inputs = decision["decision"]["inputs"]
        return decision if inputs["trusted"] and inputs["consul_index"] == consul.index() + index_offset else None

    return wait_until(current, timeout=timeout, what="an evaluation of Consul's current index", alive=scaler.exited)
