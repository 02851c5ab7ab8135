"""kubernetes_asyncio without its thousand generated modules, unless someone asks for them.

Does no I/O. ``import kubernetes_asyncio`` imports ``kubernetes_asyncio.client``, whose package
module imports every generated API class and every model: about 850 modules and ~37 MB of the
daemon's ~95 MB resident set, for a daemon that sends a dozen kinds of requests. The daemon needs
the library's configuration loading (kubeconfig, exec plugins, in-cluster tokens), its
``ApiClient`` and REST client, and ``ApiException``: it sends every request through
``ApiClient.call_api`` and reads the JSON itself (``call.KubeApi.request``).

``install()`` registers the three package modules (``kubernetes_asyncio``, ``.client`` and
``.client.models``) *without running their ``__init__``*; the submodules the daemon imports load
as usual. A package module runs its real ``__init__`` the first time anything asks it for a name
it does not have yet, so code that uses the generated APIs in the same process still gets them
(and pays for them then). When ``kubernetes_asyncio`` was imported before ``install()``, nothing
changes. ``tests/test_lazy_client.py`` holds both promises.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

__all__ = ["LAZY_PACKAGES", "install"]

LAZY_PACKAGES = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def install() -> None:
    """Register the lazy package modules, unless kubernetes_asyncio is imported already."""
    if LAZY_PACKAGES[0] in sys.modules:
        return
    for name in LAZY_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return  # not the layout this was written for: import it the ordinary way
        module = importlib.util.module_from_spec(spec)
        module.__dict__["__getattr__"] = _loader(module, spec)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    # The two names the library's own config loaders import from the client package.
    client = sys.modules["kubernetes_asyncio.client"]
    for name, submodule in (("Configuration", "configuration"), ("ApiClient", "api_client")):
        setattr(client, name, getattr(importlib.import_module(f"kubernetes_asyncio.client.{submodule}"), name))


def _loader(module: types.ModuleType, spec: importlib.machinery.ModuleSpec) -> Any:
    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        submodule = f"{module.__name__}.{name}"
        if importlib.util.find_spec(submodule) is not None:  # ``from package import submodule``
            return importlib.import_module(submodule)
        module.__dict__.pop("__getattr__", None)  # any other name: run the real __init__ once, here
        assert spec.loader is not None
        spec.loader.exec_module(module)
        return getattr(module, name)

    return __getattr__
