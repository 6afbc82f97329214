"""`durable entity list|show|signal` against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import durable
from durable.cli import main
from durable.entities import DurableEntity, EntityInstanceId


class Basket(DurableEntity):
    def put(self, item: str) -> list[str]:
        items = self.get_state(list, [])
        items.append(item)
        self.set_state(items)
        return items


def drain(db: Path, entity: EntityInstanceId, count: int) -> None:
    """Run a worker until `entity` holds `count` items."""

    async def go() -> None:
        async with (
            durable.SqliteStore(db) as store,
            durable.Worker(store, entities=[Basket], poll_interval=0.05),
        ):
            client = durable.Client(store)
            for _ in range(250):
                meta = await client.get_entity(entity)
                if meta is not None and len(meta.get_state(list) or []) == count:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("the signals were not run")

    asyncio.run(go())


def test_signal_show_and_list_entities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.db"
    store = ["--store", f"sqlite:///{db}"]
    assert main(["entity", *store, "signal", "basket@home", "put", "--input", '"milk"']) == 0
    assert main(["entity", *store, "signal", "@basket@home", "put", "--input", '"eggs"']) == 0
    assert main(["entity", *store, "signal", "basket@work", "put", "--input", '"pens"']) == 0
    assert capsys.readouterr().out.splitlines() == [
        "signaled @basket@home: put",
        "signaled @basket@home: put",
        "signaled @basket@work: put",
    ]
    drain(db, EntityInstanceId("basket", "home"), 2)
    drain(db, EntityInstanceId("basket", "work"), 1)

    assert main(["entity", *store, "show", "basket@home"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "@basket@home"
    assert shown["state"] == ["milk", "eggs"]
    assert (shown["locked_by"], shown["backlog"]) == (None, 0)

    assert main(["entity", *store, "list", "basket", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["id"], e["state"]) for e in listed] == [
        ("@basket@home", ["milk", "eggs"]),
        ("@basket@work", ["pens"]),
    ]
    assert main(["entity", *store, "list", "basket", "--key-prefix", "wo"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("@basket@work  ") and line.endswith('["pens"]')


def test_mistakes_get_a_message_and_an_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", f"sqlite:///{tmp_path / 'cli.db'}"]
    assert main(["entity", *store, "show", "basket@nobody"]) == 1
    assert "no entity @basket@nobody" in capsys.readouterr().err
    assert main(["entity", *store, "show", "no-at-sign"]) == 2
    assert "@name@key" in capsys.readouterr().err
    assert main(["entity", *store, "signal", "basket@x", "put", "--input", "{oops"]) == 2
    assert "--input is not JSON" in capsys.readouterr().err
    assert main(["entity", *store, "list", "--key-prefix", "x"]) == 2
    assert "key_prefix needs the entity name" in capsys.readouterr().err
    assert main(["entity", "--store", "nosuch://x", "list"]) == 2
    assert "cannot open the store" in capsys.readouterr().err
