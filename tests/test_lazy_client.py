"""``actuator.lazy_client``: the daemon runs without the generated kubernetes_asyncio modules,
and code that asks for them still gets them.

Each case runs in a fresh interpreter: what is imported is process-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_daemon_imports_no_generated_api_or_model() -> None:
    result = _run(
        """
        import json, sys
        import bolina_scaler.cli, bolina_scaler.cli.run, bolina_scaler.daemon.daemon
        generated = [m for m in sys.modules
                     if m.startswith(("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models."))]
        print(json.dumps({"generated": generated,
                          "total": sum(m.startswith("kubernetes_asyncio") for m in sys.modules)}))
        """
    )
    assert result["generated"] == []
    assert isinstance(result["total"], int)
    assert result["total"] < 100


def test_a_name_from_the_generated_modules_still_resolves_after_install() -> None:
    result = _run(
        """
        import json
        import bolina_scaler.actuator.call
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client import CoreV1Api
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p"))
        from kubernetes_asyncio.client.models import V1Lease
        print(json.dumps({"api": CoreV1Api.__name__, "pod": pod.metadata.name, "lease": V1Lease.__name__}))
        """
    )
    assert result == {"api": "CoreV1Api", "pod": "p", "lease": "V1Lease"}


def test_install_changes_nothing_when_the_library_was_imported_first() -> None:
    result = _run(
        """
        import json, sys
        import kubernetes_asyncio
        before = len(sys.modules)
        from bolina_scaler.actuator import lazy_client
        lazy_client.install()
        from kubernetes_asyncio import client
        print(json.dumps({"eager": "kubernetes_asyncio.client.models.v1_pod" in sys.modules,
                          "has_getattr": "__getattr__" in vars(client)}))
        """
    )
    assert result == {"eager": True, "has_getattr": False}


def test_the_config_loaders_work_on_the_lazy_package(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    result = _run(
        f"""
        import asyncio, json, sys
        import bolina_scaler.actuator.call
        from kubernetes_asyncio import config
        from kubernetes_asyncio.client import Configuration
        async def main():
            c = Configuration()
            await config.load_kube_config(config_file={str(kubeconfig)!r}, client_configuration=c)
            return c
        c = asyncio.run(main())
        print(json.dumps({{"host": c.host, "auth": c.api_key.get("BearerToken") or c.api_key.get("authorization"),
                          "generated": "kubernetes_asyncio.client.models.v1_pod" in sys.modules}}))
        """
    )
    assert result["host"] == "https://127.0.0.1:6443"
    assert "t0ken" in str(result["auth"])
    assert result["generated"] is False
