"""The checks of single values the schema's fields use: durations, host names, Consul addresses.

Pure. Durations accept seconds as a number or a Go-style string (``"300ms"``, ``"30s"``, ``"5m"``,
``"1h"``) and range from 1 ms (``PositiveDuration``; 0 for ``Duration``) to 24 h: no window or
timeout of the scaler needs more, and a value such as ``1e308`` ends in an overflow. A host is an
IP address or an RFC 1123 host name; ``consul.address`` is a plain ``http(s)://host[:port]``, so
``check-config`` refuses what ``run`` would fail on.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from bolina_scaler.config.errors import short_repr

__all__ = ["MAX_DURATION", "MIN_DURATION", "Duration", "PositiveDuration", "check_address", "is_host"]

MAX_DURATION = 86_400.0
"""24 h: the longest duration any setting takes."""
MIN_DURATION = 0.001
"""1 ms: the shortest positive duration (a backoff of 1e-300 s is a busy loop)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '5m', got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 30, '30s' or '5m', got {value!r}")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, le=MAX_DURATION, allow_inf_nan=False)]
PositiveDuration = Annotated[
    float, BeforeValidator(_parse_duration), Field(ge=MIN_DURATION, le=MAX_DURATION, allow_inf_nan=False)
]

# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending with one.
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$", re.ASCII)


def is_host(text: str) -> bool:
    """An IP address (v4 or v6) or a DNS host name (RFC 1123, at most 253 characters)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return True
    name = text.removesuffix(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split("."))


def check_address(address: str) -> str:
    """``http(s)://host[:port]`` with nothing else (py-consul would drop a path without a word)."""
    wanted = f"expected http://host:port or https://host:port, got {short_repr(address)}"
    if any(c.isspace() or not c.isprintable() for c in address):
        raise ValueError(f"address: {wanted} (it holds spaces or control characters)")
    url = urllib.parse.urlsplit(address)
    if url.scheme not in {"http", "https"} or not url.netloc:
        raise ValueError(f"address: {wanted}")
    if url.username is not None or url.password is not None:
        raise ValueError(f"address: {wanted} (no user or password: use consul.token_file)")
    if url.path not in {"", "/"} or url.query or url.fragment:
        raise ValueError(f"address: {wanted} (no path, query or fragment)")
    host = url.hostname or ""
    if not is_host(host):
        raise ValueError(f"address: {wanted} ({short_repr(host)} is not an IP address or a host name)")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"address: {wanted} (the port is not a number from 1 to 65535)") from None
    if port == 0:
        raise ValueError(f"address: {wanted} (port 0)")
    return address
