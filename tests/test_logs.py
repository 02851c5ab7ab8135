"""The log output: one JSON line per record, whatever a record carries and whoever writes it."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import bolina_scaler
from bolina_scaler.logs import EVENT_NAME, configure_logging, log_loop_exception, render_json


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    __repr__ = __str__


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.sampled_from([2**64 + 7, -(2**64)]),
    st.builds(pow, st.just(10), st.just(5000)),  # str() of it raises; the strategy's repr must not
    st.floats(),
    st.text(),
    st.sampled_from(["\ud800", "a\udfffb"]),
    st.binary(max_size=20),
    st.builds(_Unprintable),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(), st.tuples(st.integers())), inner, max_size=4),
    ),
    max_leaves=20,
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "_ToStructlog":
            root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


class TestRenderer:
    @settings(max_examples=400, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k != "event"), _values, max_size=5))
    def test_any_fields_render_as_one_json_line(self, fields: dict[str, Any]) -> None:
        """Integers beyond 64 bits, unprintable objects, tuple keys, lone surrogates: one JSON line."""
        line = render_json({"event": "decision.evaluated", **fields})
        assert "\n" not in line
        assert json.loads(line)["event"] == "decision.evaluated"

    def test_an_index_beyond_64_bits_keeps_its_digits(self) -> None:
        """2^64 + 7 (it once stopped the daemon) is written as its digits, as text."""
        assert json.loads(render_json({"event": "x", "index": 2**64 + 7}))["index"] == str(2**64 + 7)

    def test_a_self_containing_value_is_cut(self) -> None:
        """A structure that contains itself is cut at a depth, not a recursion error."""
        loop: list[Any] = []
        loop.append(loop)
        assert "nested too deep" in render_json({"event": "x", "loop": loop})

    def test_through_structlog(self, output: io.StringIO) -> None:
        """A real log call with hostile fields writes one parseable line."""
        structlog.get_logger("t").info("hostile", index=2**64 + 7, thing=_Unprintable(), huge=10**5000)
        (line,) = lines(output)
        assert line["event"] == "hostile"
        assert line["thing"] == "<unprintable _Unprintable>"


class TestOtherWriters:
    def test_standard_library_records_are_json(self, output: io.StringIO) -> None:
        """aiohttp's and asyncio's loggers write JSON lines too, tracebacks inside a field."""
        try:
            raise ValueError("bad request line")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        logging.getLogger("aiohttp.access").info("an access line is not ours to print")
        (line,) = lines(output)
        assert (line["event"], line["logger"], line["level"]) == ("library.logged", "aiohttp.server", "error")
        assert line["message"] == "Error handling request"
        assert "ValueError: bad request line" in line["exception"]

    def test_warnings_are_json(self, output: io.StringIO) -> None:
        """A warning (py-consul's deprecations, ...) is a JSON line, not a stderr message."""
        logging.getLogger("py.warnings").warning("DeprecationWarning: verify_ssl is deprecated")
        (line,) = lines(output)
        assert "verify_ssl" in line["message"]

    async def test_loop_exceptions_are_json(self, output: io.StringIO) -> None:
        """An error nobody awaited reaches the loop's handler: one JSON line, the daemon goes on."""
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(log_loop_exception)
        try:

            def fail() -> None:
                raise OSError(24, "Too many open files")

            loop.call_soon(fail)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(previous)
        (line,) = lines(output)
        assert line["event"] == "daemon.unhandled_error"
        assert "Too many open files" in line["exception"]

    def test_a_closed_stdout_drops_the_line(self) -> None:
        """Writing to a closed stream loses the line, never raises into the caller."""
        stream = io.StringIO()
        configure_logging(level="info", fmt="json", stream=stream)
        try:
            stream.close()
            structlog.get_logger("t").info("into the void")
        finally:
            structlog.reset_defaults()

    def test_console_renderer_falls_back(self) -> None:
        """The console renderer (a TTY) falls back to JSON for a value it cannot print."""
        stream = io.StringIO()
        configure_logging(level="info", fmt="console", stream=stream)
        try:
            structlog.get_logger("t").info("console", huge=10**5000)
        finally:
            structlog.reset_defaults()
        assert "console" in stream.getvalue()

    def test_the_console_shows_the_sentence_after_the_event(self) -> None:
        stream = io.StringIO()
        configure_logging(level="info", fmt="console", stream=stream)
        try:
            structlog.get_logger("t").warning("consul.failing", message="holding the last known fleet", problem="x")
        finally:
            structlog.reset_defaults()
        assert "consul.failing: holding the last known fleet" in stream.getvalue()


_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _log_calls() -> Iterator[tuple[str, str, ast.Call]]:
    """Every ``<something log>.<level>(...)`` call and ``ProblemLog(...)`` in the package."""
    root = Path(bolina_scaler.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in _LEVELS and "log" in ast.unparse(func.value):
                if ast.unparse(node.args[0]) == "self._recovered_event":
                    continue  # ProblemLog's own line: its names are checked where it is built
                yield where, func.attr, node
            elif isinstance(func, ast.Name) and func.id == "ProblemLog":
                yield where, "problem", node


class TestEventNames:
    """The naming style of ``bolina_scaler.logs``, held for every line the package writes."""

    def test_the_scan_finds_the_daemon_s_lines(self) -> None:
        found = {ast.unparse(call.args[0]).strip("'") for _, level, call in _log_calls() if level != "problem"}
        assert {"decision.evaluated", "scale.patched", "consul.index_reset", "leader.elected"} <= found

    def test_every_event_is_area_dot_what(self) -> None:
        wrong = []
        for where, level, call in _log_calls():
            if level == "problem":
                names = [ast.literal_eval(k.value) for k in call.keywords if k.arg in {"failing", "recovered"}]
            elif call.args and isinstance(call.args[0], ast.Constant):
                names = [call.args[0].value]
            else:
                names = [ast.unparse(call.args[0]) if call.args else "(none)"]
            wrong += [f"{where}: {name!r}" for name in names if not EVENT_NAME.fullmatch(str(name))]
        assert wrong == []

    def test_every_warning_says_what_the_daemon_does_meanwhile(self) -> None:
        missing = [
            where
            for where, level, call in _log_calls()
            if level in {"warning", "error", "exception", "critical", "problem"}
            and "message" not in {k.arg for k in call.keywords}
        ]
        assert missing == []
