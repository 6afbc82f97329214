"""`durable worker module[:attr]`: run a worker for a registry defined in user code.

The target is one of:
- a mapping, or an object (a module, a namespace), with any of `orchestrators`,
  `activities`, `entities` and `limits` (lists, as `durable.Worker` takes them);
- a function that takes the store and returns a `durable.Worker` (for every other
  setting).

The worker runs until SIGINT or SIGTERM, then stops gracefully: activities under way get
the worker's shutdown grace to finish; nothing is lost if they do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from durable.core.errors import DurableError
from durable.store.base import Store
from durable.store.open import open_store
from durable.worker import Worker

_PARTS = ("orchestrators", "activities", "entities", "limits")


def add_parser(commands: Any, default_store: str) -> None:
    worker = commands.add_parser(
        "worker",
        help="run a worker for orchestrators and activities defined in your code",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("target", metavar="module[:attr]", help="where the registry is")
    worker.add_argument("--store", default=None, metavar="URL", help=f"default: {default_store}")
    worker.add_argument("--max-activities", type=int, default=None, metavar="N")
    worker.add_argument("--max-orchestrations", type=int, default=None, metavar="N")


def run(args: argparse.Namespace, store_url: str) -> int:
    try:
        target = load(args.target)
        store = open_store(store_url)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        print(f"durable worker: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(target, store, args))
    except (ValueError, TypeError) as e:
        print(f"durable worker: {e}", file=sys.stderr)
        return 2
    except DurableError as e:
        print(f"durable worker: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def load(target: str) -> Any:
    """What `module[:attr.attr...]` names, the module imported from the current directory
    as `python -m` would."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise ValueError(f"{target!r}: expected module or module:attr, like app.tasks:registry")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    value: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


def build(target: Any, store: Store, args: argparse.Namespace) -> Worker:
    """The worker `target` describes (see the module's doc)."""
    options: dict[str, Any] = {}
    if args.max_activities is not None:
        options["max_concurrent_activities"] = args.max_activities
    if args.max_orchestrations is not None:
        options["max_concurrent_orchestrations"] = args.max_orchestrations
    if isinstance(target, Mapping):
        parts: dict[str, Any] = {k: list(target[k]) for k in _PARTS if k in target}
    elif any(hasattr(target, k) for k in _PARTS):
        parts = {k: list(getattr(target, k)) for k in _PARTS if hasattr(target, k)}
    elif _is_factory(target):
        if options:
            raise ValueError("--max-* options apply to a registry; a factory sets its own")
        made = target(store)
        if not isinstance(made, Worker):
            raise TypeError(f"{target!r} returned {type(made).__name__}, not a durable.Worker")
        return made
    else:
        raise TypeError(
            f"{target!r} is not a registry: point at a module or mapping with "
            "orchestrators=[...], activities=[...], or at a function store -> Worker"
        )
    return Worker(store, **parts, **options)


def _is_factory(target: Any) -> bool:
    """A function of one argument (the store), not an orchestrator."""
    if not callable(target) or inspect.isgeneratorfunction(target):
        return False
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


async def _serve(target: Any, store: Store, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        worker = build(target, store, args)
        async with worker:
            print(f"durable worker: {worker.id} running on {store!r}", file=sys.stderr, flush=True)
            await stop.wait()
            print("durable worker: stopping", file=sys.stderr, flush=True)
    finally:
        await store.close()
    return 0
