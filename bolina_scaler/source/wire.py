"""How values are written on Consul's HTTP API, for what the scaler and the reporter send to it.

Pure. Consul parses durations the Go way (``time.ParseDuration``): a unit is required
(``wait=300`` is a 400). The transport writes the blocking query's ``wait`` with it, the
reporter its check's ``TTL`` and ``DeregisterCriticalServiceAfter``.
"""

from __future__ import annotations

__all__ = ["go_duration"]


def go_duration(seconds: float) -> str:
    """A duration as Consul wants it (a Go duration: units required, ``wait=300`` is a 400)."""
    return f"{seconds:g}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"
