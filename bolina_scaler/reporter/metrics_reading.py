"""Reading a Bolina server's own metrics: Prometheus text exposition or a JSON object of numbers.

``parse_prometheus`` and ``parse_json_metrics`` are pure; ``fetch_metrics`` does I/O (one GET of
the metrics URL). Prometheus samples are read by name when unlabelled, and as ``name{labels}``
exactly as written when labelled; nested JSON objects flatten to ``outer.inner``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import aiohttp
import orjson

__all__ = ["MetricsError", "fetch_metrics", "parse_json_metrics", "parse_prometheus"]


class MetricsError(RuntimeError):
    """The server's metrics could not be read or parsed."""


_PROM_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name`` (unlabelled) or ``name{labels}`` → value."""
    metrics: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROM_LINE.match(line)
        if match is None:
            continue
        value = _float(match["value"])
        if value is None:
            continue
        labels = match["labels"]
        key = match["name"] if not labels else match["name"] + re.sub(r"\s+", "", labels)
        metrics[key] = value
    return metrics


def parse_json_metrics(data: Any) -> dict[str, float]:
    """A JSON object's numbers, nested objects flattened with dots (``{"cpu": {"ratio": 0.4}}`` → ``cpu.ratio``)."""
    if not isinstance(data, dict):
        raise MetricsError(f"expected a JSON object of metrics, got {type(data).__name__}")
    metrics: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[prefix] = float(value)

    walk("", data)
    return metrics


async def fetch_metrics(
    session: aiohttp.ClientSession, url: str, *, fmt: Literal["auto", "prometheus", "json"], limit: float
) -> dict[str, float]:
    """Read the server's metrics URL once; ``MetricsError`` for anything but a parsable 200."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as response:
            body = await response.read()
            if response.status != 200:
                raise MetricsError(f"{url} answered {response.status}")
            content_type = response.content_type
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MetricsError(f"{url}: {type(exc).__name__}: {exc}") from None
    is_json = fmt == "json" or (fmt == "auto" and (content_type == "application/json" or body.lstrip()[:1] == b"{"))
    if is_json:
        try:
            return parse_json_metrics(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            raise MetricsError(f"{url}: invalid JSON: {exc}") from None
    return parse_prometheus(body.decode("utf-8", errors="replace"))
