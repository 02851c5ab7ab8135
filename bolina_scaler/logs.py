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

__all__ = ["ProblemLog", "configure_logging"]

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


class ProblemLog:
    """Log each distinct problem once, and the recovery once: one line per change, not per attempt.

    ``failed(problem, key=...)`` writes ``failing`` (with ``error=problem``) only when ``problem``
    differs from the last one seen under ``key``; ``recovered(key=...)`` writes ``recovered`` once
    when ``key`` had a problem. Keys let one component follow several operations at once (the
    scale read and the scale patch fail and recover on their own).
    """

    def __init__(self, logger: Any, *, failing: str, recovered: str) -> None:
        self._log = logger
        self._failing_event = failing
        self._recovered_event = recovered
        self._problems: dict[str, str] = {}

    @property
    def failing(self) -> bool:
        """Whether any key has an open problem."""
        return bool(self._problems)

    def failed(self, problem: str, *, key: str = "", level: str = "warning", **fields: Any) -> bool:
        """Note ``problem`` under ``key``; log it if it is new. Returns whether it was logged."""
        if self._problems.get(key) == problem:
            return False
        self._problems[key] = problem
        getattr(self._log, level)(self._failing_event, error=problem, **fields)
        return True

    def recovered(self, *, key: str = "", **fields: Any) -> None:
        """``key`` works again: log that once, if it had a problem."""
        if self._problems.pop(key, None) is not None:
            self._log.info(self._recovered_event, **fields)
