"""Structured logging: JSON lines on stdout for ``kubectl logs``, a readable console on a TTY.

Does I/O only in the sense of configuring where structlog writes. Every module logs through
``structlog.get_logger()``; tests assert on log lines with ``structlog.testing.capture_logs``.

Everything the process writes goes through the same renderer, so ``kubectl logs`` holds JSON
lines only: the standard library's ``logging`` (aiohttp, asyncio, kubernetes_asyncio) and
``warnings`` are bridged into structlog by ``configure_logging``, and ``log_loop_exception`` is
the event loop's exception handler (``cli.run`` installs it), which would otherwise print bare
tracebacks. The JSON renderer cannot fail on any value a log line may carry (an integer beyond
64 bits from a Consul header, an object whose ``str()`` raises, a dict keyed by tuples, a
string with lone surrogates): what orjson refuses is rendered as text instead.

Event names follow one style, so a line can be found without knowing its wording:

* ``event`` is ``<area>.<what>``: lowercase words joined by ``_`` (``EVENT_NAME``). The area
  comes first (``consul``, ``decision``, ``scale``, ``kubernetes``, ``leader``, ``pause``,
  ``events``, ``deletion_cost``, ``http``, ``daemon``, ``report``, ``demo``), so
  ``jq 'select(.event | startswith("scale."))'`` selects one area; ``what`` is what happened
  (``scale.patched``, ``leader.elected``) or the state entered (``consul.failing``, then
  ``consul.recovered``).
* A sentence for a person goes in ``message``; every warning has one, saying what the daemon
  does meanwhile. Values go in their own fields, never into the name or the sentence.
* Lines from libraries (aiohttp, asyncio) are ``library.logged``, their text in ``message`` and
  their logger in ``logger``.

``tests/test_logs.py`` checks every event name in the package against ``EVENT_NAME``; the list
of names, with what each warning means and what to do, is docs/deploy.md's troubleshooting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog

__all__ = ["EVENT_NAME", "LIBRARY_EVENT", "ProblemLog", "configure_logging", "log_loop_exception", "render_json"]

EVENT_NAME = re.compile(r"[a-z]+(_[a-z]+)*\.[a-z]+(_[a-z]+)*")
"""``<area>.<what>``: what every ``event`` of the daemon matches (see the module docstring)."""
LIBRARY_EVENT = "library.logged"
"""The event of a line a library wrote through the standard ``logging``."""

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_OPTIONS = orjson.OPT_NON_STR_KEYS
_MAX_DEPTH = 32
"""Deeper values are cut: a log line is for a person to read, not a data dump."""


def render_json(data: Any, **_: Any) -> str:
    """One JSON document on one line for any ``data``; never raises (structlog's serializer)."""
    try:
        return orjson.dumps(data, default=str, option=_OPTIONS).decode()
    except (TypeError, ValueError, RecursionError):  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return orjson.dumps(_plain(data, 0), option=_OPTIONS).decode()
    except Exception as exc:  # the last resort keeps the line, the event and the reason
        event = _text(data.get("event")) if isinstance(data, Mapping) else "(not a mapping)"
        return orjson.dumps({"event": event, "log_render_error": _text(exc)}).decode()


def _plain(value: Any, depth: int) -> Any:
    """``value`` made of what orjson always encodes: 64-bit ints, floats, valid str, lists, dicts."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else _text(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if depth >= _MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {_key(key): _plain(item, depth + 1) for key, item in list(value.items())}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, depth + 1) for item in value]
    return _text(value)


def _key(key: Any) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(key, str) else _text(key)


def _text(value: Any) -> str:
    """``str(value)``, whatever ``value`` is (``str()`` of an int over 4,300 digits raises)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sentence_first(_logger: Any, _name: str, event_dict: Any) -> Any:
    """Console only: show ``message`` next to the event name, where a person reads first."""
    message = event_dict.pop("message", None)
    if message is not None:
        event_dict["event"] = f"{event_dict.get('event')}: {message}"
    return event_dict


def _never_failing(renderer: Any) -> Any:
    """A renderer (the console one) that falls back to ``render_json`` rather than raise."""

    def render(logger: Any, name: str, event_dict: Any) -> str:
        try:
            return str(renderer(logger, name, dict(event_dict)))
        except Exception:
            return render_json(event_dict)

    return render


class _Output(structlog.PrintLogger):
    """structlog's ``PrintLogger``, except that a line that cannot be written is dropped: a log
    line must never be what stops the daemon (a closed or broken stdout)."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # ValueError: write to a closed file
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _ToStructlog(logging.Handler):
    """Sends the standard library's log records (aiohttp, asyncio, ...) through structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in someone's log call
            message = _text(record.msg)
        fields: dict[str, Any] = {"message": message, "logger": record.name}
        if record.exc_info and record.exc_info[0] is not None:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, LIBRARY_EVENT, **fields)


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog once per process. ``fmt`` is ``json``, ``console`` or ``auto`` (console on a TTY)."""
    stream = stream if stream is not None else sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderers: list[structlog.typing.Processor]
    if fmt == "json":
        renderers = [structlog.processors.JSONRenderer(serializer=render_json)]
    else:
        renderers = [_sentence_first, _never_failing(structlog.dev.ConsoleRenderer(colors=stream.isatty()))]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: _Output(stream),
        cache_logger_on_first_use=False,
    )
    # Other libraries' records: warnings and above (their info lines are not ours to print).
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(max(_LEVELS[level], logging.WARNING))
    logging.captureWarnings(True)


_loop_log = structlog.get_logger("bolina_scaler.asyncio")


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: one JSON line instead of a bare traceback on stderr.

    asyncio calls it for errors nobody awaited (a failed callback, a transport error, a task
    destroyed while pending); the daemon goes on.
    """
    exception = context.get("exception")
    fields: dict[str, Any] = {"error": _text(context.get("message") or "unhandled error in the event loop")}
    for key in ("task", "future", "handle", "protocol", "transport"):
        if key in context:
            fields[key] = _text(context[key])[:200]
    if isinstance(exception, BaseException):
        fields["exc_info"] = (type(exception), exception, exception.__traceback__)
    _loop_log.error("daemon.unhandled_error", message="unhandled error in the event loop", **fields)


class ProblemLog:
    """Log each distinct problem once, and the recovery once: one line per change, not per attempt.

    ``failed(problem, key=...)`` writes the ``failing`` event (with ``error=problem`` and the
    ``message`` that says what the daemon does meanwhile) only when ``problem`` was not logged
    under ``key`` since its last recovery; ``recovered(key=...)`` writes ``recovered`` once when
    ``key`` had a problem. A server that flips between two answers (a 410, then a closed stream,
    then a 410 again) costs two lines, not one per flip. At most ``PROBLEMS_KEPT`` distinct
    problems are logged per key and episode: a problem whose text changes every time (a byte
    offset, a resourceVersion) cannot flood the log either. Keys let one component follow
    several operations at once (the scale read and the scale patch fail and recover on their own).
    """

    PROBLEMS_KEPT = 8

    def __init__(self, logger: Any, *, failing: str, recovered: str, message: str, shared: bool = False) -> None:
        """``shared``: the keys are one service (the Lease: a GET, an UPDATE, a round that timed out):
        any key's recovery ends every key's problems, in one line."""
        self._log = logger
        self._shared = shared
        self._failing_event = failing
        self._recovered_event = recovered
        self._message = message
        self._problems: dict[str, list[str]] = {}

    @property
    def failing(self) -> bool:
        """Whether any key has an open problem."""
        return bool(self._problems)

    def failed(self, problem: str, *, key: str = "", level: str = "warning", **fields: Any) -> bool:
        """Note ``problem`` under ``key``; log it if it is new. Returns whether it was logged."""
        seen = self._problems.setdefault(key, [])
        if problem in seen or len(seen) >= self.PROBLEMS_KEPT:
            return False
        seen.append(problem)
        getattr(self._log, level)(self._failing_event, message=self._message, error=problem, **fields)
        return True

    def recovered(self, *, key: str = "", **fields: Any) -> None:
        """``key`` works again: log that once, if it had a problem."""
        if self._shared:
            if self._problems:
                self._problems.clear()
                self._log.info(self._recovered_event, **fields)
        elif self._problems.pop(key, None) is not None:
            self._log.info(self._recovered_event, **fields)
