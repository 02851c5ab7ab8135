"""``bolina-scaler`` with the pre-issue-6 health parser, for before/after runs (``--reference-parser``).

Does I/O (it is the daemon). ``_parse_health_checked`` is the parser the daemon had before the
msgspec fast path; routing ``parse_health`` to it and turning off the unchanged-body shortcut
measures the daemon as it was, on the same harness and the same machine.
"""

from __future__ import annotations

import sys

from bolina_scaler import cli, watching


def main() -> int:
    watching.parse_health = lambda body, memo=None: watching._parse_health_checked(body)
    watching.ConsulWatch._parse = lambda self, body: watching._parse_health_checked(body)  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
