"""The `durable` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from durable.demo import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `durable` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="durable", description="Durable execution for Python.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a small durable research agent and show what happens")
    args = parser.parse_args(argv)
    if args.command == "demo":
        asyncio.run(run_demo())
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
