"""What every command shares: exit codes, the one-line error format, the argument parser.

Exit codes are part of the interface: 0 success, 2 bad configuration or usage, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "Parser", "examples", "one_line"]

EXIT_OK: Final = 0
EXIT_RUNTIME: Final = 1
EXIT_USAGE: Final = 2


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line and exit code 2, and help text kept as written
    (descriptions and examples are plain text with their own line breaks: no markup)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def examples(*lines: str) -> str:
    """An ``epilog`` listing example command lines (``--help`` prints them as written)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, unwrapping a group of one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
