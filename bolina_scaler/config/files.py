"""Reading the small text files the configuration is made of or names: bounded, UTF-8.

Does I/O (reads a file). Never more than the limit is read, so a path such as ``/dev/zero`` costs
one limit's worth of memory and a ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TOKEN_FILE_BYTES", "read_small_text"]

TOKEN_FILE_BYTES = 4096
"""A Consul token is a 36-character UUID: a token file beyond this is not one."""


def read_small_text(path: Path, limit: int) -> str:
    """A UTF-8 text file of at most ``limit`` bytes (never more is read: it may be ``/dev/zero``).

    Raises ``OSError`` when it cannot be read, ``ValueError`` when it is larger or not UTF-8.
    """
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
