"""``bolina-scaler check-config``: validate a config file and print the effective config.

Does I/O (the file, stdout). A bad file exits 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bolina_scaler.cli.common import EXIT_OK
from bolina_scaler.config import load_config

__all__ = ["add_check_config_command"]


def add_check_config_command(subparsers: Any) -> None:
    check = subparsers.add_parser("check-config", help="validate a config file and print the effective config")
    check.add_argument("path", help="path to the YAML config file")
    check.set_defaults(handler=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(Path(args.path))
    json.dump(config.redacted(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return EXIT_OK
