"""The ``bolina-scaler`` command line: one module per command, registered on one parser here.

Does I/O (argument parsing, signals, stdout). Commands: ``run`` (the daemon), ``plan``,
``check-config``, ``demo``, ``simulate`` and ``report`` (the server-side sidecar). Exit codes are
part of the interface: 0 success, 2 bad configuration or usage, 1 runtime failure.

* ``run``, ``plan``, ``check_config``, ``demo``, ``simulate``, ``report``: one command each;
* ``common``: what they share: exit codes, the one-line error format, the argument parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bolina_scaler import __version__
from bolina_scaler.cli.check_config import add_check_config_command
from bolina_scaler.cli.common import EXIT_RUNTIME, EXIT_USAGE, Parser
from bolina_scaler.cli.demo import add_demo_command
from bolina_scaler.cli.plan import add_plan_command
from bolina_scaler.cli.report import add_report_command
from bolina_scaler.cli.run import add_run_command
from bolina_scaler.cli.simulate import add_simulate_command
from bolina_scaler.config import ConfigError

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]

DESCRIPTION = (
    "Bolina Scaler: keep enough Bolina servers Available by scaling their Kubernetes Deployment.\n"
    "Each command has its own help: bolina-scaler COMMAND --help."
)
EPILOG = """examples:
  bolina-scaler demo                                    # try it, nothing to install
  bolina-scaler check-config --config config/config.yaml
  bolina-scaler plan --config config/config.yaml        # what it would do now, as JSON
  bolina-scaler run --config config/config.yaml --dry-run
  bolina-scaler run --config /etc/bolina-scaler/config.yaml

exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bolina-scaler", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for register in (
        add_run_command,
        add_plan_command,
        add_check_config_command,
        add_demo_command,
        add_simulate_command,
        add_report_command,
    ):
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"bolina-scaler: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
