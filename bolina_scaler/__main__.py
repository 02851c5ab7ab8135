"""``python -m bolina_scaler`` is the ``bolina-scaler`` command (both start at ``main``).

A stop signal that arrives while the command's libraries are still being imported is noted,
not fatal, for ``run`` and ``report`` (``stop_signals``): this module imports nothing heavy before that.
"""

from __future__ import annotations

import sys

from bolina_scaler import stop_signals


def main() -> int:
    if sys.argv[1:2] in (["run"], ["report"]):
        stop_signals.hold()
    from bolina_scaler.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
