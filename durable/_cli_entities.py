"""`durable entity ...`: list, show and signal durable entities in any store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from durable._cli_instances import DEFAULT_STORE, default_store
from durable.client import Client
from durable.core.entity import EntityInstanceId, EntityMetadata
from durable.core.errors import DurableError
from durable.store.open import open_store

_SHOWN = 200  # characters of a state on a `list` line


def add_parser(commands: Any) -> None:
    """The `entity` command and its subcommands."""
    entity = commands.add_parser("entity", help="list, show and signal durable entities")
    entity.add_argument(
        "--store", default=None, metavar="URL", help=f"default: $DURABLE_STORE or {DEFAULT_STORE}"
    )
    actions = entity.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="entities, oldest first")
    listing.add_argument("name", nargs="?", help="only entities of this name")
    listing.add_argument("--key-prefix", default="", help="with a name: keys starting so")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one entity: its state, lock and backlog")
    show.add_argument("entity", metavar="ID", help="@name@key, or name@key")
    signal = actions.add_parser("signal", help="send an entity a one-way operation")
    signal.add_argument("entity", metavar="ID", help="@name@key, or name@key")
    signal.add_argument("operation")
    signal.add_argument("--input", metavar="JSON", help="the operation's input, as JSON")


async def run(args: argparse.Namespace) -> int:
    """Run `durable entity ...`; returns the exit code."""
    url = args.store or default_store()
    try:
        store = open_store(url)
    except (ValueError, DurableError) as e:
        return _fail(f"cannot open the store {url!r}: {e}", 2)
    try:
        client = Client(store)
        match args.action:
            case "list":
                entities = client.list_entities(
                    args.name, key_prefix=args.key_prefix, limit=args.limit
                )
                async for meta in entities:
                    print(json.dumps(_record(meta)) if args.json else _line(meta))
            case "show":
                entity = _entity_id(args.entity)
                found = await client.get_entity(entity)
                if found is None:
                    return _fail(f"no entity {entity} (it was never sent an operation)", 1)
                print(json.dumps(_record(found), indent=2))
            case _:
                entity = _entity_id(args.entity)
                value = None if args.input is None else json.loads(args.input)
                await client.signal_entity(entity, args.operation, value)
                print(f"signaled {entity}: {args.operation}")
    except json.JSONDecodeError as e:
        return _fail(f"--input is not JSON: {e}", 2)
    except ValueError as e:
        return _fail(str(e), 2)
    except DurableError as e:
        return _fail(f"{type(e).__name__}: {e}", 1)
    finally:
        await store.close()
    return 0


def _entity_id(text: str) -> EntityInstanceId:
    return EntityInstanceId.parse(text if text.startswith("@") else f"@{text}")


def _record(meta: EntityMetadata) -> dict[str, Any]:
    state = meta.get_state()
    return {
        "id": str(meta.id),
        "last_modified": meta.last_modified.isoformat(),
        "locked_by": meta.locked_by,
        "backlog": meta.backlog_queue_size,
        "state": None if state is None else json.loads(state),
    }


def _line(meta: EntityMetadata) -> str:
    state = meta.get_state() or "-"
    if len(state) > _SHOWN:
        state = state[:_SHOWN] + "..."
    lock = f"  locked by {meta.locked_by}" if meta.locked_by else ""
    return f"{meta.id}  {meta.last_modified.isoformat(timespec='seconds')}  {state}{lock}"


def _fail(message: str, code: int) -> int:
    print(f"durable entity: {message}", file=sys.stderr)
    return code
