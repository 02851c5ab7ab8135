"""``bolina-scaler demo``: the real daemon against the in-process fakes, with a scripted scenario.

Does I/O (local servers, stdout). The world and the story are in ``bolina_scaler.demo``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bolina_scaler.cli.common import examples
from bolina_scaler.logs import configure_logging

__all__ = ["add_demo_command"]


def add_demo_command(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the real daemon against in-process Consul and Kubernetes fakes",
        description=(
            "Run the real daemon against in-process Consul and Kubernetes fakes through a scripted\n"
            "scenario (demand rises, a flash crowd, a crash, the crowd leaves), print every decision,\n"
            "and exit by itself in under a minute. Needs nothing installed besides this package."
        ),
        epilog=examples("bolina-scaler demo", "bolina-scaler demo --speed 3 --plot demo.png"),
    )
    demo.add_argument(
        "--speed", type=float, default=1.0, help="play the scripted scenario this many times faster (default: 1)"
    )
    demo.add_argument("--plot", metavar="FILE.png", help="draw the run (needs matplotlib)")
    demo.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        help="log format (default: auto: console on a terminal, else JSON)",
    )
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from bolina_scaler.demo import run_demo

    configure_logging(level="info", fmt=args.log_format or "auto")
    return asyncio.run(run_demo(speed=args.speed, plot_path=args.plot))
