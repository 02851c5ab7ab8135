"""The configuration's one error type, and the one-line messages it carries.

Pure. ``ConfigError``'s ``str()`` is one line that names the offending key; ``one_line`` turns
pydantic's ``ValidationError`` into that line (``policy.max_replicas: must be >= ...``), and
``short_repr`` keeps a value quoted in a message short whatever was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

__all__ = ["ConfigError", "one_line", "short_repr"]


class ConfigError(ValueError):
    """A configuration problem; ``str()`` is one line that names the offending key."""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut when long (and never failing: an int of 5,000 digits has no repr)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<value>"
    return text if len(text) <= limit else f"{text[:limit]}…"


def _location(error: Mapping[str, Any]) -> str:
    parts = [part for part in error["loc"] if not str(part).startswith("function-")]
    return ".".join(str(part) if _plain_key(part) else short_repr(part, 40) for part in parts)


def _plain_key(part: Any) -> bool:
    return isinstance(part, str) and 0 < len(part) <= 64 and part.isprintable() and " " not in part


_WRONG_TYPE = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "model_type": "expected a mapping of keys",
}
"""The schema's types are strict (``schema._Section``): a value of the wrong type says what was asked."""


def one_line(exc: ValidationError) -> str:
    """pydantic's errors as one line naming the first offending key (``policy.max_replicas: ...``)."""
    first = exc.errors()[0]
    loc = _location(first)
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (typo?)"
    elif first["type"] in {"value_error", "assertion_error"} and ": " in message and loc:
        # Section validators prefix the field themselves: "max_replicas: must be ...".
        field_name, _, rest = message.partition(": ")
        loc, message = f"{loc}.{field_name}", rest
    elif first["type"] in {"value_error", "assertion_error"} and ": " in message:
        loc, _, message = message.partition(": ")
    else:
        message = _WRONG_TYPE.get(first["type"], message)
        given = first.get("input")
        if given is None and first["type"] == "model_type":
            message = f"{message}, got null (an empty section: write {{}} or leave it out)"
        elif not isinstance(given, dict | list) and given is not None and "got " not in message:
            message = f"{message}, got {short_repr(given)}"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return " ".join(f"{loc or '<root>'}: {message}{suffix}".split())
