"""``bolina-scaler`` with the pre-msgspec health parser, for before/after runs (``--reference-parser``).

Does I/O (it is the daemon). ``parse_checked`` is the parser the daemon had before the msgspec
fast path; routing ``parse_health`` to it and turning off the unchanged-body shortcut measures
the daemon as it was, on the same harness and the same machine.
"""

from __future__ import annotations

import sys

from bolina_scaler import cli
from bolina_scaler.source import parse
from bolina_scaler.source.watch import ConsulWatch


def main() -> int:
    parse.parse_health = lambda body, memo=None: parse.parse_checked(body)
    ConsulWatch._parse = lambda self, body: parse.parse_checked(body)  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
