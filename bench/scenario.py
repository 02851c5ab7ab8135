"""The benchmark's fleet and policy: a fleet at the edge of its target, so one flip = one patch.

Pure arithmetic plus config dicts, no I/O. ``N`` servers, ``k`` of them Available and the rest
Warning. The ratios are picked so that turning one Available server Critical drops the share
just below ``target_available_ratio`` (the policy adds one replica), and turning it back raises
it to at least ``scale_down_ratio`` with exactly one replica of slack (the policy removes one).
With ``scale_down_stabilization`` and ``startup_grace`` at 0 and wide step limits, every write
alternates the decision, so every write must end in exactly one PATCH. The Deployment's
replicas stay far below N, so the in-flight ledger never counts anything as starting, and
``mass_change.min_fleet`` above N keeps the mass-change guard out of the way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = ["REPLICAS", "Edge", "daemon_config", "edge"]

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


def daemon_config(
    *,
    e: Edge,
    consul_url: str,
    kubeconfig: Path,
    namespace: str,
    wait: float = 60.0,
    step_limits: tuple[int, int, float] | None = None,
) -> dict[str, Any]:
    """The daemon's config for a run. ``step_limits``: (up, down, period) instead of wide limits."""
    up, down, period = step_limits or (1000, 1000, 1.0)
    return {
        "consul": {
            "address": consul_url,
            "service": "bolina",
            "wait": f"{wait:g}s",
            # 50 queries/s: the token bucket never delays a change in these runs (the default, 1/s,
            # would turn every reaction into a 1 s pause after a previous change).
            "rate_per_second": 50,
            "rate_burst": 2,
            "retry_initial": "100ms",
            "retry_max": "1s",
            # Up to 10,000 servers register while max_replicas is 1,000 (the Deployment stays near
            # 10 replicas): the answer-size limit derived from max_replicas (16 MiB) would refuse
            # the real agent's ~21 MB answer at 10,000 servers.
            "max_answer_bytes": 64 * 1024 * 1024,
        },
        "kubernetes": {
            "namespace": namespace,
            "deployment": "bolina",
            "kubeconfig": str(kubeconfig),
            "resync": "30s",
            "request_timeout": "10s",
            "retry_initial": "100ms",
            "retry_max": "1s",
        },
        "policy": {
            "min_replicas": 1,
            "max_replicas": 1000,
            "target_available_ratio": e.target,
            "scale_down_ratio": e.scale_down,
            "scale_down_stabilization": 0,
            "startup_grace": 0,
            "max_snapshot_age": f"{wait * 2 + 30:g}s",
            "scale_up": {"max_step": up, "max_percent": 0, "period": f"{period:g}s"},
            "scale_down": {"max_step": down, "max_percent": 0, "period": f"{period:g}s"},
            "mass_change": {"min_fleet": 10 * e.size + 1000},
        },
        "http": {"enabled": False},
        "logging": {"level": "info", "format": "json"},
    }
