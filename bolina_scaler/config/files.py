"""Reading the small text files the configuration is made of or names: regular files, bounded, UTF-8.

Does I/O (reads a file). Only a regular file is read (a ConfigMap's symlinks are followed to
one): a FIFO would block ``open()`` until a writer comes, with the stop signals unanswered, and a
device (``/dev/zero``, ``/dev/urandom``) never ends. The file is opened non-blocking, so even a FIFO
is refused at once, and never more than the limit is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["TOKEN_FILE_BYTES", "read_small_text"]

TOKEN_FILE_BYTES = 4096
"""A Consul token is a 36-character UUID: a token file beyond this is not one."""

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_small_text(path: Path, limit: int) -> str:
    """A regular UTF-8 text file of at most ``limit`` bytes.

    Raises ``OSError`` when it cannot be opened, ``ValueError`` when it is not a regular file,
    larger than ``limit`` or not UTF-8.
    """
    _regular(os.stat(path).st_mode)  # a socket cannot even be opened: say what it is first
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as file:
        _regular(os.fstat(descriptor).st_mode)  # what was opened, should the path have changed since
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def _regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "of an unknown kind")
        raise ValueError(f"{kind}, not a regular file")
