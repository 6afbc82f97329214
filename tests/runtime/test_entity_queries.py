"""Reading entities from clients, on every store: listing, metadata, the sync client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runtime_helpers import WAIT

import durable
from durable import task
from durable.entities import DurableEntity, EntityInstanceId


class Tally(DurableEntity):
    def add(self, amount: int) -> int:
        total = self.get_state(int, 0) + amount
        self.set_state(total)
        return total


def holds(ctx: task.OrchestrationContext, key: str) -> Any:
    with (yield ctx.lock_entities([EntityInstanceId("tally", key)])):
        yield ctx.wait_for_external_event("go")
    return "released"


def worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(store, orchestrators=[holds], entities=[Tally], poll_interval=0.05)


async def settled(client: durable.Client, entity: EntityInstanceId, value: int) -> None:
    for _ in range(250):
        meta = await client.get_entity(entity)
        if meta is not None and meta.get_state(int) == value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{entity} never reached {value}")


async def test_entities_are_listed_by_name_and_key_prefix_and_not_as_orchestrations(
    store: durable.Store,
) -> None:
    keys = ["user-1", "user-2", "team-1"]
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        for n, key in enumerate(keys):
            await client.signal_entity(EntityInstanceId("Tally", key), "add", n + 1)
        await client.signal_entity(EntityInstanceId("other", "x"), "add", 1)  # not registered
        for n, key in enumerate(keys):
            await settled(client, EntityInstanceId("tally", key), n + 1)
        iid = await client.schedule_new_orchestration(holds, input="team-1")

        every = [m async for m in client.list_entities()]
        tallies = [m async for m in client.list_entities("TALLY", page_size=1)]
        users = [m async for m in client.list_entities("tally", key_prefix="user-")]
        bare = [m async for m in client.list_entities("tally", include_state=False, limit=2)]
        orchestrations = [s.instance_id async for s in client.list_orchestrations()]
        await client.raise_orchestration_event(iid, "go")
        await client.wait_for_orchestration_completion(iid, timeout=WAIT)

    assert {str(m.id) for m in every} == {
        "@tally@user-1",
        "@tally@user-2",
        "@tally@team-1",
        "@other@x",
    }
    assert [m.id.key for m in tallies] == keys
    assert [(m.id.key, m.get_state(int)) for m in users] == [("user-1", 1), ("user-2", 2)]
    assert [(m.includes_state, m.get_state()) for m in bare] == [(False, None), (False, None)]
    assert orchestrations == [iid]


async def test_metadata_shows_who_holds_an_entity_and_what_waits_for_it(
    store: durable.Store,
) -> None:
    team = EntityInstanceId("tally", "team-2")
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(holds, input="team-2")
        for _ in range(250):
            meta = await client.get_entity(team)
            if meta is not None and meta.locked_by is not None:
                break
            await asyncio.sleep(0.02)
        assert meta is not None and meta.locked_by is not None
        assert meta.locked_by.startswith(f"{iid}/")
        await client.signal_entity(team, "add", 5)
        for _ in range(250):
            meta = await client.get_entity(team)
            if meta is not None and meta.backlog_queue_size == 1:
                break
            await asyncio.sleep(0.02)
        assert meta is not None and meta.backlog_queue_size == 1 and meta.get_state() is None
        await client.raise_orchestration_event(iid, "go")
        await settled(client, team, 5)
        meta = await client.get_entity(team)
    assert meta is not None and (meta.locked_by, meta.backlog_queue_size) == (None, 0)


def test_the_sync_client_signals_reads_and_lists_entities(sync_store: durable.Store) -> None:
    entity = EntityInstanceId("tally", "sync")
    running = worker(sync_store)
    running.start_in_thread()
    try:
        with durable.SyncClient(sync_store, poll_interval=0.05) as client:
            client.signal_entity(entity, "add", 3)
            client.signal_entity(entity, "add", 4)
            deadline = time.monotonic() + WAIT
            meta = client.get_entity(entity)
            while (meta is None or meta.get_state(int) != 7) and time.monotonic() < deadline:
                time.sleep(0.02)
                meta = client.get_entity(entity)
            assert meta is not None and meta.get_state(int) == 7
            assert [str(m.id) for m in client.list_entities("tally")] == ["@tally@sync"]
    finally:
        running.stop()
