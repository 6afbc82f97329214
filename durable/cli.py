"""The `durable` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from durable import demo as demo_module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `durable` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="durable", description="Durable execution for Python.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a durable research agent on SQLite, kill its worker, and watch it resume",
    )
    demo.add_argument("--worker", metavar="DB", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            if args.worker is not None:
                asyncio.run(demo_module.run_worker(args.worker))
            else:
                asyncio.run(demo_module.run_demo())
        except KeyboardInterrupt:
            return 130
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
