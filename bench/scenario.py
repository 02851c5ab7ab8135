"""The benchmark's fleet and config: the shipped ``config/config.yaml``, and a fleet at its edge.

Pure arithmetic plus config dicts, no I/O (but reading the shipped config file). Every run's
daemon starts from the shipped config with only addresses, names and bounds changed
(``shipped_config``). The latency runs need one thing more: every flip must end in exactly one
PATCH, so that a reaction can be timed hundreds of times in a row. ``edge_config`` gets that by
changing the policy's arithmetic only, and the report says so in every such row:

``N`` servers, ``k`` of them Available and the rest Warning. The ratios are picked so that turning
one Available server Critical drops the share just below ``target_available_ratio`` (the policy
adds one replica), and turning it back raises it to at least ``scale_down_ratio`` with exactly
one replica of slack (the policy removes one). With ``scale_down_stabilization`` and
``startup_grace`` at 0 and wide step limits, every write alternates the decision. The
Deployment's replicas stay far below N, so the in-flight ledger never counts anything as
starting, and ``mass_change.min_fleet`` above N keeps the mass-change guard out of the way.
The Consul watch, the Kubernetes client, leader election and Events run exactly as shipped.

``shipped_edge`` is the fleet at the edge of the shipped policy itself, for the rows that run the
shipped config whole (first reaction to a change, one change at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

__all__ = ["REPLICAS", "SHIPPED", "Edge", "edge", "edge_config", "shipped_config", "shipped_edge"]

SHIPPED: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "config" / "config.yaml").read_text(encoding="utf-8")
)
"""``config/config.yaml``, as the ConfigMap ships it."""

REPLICAS = 10
"""The Deployment's replicas at the start of a run (the daemon moves it between 9 and 10)."""


@dataclass(frozen=True, slots=True)
class Edge:
    """A fleet of ``size`` servers, ``available`` Available, and ratios that sit on its edge."""

    size: int
    available: int
    target: float
    scale_down: float


def _decimal_between(low: Fraction, high: Fraction) -> float:
    """The shortest decimal strictly above ``low`` and at most ``high`` (the policy uses str(float))."""
    for digits in range(1, 16):
        scale = 10**digits
        candidate = Fraction(math.floor(low * scale) + 1, scale)
        if low < candidate <= high:
            return float(candidate)
    raise ValueError(f"no decimal between {low} and {high}")


def edge(size: int) -> Edge:
    """Ratios for ``size`` servers with half Available (see the module docstring)."""
    if size < 4:
        raise ValueError("the edge needs at least 4 servers")
    k = size // 2
    # Flip down (k-1 of size): share < target. Flip up (k of size): share ≥ scale_down and
    # removing one Available server keeps the share ≥ target: (k-1)/(size-1) ≥ target.
    target = _decimal_between(Fraction(k - 1, size), Fraction(k - 1, size - 1))
    scale_down = _decimal_between(Fraction(str(target)), Fraction(k, size))
    result = Edge(size=size, available=k, target=target, scale_down=scale_down)
    _verify(result)
    return result


def _verify(e: Edge) -> None:
    t = Fraction(str(e.target))
    k, n = e.available, e.size
    assert Fraction(k - 1, n) < t, "one server down must drop the share below the target"
    assert Fraction(k, n) >= Fraction(str(e.scale_down)) > t, "all up must reach scale_down_ratio"
    need = math.ceil((t * n - (k - 1)) / (1 - t))
    most = math.floor((k - t * n) / (1 - t))
    assert need == 1, f"a flip down must add exactly one replica, not {need}"
    assert min(most, k, n - 1) >= 1, "a flip up must remove at least one replica"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def shipped_config(*, consul_url: str, kubeconfig: Path, namespace: str, max_replicas: int = 10_000) -> dict[str, Any]:
    """The shipped config with this run's addresses, names and bounds (and JSON logs to a file).

    ``max_replicas`` is as large as the largest fleet: the answer-size limit derives from it
    (``consul.max_answer_bytes`` unset), and up to 10,000 servers register here while the
    Deployment stays near 10 replicas."""
    return _merge(
        SHIPPED,
        {
            "consul": {"address": consul_url, "service": "bolina"},
            "kubernetes": {"namespace": namespace, "deployment": "bolina", "kubeconfig": str(kubeconfig)},
            "policy": {"min_replicas": 1, "max_replicas": max_replicas},
            "http": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "info", "format": "json"},
        },
    )


EDGE_POLICY_NOTE = (
    "policy at the fleet's edge (ratios, windows 0, wide step limits: every flip is one patch); "
    "Consul, Kubernetes, leader election and Events as shipped"
)


def edge_config(
    *,
    e: Edge,
    consul_url: str,
    kubeconfig: Path,
    namespace: str,
    step_limits: tuple[int, int, float] | None = None,
) -> dict[str, Any]:
    """The shipped config, but for the policy's arithmetic (``EDGE_POLICY_NOTE``).
    ``step_limits``: (up, down, period) instead of wide limits."""
    up, down, period = step_limits or (1000, 1000, 1.0)
    config = shipped_config(consul_url=consul_url, kubeconfig=kubeconfig, namespace=namespace)
    return _merge(
        config,
        {
            "policy": {
                "target_available_ratio": e.target,
                "scale_down_ratio": e.scale_down,
                "scale_down_stabilization": 0,
                "startup_grace": 0,
                "scale_up": {"max_step": up, "max_percent": 0, "period": f"{period:g}s"},
                "scale_down": {"max_step": down, "max_percent": 0, "period": f"{period:g}s"},
                "mass_change": {"min_fleet": 10 * e.size + 1000},
            },
        },
    )


def shipped_edge(size: int) -> int:
    """Available servers of a ``size`` fleet at the shipped policy's edge: the share meets the shipped
    target, one Available server fewer does not, and it stays below the shipped scale_down_ratio."""
    target = Fraction(str(SHIPPED["policy"]["target_available_ratio"]))
    available = math.ceil(target * size)
    assert Fraction(available, size) >= target > Fraction(available - 1, size)
    assert Fraction(available, size) < Fraction(str(SHIPPED["policy"]["scale_down_ratio"]))
    return available
