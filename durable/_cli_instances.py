"""`durable list|show|history|watch|raise-event|terminate|...`: orchestrations from a shell.

Every command takes `--store URL` (default: `$DURABLE_STORE`, else `sqlite:///durable.db`).
Exit codes: 0 done; 1 the instance or the operation said no (not found, wrong state);
2 bad usage (an argument, JSON that does not parse, a store that cannot be opened).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from durable import _timeline
from durable.client import Client
from durable.core.errors import (
    DurableError,
    OrchestrationNotFoundError,
    OrchestrationStateError,
)
from durable.core.events import ChildOrchestrationCreated, FailureDetails
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import InstanceQuery, Store
from durable.store.open import open_store

DEFAULT_STORE = "sqlite:///durable.db"
_STATUSES = [s.value for s in OrchestrationStatus]
_FINISHED = (
    OrchestrationStatus.COMPLETED,
    OrchestrationStatus.FAILED,
    OrchestrationStatus.TERMINATED,
)
_ACTIVE = (
    OrchestrationStatus.PENDING,
    OrchestrationStatus.RUNNING,
    OrchestrationStatus.SUSPENDED,
)


class UsageError(Exception):
    """Bad input on the command line: exit code 2."""


class RefusedError(Exception):
    """The instance or the store said no: exit code 1."""


def default_store() -> str:
    return os.environ.get("DURABLE_STORE") or DEFAULT_STORE


def add_parsers(commands: Any) -> None:
    """The instance commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help=f"sqlite:///path.db, postgresql://... (default: $DURABLE_STORE or {DEFAULT_STORE})",
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[common]
        )
        return parser

    listing = command("list", "orchestrations, oldest first, with filters and paging")
    _add_filters(listing)
    listing.add_argument("--limit", type=_positive, default=50, help="a page's size (50)")
    listing.add_argument("--page-token", metavar="TOKEN", help="the page after a previous one")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = command("show", "one orchestration: state, custom status, failure, children")
    show.add_argument("instance_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="as one JSON object")

    history = command("history", "an orchestration's history as a timeline")
    history.add_argument("instance_id", metavar="ID")
    history.add_argument(
        "--json", action="store_true", help="the exact history JSON (for `durable replay`)"
    )

    watch = command("watch", "live progress of the orchestrations under way")
    watch.add_argument("--name", help="only orchestrations of this name")
    watch.add_argument("--interval", type=_seconds, default=1.0, help="seconds between frames")
    watch.add_argument("--limit", type=_positive, default=20, help="instances shown (20)")
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    watch.add_argument(
        "--until-done", action="store_true", help="exit once none is pending or running"
    )

    event = command("raise-event", "send an event to an orchestration")
    event.add_argument("instance_id", metavar="ID")
    event.add_argument("event_name", metavar="NAME")
    event.add_argument("--data", metavar="JSON", help="the event's data, as JSON")

    terminate = command("terminate", "stop an orchestration (and its children) as TERMINATED")
    terminate.add_argument("instance_id", metavar="ID")
    terminate.add_argument("--output", metavar="JSON", help="its output, as JSON")
    terminate.add_argument(
        "--no-children", action="store_true", help="leave its running children alone"
    )

    for name, what in (("suspend", "pause an orchestration"), ("resume", "resume one")):
        sub = command(name, what)
        sub.add_argument("instance_id", metavar="ID")
        sub.add_argument("--reason", help="recorded in its history")

    restart = command("restart", "run a finished orchestration again from its input")
    restart.add_argument("instance_id", metavar="ID")

    rewind = command("rewind", "run a failed orchestration on from where it failed")
    rewind.add_argument("instance_id", metavar="ID")
    rewind.add_argument("--reason", help="recorded in its history")

    fork = command("fork", "a new orchestration that goes on from step N of another")
    fork.add_argument("instance_id", metavar="ID")
    fork.add_argument(
        "--at", type=_positive, required=True, metavar="N", help="history events to keep"
    )
    fork.add_argument("--new-id", metavar="ID", help="the new instance's id")

    purge = command("purge", "delete finished orchestrations and their histories")
    purge.add_argument("instance_ids", nargs="*", metavar="ID")
    _add_filters(purge)
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        action="append",
        type=str.upper,
        choices=_STATUSES,
        help="repeatable; any of " + ", ".join(_STATUSES),
    )
    parser.add_argument("--name", help="the orchestrator's name")
    parser.add_argument(
        "--since",
        type=_time,
        metavar="TIME",
        help="created at or after: ISO time, or an age like 30s, 15m, 2h, 7d",
    )
    parser.add_argument("--until", type=_time, metavar="TIME", help="created at or before")


COMMANDS = (
    "list",
    "show",
    "history",
    "watch",
    "raise-event",
    "terminate",
    "suspend",
    "resume",
    "restart",
    "rewind",
    "fork",
    "purge",
)


def run(args: argparse.Namespace) -> int:
    """Run one instance command; returns the exit code."""
    name = args.command
    try:
        store = open_for_reading(args.store or default_store())
    except UsageError as e:
        return _fail(name, str(e), 2)
    handler = _HANDLERS[name]
    try:
        return asyncio.run(_with_store(store, handler, args))
    except UsageError as e:
        return _fail(name, str(e), 2)
    except (RefusedError, OrchestrationNotFoundError, OrchestrationStateError) as e:
        return _fail(name, str(e), 1)
    except DurableError as e:
        return _fail(name, f"{type(e).__name__}: {e}", 1)
    except KeyboardInterrupt:
        return 130


def open_for_reading(url: str) -> Store:
    """The store at `url`; a SQLite file must exist already (reading makes none)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite":
        path = Path(rest[1:] if rest.startswith("/") else rest)
        if rest and not path.exists():  # (reading must not make an empty database)
            raise UsageError(f"no database at {str(path)!r} (use --store or $DURABLE_STORE)")
    try:
        return open_store(url)
    except ValueError as e:
        raise UsageError(str(e)) from e


async def _with_store(
    store: Store,
    handler: Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]],
    args: argparse.Namespace,
) -> int:
    try:
        return await handler(Client(store), args)
    finally:
        await store.close()


def _fail(command: str, message: str, code: int) -> int:
    print(f"durable {command}: {message}", file=sys.stderr)
    return code


# -- reading ---------------------------------------------------------------------------


async def _list(client: Client, args: argparse.Namespace) -> int:
    query = InstanceQuery(
        statuses=tuple(OrchestrationStatus(s) for s in args.status or ()),
        name=args.name,
        created_from=args.since,
        created_to=args.until,
        limit=args.limit,
        after=args.page_token,
        entities=False,
    )
    try:
        page = await client.store.list_instances(query)
    except ValueError as e:  # a page token that is not one
        raise UsageError(f"--page-token: {e}") from e
    for state in page.instances:
        print(json.dumps(record(state)) if args.json else _row(state))
    if page.next_token is not None:
        print(f"(more: add --page-token {page.next_token})", file=sys.stderr)
    return 0


def _row(state: OrchestrationState) -> str:
    created = state.created_at.astimezone(UTC).isoformat(timespec="seconds")
    return f"{state.instance_id}  {state.name}  {state.runtime_status.value}  {created}"


def record(state: OrchestrationState) -> dict[str, Any]:
    """An instance's state as plain JSON values (payloads decoded where they are JSON)."""
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "status": state.runtime_status.value,
        "created_at": state.created_at.isoformat(),
        "last_updated_at": state.last_updated_at.isoformat(),
        "input": _payload(state.serialized_input),
        "output": _payload(state.serialized_output),
        "custom_status": _payload(state.serialized_custom_status),
        "failure": None if state.failure_details is None else _failure(state.failure_details),
        "parent_instance_id": state.parent_instance_id,
    }


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _failure(f: FailureDetails) -> dict[str, Any]:
    return {
        "error_type": f.error_type,
        "message": f.message,
        "stack_trace": f.stack_trace,
        "inner": None if f.inner is None else _failure(f.inner),
    }


async def _state(client: Client, instance_id: str) -> OrchestrationState:
    state = await client.get_orchestration_state(instance_id)
    if state is None:
        raise RefusedError(f"no orchestration has id {instance_id!r}")
    return state


def _refused(state: OrchestrationState, why: str) -> RefusedError:
    return RefusedError(f"{state.instance_id!r} is {state.runtime_status.value}: {why}")


async def _show(client: Client, args: argparse.Namespace) -> int:
    state = await _state(client, args.instance_id)
    history = await client.get_orchestration_history(args.instance_id)
    children = []
    for event in history:
        if isinstance(event, ChildOrchestrationCreated):
            child = await client.get_orchestration_state(event.instance_id)
            status = child.runtime_status.value if child is not None else "purged"
            children.append(
                {"instance_id": event.instance_id, "name": event.name, "status": status}
            )
    if args.json:
        print(json.dumps({**record(state), "children": children}, indent=2))
        return 0
    fields = [
        ("instance", state.instance_id),
        ("name", state.name),
        ("status", state.runtime_status.value),
        ("created", state.created_at.isoformat()),
        ("updated", state.last_updated_at.isoformat()),
        ("input", _timeline.cut(state.serialized_input, 400)),
        ("output", _timeline.cut(state.serialized_output, 400)),
        ("custom status", _timeline.cut(state.serialized_custom_status, 400)),
        ("history", f"{len(history)} events (durable history {state.instance_id})"),
    ]
    if state.parent_instance_id:
        fields.append(("parent", state.parent_instance_id))
    for name, value in fields:
        print(f"{name:<14}{value}")
    failure = state.failure_details
    if failure is not None:
        blocked = "" if state.runtime_status is OrchestrationStatus.FAILED else " (blocked)"
        print(f"{'failure' + blocked:<14}{failure.error_type}: {failure.message}")
        if failure.stack_trace:
            print("  " + failure.stack_trace.rstrip().replace("\n", "\n  "))
    if children:
        print(f"children      {len(children)}")
        for c in children:
            print(f"  {c['instance_id']}  {c['name']}  {c['status']}")
    return 0


async def _history(client: Client, args: argparse.Namespace) -> int:
    await _state(client, args.instance_id)
    history = await client.get_orchestration_history(args.instance_id)
    if args.json:
        print(history.to_json())
        return 0
    if not history:
        print("(no history yet: the instance has not started)")
        return 0
    start = min(e.timestamp for e in history)  # (events are stamped by several clocks)
    for line in _timeline.lines(history):
        offset = (line.at - start).total_seconds()
        mark = "!" if line.failed else " "
        print(f"{mark}{line.number:>5}  {offset:>+10.3f}s  {line.category:<8}  {line.text}")
    return 0


async def _watch(client: Client, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    while True:
        frame, moving = await _frame(client, args)
        if tty:
            sys.stdout.write("\x1b[H\x1b[J")
        print(frame, flush=True)
        if args.once or (args.until_done and not moving):
            return 0
        if not tty:
            print()
        await asyncio.sleep(args.interval)


async def _frame(client: Client, args: argparse.Namespace) -> tuple[str, int]:
    """One display of the instances under way; and how many are pending or running."""
    counts = await status_counts(client, args.name)
    now = datetime.now(UTC)
    head = "  ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)
    out = [f"durable watch  {now.isoformat(timespec='seconds')}  {head or 'no orchestrations'}"]
    shown = [
        s
        async for s in client.list_orchestrations(status=_ACTIVE, name=args.name, limit=args.limit)
    ]
    for state in shown:
        history = await client.get_orchestration_history(state.instance_id)
        spans = _timeline.spans(history)
        done = sum(1 for s in spans if s.end is not None)
        width = 20
        filled = round(width * done / len(spans)) if spans else 0
        bar = "#" * filled + "." * (width - filled)
        age = (now - state.created_at).total_seconds()
        custom = _timeline.cut(state.serialized_custom_status, 40)
        out.append(
            f"  {state.instance_id:<24} {state.name:<16} {state.runtime_status.value:<9}"
            f" [{bar}] {done}/{len(spans)} steps  {age:>7.1f}s  {custom}"
        )
    active = sum(counts[s.value] for s in _ACTIVE)
    if active > len(shown):
        out.append(f"  ... and {active - len(shown)} more")
    moving = counts[OrchestrationStatus.PENDING.value] + counts[OrchestrationStatus.RUNNING.value]
    return "\n".join(out), moving


COUNT_CAP = 10_000
"""Counts stop here: a status with more shows this many."""


async def status_counts(client: Client, name: str | None = None) -> dict[str, int]:
    """How many orchestrations (of `name`, if given) are in each status, up to COUNT_CAP."""
    counts: dict[str, int] = {}
    for status in OrchestrationStatus:
        n = 0
        async for _ in client.list_orchestrations(
            status=status, name=name, limit=COUNT_CAP, page_size=1000
        ):
            n += 1
        counts[status.value] = n
    return counts


# -- acting ----------------------------------------------------------------------------


async def _raise_event(client: Client, args: argparse.Namespace) -> int:
    state = await _state(client, args.instance_id)
    if state.runtime_status in _FINISHED:
        raise _refused(state, "it takes no events")
    await client.raise_orchestration_event(
        args.instance_id, args.event_name, data=_json(args.data, "--data")
    )
    print(f"sent {args.event_name!r} to {args.instance_id}")
    return 0


async def _terminate(client: Client, args: argparse.Namespace) -> int:
    state = await _state(client, args.instance_id)
    if state.runtime_status in _FINISHED:
        raise RefusedError(f"{args.instance_id!r} is already {state.runtime_status.value}")
    output = _json(args.output, "--output")
    await client.terminate_orchestration(
        args.instance_id, output=output, recursive=not args.no_children
    )
    print(f"terminating {args.instance_id}")
    return 0


async def _suspend(client: Client, args: argparse.Namespace) -> int:
    state = await _state(client, args.instance_id)
    if state.runtime_status not in (OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING):
        raise _refused(state, "nothing to suspend")
    await client.suspend_orchestration(args.instance_id, reason=args.reason)
    print(f"suspending {args.instance_id}")
    return 0


async def _resume(client: Client, args: argparse.Namespace) -> int:
    state = await _state(client, args.instance_id)
    if state.runtime_status is not OrchestrationStatus.SUSPENDED:
        raise RefusedError(f"{args.instance_id!r} is {state.runtime_status.value}, not SUSPENDED")
    await client.resume_orchestration(args.instance_id, reason=args.reason)
    print(f"resuming {args.instance_id}")
    return 0


async def _restart(client: Client, args: argparse.Namespace) -> int:
    await client.restart_orchestration(args.instance_id)
    print(f"restarted {args.instance_id}")
    return 0


async def _rewind(client: Client, args: argparse.Namespace) -> int:
    await client.rewind_orchestration(args.instance_id, reason=args.reason)
    print(f"rewinding {args.instance_id}")
    return 0


async def _fork(client: Client, args: argparse.Namespace) -> int:
    try:
        new = await client.fork_orchestration(
            args.instance_id, at=args.at, new_instance_id=args.new_id
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(new)
    return 0


async def _purge(client: Client, args: argparse.Namespace) -> int:
    filtered = bool(args.status or args.name or args.since or args.until)
    if filtered == bool(args.instance_ids):
        raise UsageError("give instance ids, or filters (--status, --name, --since, --until)")
    if args.instance_ids:
        ids = list(dict.fromkeys(args.instance_ids))
        for iid in ids:
            state = await _state(client, iid)
            if state.runtime_status not in _FINISHED:
                raise RefusedError(f"{iid!r} is {state.runtime_status.value}: only finished ones")
    else:
        statuses = [OrchestrationStatus(s) for s in args.status or ()] or list(_FINISHED)
        unfinished = [s.value for s in statuses if s not in _FINISHED]
        if unfinished:
            raise UsageError(f"only finished instances can be purged, not {', '.join(unfinished)}")
        ids = [
            s.instance_id
            async for s in client.list_orchestrations(
                status=statuses, name=args.name, created_from=args.since, created_to=args.until
            )
        ]
    if not ids:
        print("nothing to purge")
        return 0
    if not args.yes:
        _confirm(f"purge {len(ids)} instance(s) and their histories, children included?")
    deleted = 0
    for iid in ids:
        deleted += await client.purge_orchestration(iid)
    print(f"purged {deleted} instance(s)")
    return 0


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Refusing without a terminal: add --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise RefusedError("not confirmed; nothing was purged")


_HANDLERS: dict[str, Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "list": _list,
    "show": _show,
    "history": _history,
    "watch": _watch,
    "raise-event": _raise_event,
    "terminate": _terminate,
    "suspend": _suspend,
    "resume": _resume,
    "restart": _restart,
    "rewind": _rewind,
    "fork": _fork,
    "purge": _purge,
}


# -- argument types --------------------------------------------------------------------


def _json(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise UsageError(f"{option} is not JSON: {e}") from e


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        _bad(f"{text!r} is not a whole number")
    if value < 1:
        _bad(f"{value} is not positive")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        _bad(f"{text!r} is not a number of seconds")
    if not value > 0:
        _bad(f"{text} is not positive")
    return value


_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str) -> datetime:
    """An ISO time (UTC if it names no zone), or an age before now: 30s, 15m, 2h, 7d.

    Raises:
        ValueError: it is neither.
    """
    age = _AGE.fullmatch(text.strip())
    if age is not None:
        return datetime.now(UTC) - timedelta(seconds=float(age[1]) * _UNITS[age[2]])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time nor an age like 15m") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as e:
        _bad(str(e))


def _bad(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)
