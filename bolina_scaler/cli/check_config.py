"""``bolina-scaler check-config``: validate a config file and print the effective config.

Does I/O (the file, stdout). A bad file exits 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bolina_scaler.cli.common import EXIT_OK, examples
from bolina_scaler.config import ConfigError, load_config

__all__ = ["add_check_config_command"]


def add_check_config_command(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description=(
            "Validate a config file and print the effective config (every default filled in) as JSON.\n"
            "Files it names (consul.token_file, consul.ca_file, kubernetes.kubeconfig) must exist.\n"
            "Exit codes: 0 valid, 2 invalid, with one line naming the key."
        ),
        epilog=examples(
            "bolina-scaler check-config --config config/config.yaml",
            "bolina-scaler check-config config/config.yaml",
        ),
    )
    check.add_argument("path", nargs="?", help="path to the YAML config file (or --config)")
    check.add_argument("--config", dest="config_path", metavar="CONFIG", help="path to the YAML config file")
    check.set_defaults(handler=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    path = args.config_path or args.path
    if path is None or (args.config_path and args.path and args.config_path != args.path):
        raise ConfigError("check-config: give the config file once, as --config PATH (or PATH)")
    config = load_config(Path(path))
    json.dump(config.redacted(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return EXIT_OK
