"""Structured logging: JSON lines on stdout for ``kubectl logs``, a readable console on a TTY.

Does I/O only in the sense of configuring where structlog writes. Every module logs through
``structlog.get_logger()``; tests assert on log lines with ``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

__all__ = ["configure_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(data: Any, **_: Any) -> str:
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog once per process. ``fmt`` is ``json``, ``console`` or ``auto`` (console on a TTY)."""
    stream = stream if stream is not None else sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
