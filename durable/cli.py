"""The `durable` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from durable import _cli_entities, _cli_instances, _cli_worker
from durable import demo as demo_module
from durable.core.errors import DurableError
from durable.testing.replayer import Replayer


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `durable` command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="durable", description="Durable execution for Python.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a durable research agent on SQLite, kill its worker, and watch it resume",
    )
    demo.add_argument("--worker", metavar="DB", type=Path, help=argparse.SUPPRESS)
    replay = commands.add_parser(
        "replay",
        help="replay recorded histories against the current code (for CI, before a deploy)",
        description="Replay each history (JSON) against the orchestrators given; exit 1 if "
        "any no longer replays.",
    )
    replay.add_argument(
        "--history",
        required=True,
        type=Path,
        action="append",
        metavar="PATH",
        help="a history JSON file, or a folder of them (searched recursively); repeatable",
    )
    replay.add_argument(
        "orchestrators",
        nargs="+",
        metavar="module:name",
        help="orchestrator functions to register (or a list of them)",
    )
    _cli_instances.add_parsers(commands)
    _cli_worker.add_parser(commands, _cli_instances.DEFAULT_STORE)
    dashboard = commands.add_parser(
        "dashboard",
        help="serve a web dashboard of the store's orchestrations (needs durable[dashboard])",
    )
    dashboard.add_argument("--store", default=None, metavar="URL")
    dashboard.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine)")
    dashboard.add_argument("--port", type=int, default=8321, help="default: 8321")
    _cli_entities.add_parser(commands)
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
    if args.command == "replay":
        return _replay(args.history, args.orchestrators)
    if args.command == "entity":
        return asyncio.run(_cli_entities.run(args))
    if args.command in _cli_instances.COMMANDS:
        return _cli_instances.run(args)
    if args.command == "dashboard":
        return _dashboard(args.store or _cli_instances.default_store(), args.host, args.port)
    if args.command == "worker":
        return _cli_worker.run(args, args.store or _cli_instances.default_store())
    parser.error(f"unknown command {args.command!r}")
    return 2


def _dashboard(url: str, host: str, port: int) -> int:
    try:
        import uvicorn  # noqa: PLC0415 - the dashboard extra, on demand

        from durable.dashboard import create_app  # noqa: PLC0415
    except ImportError as e:
        print(f"durable dashboard: {e}: pip install 'durable[dashboard]'", file=sys.stderr)
        return 2
    try:
        store = _cli_instances.open_for_reading(url)
    except _cli_instances.UsageError as e:
        print(f"durable dashboard: {e}", file=sys.stderr)
        return 2
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"durable dashboard: serving on {host}: it has no login, and anyone who reaches it"
            " can terminate your orchestrations",
            file=sys.stderr,
        )
    print(f"durable dashboard: http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr)
    uvicorn.run(create_app(store, close_store=True), host=host, port=port, log_level="warning")
    return 0


def _replay(paths: list[Path], targets: list[str]) -> int:
    replayer = Replayer()
    try:
        for target in targets:
            for fn in _import(target):
                replayer.add_orchestrator(fn)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        print(f"durable replay: {e}", file=sys.stderr)
        return 2
    files = [f for p in paths for f in (sorted(p.rglob("*.json")) if p.is_dir() else [p])]
    if not files:
        print("durable replay: no history files found", file=sys.stderr)
        return 2
    failed = 0
    for file in files:
        try:
            status = replayer.replay(file)
        except (DurableError, ValueError, OSError) as e:
            failed += 1
            print(f"FAIL {file}: {type(e).__name__}: {e}")
        else:
            print(f"ok   {file} ({status.value})")
    print(f"{len(files) - failed} of {len(files)} histories replay")
    return 1 if failed else 0


def _import(target: str) -> list[Callable[..., Any]]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r}: expected module:name, like app.agents:research_agent")
    value = _cli_worker.load(target)
    if isinstance(value, list | tuple):
        return list(value)
    if not callable(value):
        raise TypeError(f"{target!r} is not an orchestrator function (nor a list of them)")
    return [value]


if __name__ == "__main__":
    sys.exit(main())
