"""Reading a Bolina server's own metrics: Prometheus text exposition or a JSON object of numbers.

``parse_metrics``, ``parse_prometheus`` and ``parse_json_metrics`` are pure; ``fetch_metrics``
does I/O (one GET of the metrics URL). Prometheus samples are read by name when unlabelled, and
as ``name{labels}`` exactly as written when labelled; nested JSON objects flatten to
``outer.inner``.

Everything that comes back is input, and a reading the reporter cannot trust must never pass
for a healthy server: a body larger than ``max_bytes`` (read no further than that, and never
inflated: the request asks for ``identity``), a JSON document nested deeper than ``MAX_DEPTH``,
and an answer with no number in it at all (an HTML error page, an empty body, a renamed
endpoint) are ``MetricsError``. Values that are not finite numbers (NaN, ±Inf) are dropped: a
metric that reads NaN is a metric that is missing, and the classifier decides what that means.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import aiohttp
import orjson

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_DEPTH",
    "MetricsError",
    "fetch_metrics",
    "parse_json_metrics",
    "parse_metrics",
    "parse_prometheus",
]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""The largest metrics answer read (4 MiB): a Bolina server's metrics are a few kilobytes."""
MAX_DEPTH = 32
"""JSON metrics nested deeper than this are not metrics (and would exhaust the stack)."""


class MetricsError(RuntimeError):
    """The server's metrics could not be read or parsed."""


_PROM_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{.*\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name`` (unlabelled) or ``name{labels}`` → finite value."""
    metrics: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROM_LINE.match(line)
        if match is None:
            continue
        value = _finite(match["value"])
        if value is None:
            continue
        labels = match["labels"]
        key = match["name"] if not labels else match["name"] + re.sub(r"\s+", "", labels)
        metrics[key] = value
    return metrics


def parse_json_metrics(data: Any) -> dict[str, float]:
    """A JSON object's finite numbers, nested objects flattened with dots (``{"cpu": {"ratio": 0.4}}`` → ``cpu.ratio``).

    Iterative, so no document can exhaust the stack; deeper than ``MAX_DEPTH`` is a ``MetricsError``.
    """
    if not isinstance(data, dict):
        raise MetricsError(f"expected a JSON object of metrics, got {type(data).__name__}")
    metrics: dict[str, float] = {}
    stack: list[tuple[str, dict[Any, Any], int]] = [("", data, 1)]
    while stack:
        prefix, obj, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MetricsError(f"JSON metrics nested deeper than {MAX_DEPTH} levels")
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                stack.append((name, value, depth + 1))
            elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                metrics[name] = float(value)
    return metrics


def parse_metrics(
    body: bytes, *, content_type: str | None, fmt: Literal["auto", "prometheus", "json"] = "auto"
) -> dict[str, float]:
    """The metrics of one answer; ``MetricsError`` when it holds none (or is not what ``fmt`` says)."""
    is_json = fmt == "json" or (fmt == "auto" and (content_type == "application/json" or body.lstrip()[:1] == b"{"))
    if is_json:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MetricsError(f"invalid JSON: {exc}") from None
        metrics = parse_json_metrics(data)
    else:
        metrics = parse_prometheus(body.decode("utf-8", errors="replace"))
    if not metrics:
        kind = content_type or "unknown content type"
        raise MetricsError(f"no metric in the answer ({len(body)} bytes, {kind})")
    return metrics


async def fetch_metrics(
    session: aiohttp.ClientSession,
    url: str,
    *,
    fmt: Literal["auto", "prometheus", "json"],
    limit: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, float]:
    """Read the server's metrics URL once; ``MetricsError`` for anything but a usable 200 within ``max_bytes``."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=limit),
            headers={"Accept-Encoding": "identity"},
            auto_decompress=False,
        ) as response:
            if response.status != 200:
                raise MetricsError(f"{url} answered {response.status}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise MetricsError(f"{url}: answer of {response.content_length} bytes is over the limit of {max_bytes}")
            encoding = response.headers.get("Content-Encoding", "identity").lower()
            if encoding not in ("", "identity"):
                raise MetricsError(f"{url}: answer is {encoding}-encoded; only identity is read")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise MetricsError(f"{url}: answer is over the limit of {max_bytes} bytes")
            content_type = response.content_type
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MetricsError(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        return parse_metrics(bytes(body), content_type=content_type, fmt=fmt)
    except MetricsError as exc:
        raise MetricsError(f"{url}: {exc}") from None
