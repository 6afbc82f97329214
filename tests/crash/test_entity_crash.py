"""A worker killed (SIGKILL) in the middle of entity work loses and repeats nothing.

Ten orchestrations each send a counter entity 100 one-way `add 1` signals, then call it.
The worker process dies the n-th time it is about to commit (or has just committed) a
group of decisions: orchestration decisions and entity batches alike. A fresh worker
finishes the work. Every orchestration completes and the counter ends at exactly 1,000:
a batch is committed whole with the requests it consumed, or not at all.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_helpers import WAIT, S, Spawn, read_jsonl, wait_for_file
from crash_worker import CW_COUNTER, CW_OTHER, cw_adder, cw_locker

import durable

CASES = [("before_commit", 1), ("before_commit", 3), ("after_commit", 1), ("after_commit", 3)]


@pytest.mark.parametrize(("point", "nth"), CASES)
async def test_a_counter_entity_ends_exact_when_its_worker_is_killed(
    point: str, nth: int, tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "entity.db"
    log = tmp_path / "side-effects.jsonl"
    marker = tmp_path / "marker.jsonl"
    async with durable.SqliteStore(db) as store:
        client = durable.Client(store, poll_interval=0.05)
        ids = [
            await client.schedule_new_orchestration(cw_adder, input=100, instance_id=f"adder-{n}")
            for n in range(10)
        ]
        args: list[str | Path | int | float] = [db, "--log", log, "--point", point]
        crashing = spawn("crashing", [*args, "--nth", nth, "--marker", marker, "--lease", 1.5])
        deadline = time.monotonic() + WAIT
        while crashing.returncode is None:
            assert time.monotonic() < deadline, f"never reached {point} #{nth}\n{crashing.tail()}"
            await asyncio.sleep(0.02)
        assert crashing.returncode == -signal.SIGKILL, crashing.tail()
        assert [k["point"] for k in read_jsonl(marker)] == [point]

        ready = tmp_path / "recovering.ready"
        recovering = spawn("recovering", [db, "--log", log, "--ready", ready])
        await wait_for_file(ready, recovering)
        for iid in ids:
            state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.runtime_status is S.COMPLETED, (iid, state)
        deadline = time.monotonic() + WAIT
        while True:
            found = await client.get_entity(CW_COUNTER)
            if found is not None and found.get_state(int) == 1000:
                break
            assert time.monotonic() < deadline, found and found.get_state()
            await asyncio.sleep(0.05)
        assert await recovering.stop() == 0, recovering.tail()
    # Nothing is added twice: the count stays exact after all work is done.
    async with durable.SqliteStore(db) as store:
        final = await durable.Client(store).get_entity(CW_COUNTER)
        assert final is not None and final.get_state(int) == 1000


async def test_a_critical_section_outlives_a_killed_worker_and_releases_once(
    tmp_path: Path, spawn: Spawn
) -> None:
    """The worker dies (SIGKILL) while a section holds two entities, with a signal from
    elsewhere waiting for one of them: the locks stay held (nothing else runs on them),
    the next worker carries the section on, and its end releases both."""
    db = tmp_path / "locks.db"
    log = tmp_path / "side-effects.jsonl"
    async with durable.SqliteStore(db) as store:
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(cw_locker, instance_id="locker")
        ready = tmp_path / "first.ready"
        first = spawn("first", [db, "--log", log, "--ready", ready])
        await wait_for_file(ready, first)
        meta = await until(client, CW_COUNTER, lambda m: m.get_state(int) == 1)
        assert meta.locked_by is not None and meta.locked_by.startswith("locker/")
        await client.signal_entity(CW_COUNTER, "add", 10)  # waits for the section
        await until(client, CW_COUNTER, lambda m: m.backlog_queue_size == 1)
        first.kill()  # SIGKILL, the section held

        ready = tmp_path / "second.ready"
        second = spawn("second", [db, "--log", log, "--ready", ready])
        await wait_for_file(ready, second)
        await asyncio.sleep(0.3)  # the new worker keeps the section's locks
        meta = await until(client, CW_COUNTER, lambda m: m.get_state(int) == 1)
        assert meta.locked_by is not None and meta.backlog_queue_size == 1
        await client.raise_orchestration_event(iid, "go")
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.get_output() == 2, state
        counter = await until(client, CW_COUNTER, lambda m: m.get_state(int) == 12)
        other = await until(client, CW_OTHER, lambda m: m.get_state(int) == 2)
        assert await second.stop() == 0, second.tail()
    for meta in (counter, other):
        assert (meta.locked_by, meta.backlog_queue_size) == (None, 0)


async def until(
    client: durable.Client,
    entity: durable.EntityInstanceId,
    check: Callable[[durable.EntityMetadata], bool],
) -> durable.EntityMetadata:
    deadline = time.monotonic() + WAIT
    while True:
        found = await client.get_entity(entity)
        if found is not None and check(found):
            return found
        assert time.monotonic() < deadline, found and (found.get_state(), found.locked_by)
        await asyncio.sleep(0.02)
