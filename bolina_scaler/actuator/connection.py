"""Connecting to the Kubernetes API: where the credentials come from and which namespace is ours.

Does I/O: reads the pod's service-account files or a kubeconfig and builds one
``kubernetes_asyncio`` ``ApiClient`` that every Kubernetes feature of the daemon shares (scale,
events, leases, pods). The order is the one ``kubectl`` users expect from in-cluster tools:

1. ``kubernetes.kubeconfig`` when configured (with ``kubernetes.context``);
2. the pod's service account (``KUBERNETES_SERVICE_HOST`` + token + ``ca.crt``);
3. ``$KUBECONFIG`` or ``~/.kube/config``.

The namespace is ``kubernetes.namespace``, else the service account's ``namespace`` file (in a
pod), else the kubeconfig context's namespace, else ``default``.

``kubernetes_asyncio`` traps handled here: it reads ``$KUBECONFIG`` once at import time (we read
it when connecting); ``load_kube_config`` rewrites the kubeconfig unless ``persist_config=False``;
exec-plugin tokens expire unless ``refresh_token`` runs in the background (in-cluster tokens are
re-read by the library's own hook); its aiohttp session has ``trust_env=True``, which looks up
``~/.netrc`` and the proxy variables in a worker thread on every request (see ``_api_client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from bolina_scaler.config import KubernetesConfig

__all__ = ["SERVICE_ACCOUNT_DIR", "Connection", "KubeConfigError", "connect"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """No usable credentials; ``str()`` is one line saying what was tried."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """An API client, the namespace to work in, and where both came from (for the startup log)."""

    api_client: Any  # kubernetes_asyncio.client.ApiClient (untyped library)
    namespace: str
    source: str
    _refresher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop refreshing tokens and close the HTTP session."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.api_client.close()


async def connect(
    settings: KubernetesConfig,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """Load credentials in the documented order and build the shared ``ApiClient``."""
    environ = os.environ if environ is None else environ
    if settings.kubeconfig is not None:
        return await _from_kubeconfig(settings, str(settings.kubeconfig), environ)
    in_cluster_problem = "not in a pod (KUBERNETES_SERVICE_HOST is not set)"
    if environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration,
                token_filename=str(service_account_dir / "token"),
                cert_filename=str(service_account_dir / "ca.crt"),
                environ=environ,
            )
        except config.ConfigException as exc:
            in_cluster_problem = f"in-cluster service account unusable ({exc})"
        else:
            namespace = settings.namespace or _read_namespace(service_account_dir) or "default"
            return Connection(
                api_client=_api_client(configuration, environ),
                namespace=namespace,
                source="in-cluster service account",
            )
    paths = environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not _any_file(paths):
        raise KubeConfigError(
            f"no Kubernetes credentials: {in_cluster_problem} and no kubeconfig at {paths} "
            "(set kubernetes.kubeconfig or run in a pod with a service account)"
        )
    return await _from_kubeconfig(settings, paths, environ)


async def _from_kubeconfig(settings: KubernetesConfig, paths: str, environ: Mapping[str, str]) -> Connection:
    configuration = client.Configuration()
    try:
        loader = await config.load_kube_config(
            config_file=paths,
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise KubeConfigError(f"kubeconfig {paths}: cannot load it: {detail}") from exc
    context = loader.current_context or {}
    namespace = settings.namespace or (context.get("context") or {}).get("namespace") or "default"
    user = getattr(loader, "_user", None) or {}
    refresher = None
    if loader.provider == "gcp" or "exec" in user:
        refresher = asyncio.create_task(
            config.refresh_token(loader, client_configuration=configuration),
            name="kubernetes-token-refresh",
        )
    return Connection(
        api_client=_api_client(configuration, environ),
        namespace=namespace,
        source=f"kubeconfig {paths} (context {context.get('name', '?')!r})",
        _refresher=refresher,
    )


def _api_client(configuration: Any, environ: Mapping[str, str]) -> Any:
    """``ApiClient(configuration)`` without aiohttp's per-request environment lookups.

    kubernetes_asyncio opens its aiohttp session with ``trust_env=True``: every request then
    looks up ``~/.netrc`` and the proxy variables in a worker thread, two thread hops that cost
    more than the request itself against a local API server, in front of every scale patch and
    every Lease renewal. The proxy is looked up once here instead, by the same ``HTTPS_PROXY`` /
    ``HTTP_PROXY`` / ``NO_PROXY`` rules, unless the kubeconfig names one; the API server
    authenticates by token or certificate, never by ``.netrc``.
    """
    if not configuration.proxy:
        configuration.proxy = _environment_proxy(configuration.host, environ)
    api_client = client.ApiClient(configuration)
    session = api_client.rest_client.pool_manager
    if hasattr(session, "_trust_env"):  # aiohttp.ClientSession offers no setter
        session._trust_env = False
    return api_client


def _environment_proxy(host: str, environ: Mapping[str, str]) -> str | None:
    """The proxy the environment names for ``host`` (``<scheme>_proxy``, ``no_proxy``), if any."""
    variables = {name.lower(): value for name, value in environ.items() if name.lower().endswith("_proxy") and value}
    url = urllib.parse.urlsplit(host)
    proxy = variables.get(f"{url.scheme}_proxy") or variables.get("all_proxy")
    if not proxy or url.hostname is None:
        return None
    no_proxy = {"no": variables["no_proxy"]} if "no_proxy" in variables else {}
    if urllib.request.proxy_bypass_environment(url.netloc, no_proxy):  # type: ignore[attr-defined]
        return None
    return proxy


def _any_file(paths: str) -> bool:
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


def _read_namespace(service_account_dir: Path) -> str | None:
    try:
        return (service_account_dir / "namespace").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
