"""SqliteStore only: what one store object writes, another on the same file sees.

Both after the first is closed (the data is in the file, not in the object) and while
both are open (leases and fencing live in the database, so two processes share them).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import (
    LEASE,
    PAST_LEASE,
    FakeClock,
    S,
    claim,
    claim_one,
    commit,
    decision,
    new_instance,
    raised,
    start,
    to,
)

from durable.core.commands import ScheduleActivity
from durable.core.errors import LeaseLostError, OrchestrationNotFoundError
from durable.core.events import TaskCompleted, TimerFired
from durable.store import SqliteStore
from durable.store.base import ActivityResult, InstanceQuery


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "durable.db"


async def test_data_survives_reopening(path: Path, clock: FakeClock) -> None:
    first = SqliteStore(path, clock=clock)
    try:
        await first.create_instance(new_instance("a", input='"in"'))
        item = await claim_one(first, "a")
        fire_at = clock.at(60)
        timer = TimerFired(timestamp=fire_at, task_id=2, fire_at=fire_at)
        written = await commit(
            first,
            item,
            custom_status='"step 1"',
            activities=(ScheduleActivity(task_id=1, name="fetch", input='"x"'),),
            messages=(to("a", timer, execution_id="e1", visible_at=fire_at),),
        )
        await start(first, "done", status=S.COMPLETED, output='"out"')
        await first.send(to("a", raised("go")))
        await first.create_instance(new_instance("later", visible_at=clock.at(30)))
        states = {iid: await first.get_state(iid) for iid in ("a", "later", "done")}
    finally:
        await first.close()

    second = SqliteStore(path, clock=clock)
    try:
        assert {iid: await second.get_state(iid) for iid in states} == states
        assert await second.get_history("a") == list(written.events)
        page = await second.list_instances(InstanceQuery())
        assert [s.instance_id for s in page.instances] == ["a", "done", "later"]
        assert await second.next_wake_time() is not None

        [act] = await second.claim_activities("w2", 10, LEASE)
        assert (act.instance_id, act.task_id, act.name, act.input) == ("a", 1, "fetch", '"x"')
        item = await claim_one(second, "a", owner="w2")
        assert item.messages == (raised("go"),)
        assert item.history_length == len(written.events)
        await commit(second, item)

        clock.advance(60)
        items = await claim(second, "w2")
        assert set(items) == {"a", "later"}
        assert items["a"].messages == (timer,)
    finally:
        await second.close()


async def test_two_open_stores_share_leases_and_fencing(path: Path, clock: FakeClock) -> None:
    one = SqliteStore(path, clock=clock)
    two = SqliteStore(path, clock=clock)
    try:
        await one.create_instance(new_instance("a"))
        assert (await two.get_state("a")) == (await one.get_state("a"))

        held = await claim_one(one, "a", owner="w1")
        assert await two.claim_orchestrations("w2", 10, LEASE) == []
        clock.advance(PAST_LEASE)
        taken = await claim_one(two, "a", owner="w2")
        outcomes = await one.commit_orchestrations([decision(held)])
        assert isinstance(outcomes[0], LeaseLostError)
        c = await commit(two, taken, activities=(ScheduleActivity(task_id=1, name="x"),))
        assert await one.get_history("a") == list(c.events)

        [act] = await one.claim_activities("w1", 10, LEASE)
        assert await two.claim_activities("w2", 10, LEASE) == []
        done = TaskCompleted(timestamp=clock(), task_id=1, result='"r"')
        await two.complete_activities([ActivityResult(item=act, event=done)])  # any store
        await one.complete_activities([ActivityResult(item=act, event=done)])  # dropped
        item = await claim_one(one, "a")
        assert item.messages == (done,)
    finally:
        await one.close()
        await two.close()


_GHOST = """
import asyncio, os, sys
from durable.store import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    held = await store.claim_orchestrations("ghost", 10, 600.0)
    acts = await store.claim_activities("ghost", 10, 600.0)
    print(len(held), len(acts), flush=True)
    sys.stdin.read()  # lives until the test closes its stdin
    os._exit(0)  # then dies without closing anything

asyncio.run(main())
"""


def ghost(path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """A process that leases what it can of `path` for 10 minutes (as owner "ghost"), and
    dies without a word once its stdin is closed; and how much it leased (instances,
    activities)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _GHOST, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def dies(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


async def test_the_leases_of_a_process_that_died_end_when_a_store_next_opens(
    path: Path,
) -> None:
    """A process leases an instance and an activity for 10 minutes, then dies (no close):
    the next store to open the file ends those leases, and its worker claims both at once.
    While the process lived, its lock file kept them (a store opened then waits)."""
    setup = SqliteStore(path)
    try:
        await setup.create_instance(new_instance("b"))
        b = await claim_one(setup, "b", owner="w1")
        await commit(setup, b, activities=(ScheduleActivity(task_id=1, name="x"),))
        await setup.create_instance(new_instance("a"))
    finally:
        await setup.close()
    proc, leased = ghost(path)
    assert leased == ["1", "1"]
    alive = SqliteStore(path)
    try:  # opened while the ghost lives: its leases stand
        assert await alive.claim_orchestrations("w2", 10, LEASE) == []
        assert await alive.claim_activities("w2", 10, LEASE) == []
    finally:
        await alive.close()
    dies(proc)
    after = SqliteStore(path)
    try:
        [item] = await after.claim_orchestrations("w2", 10, LEASE)
        assert item.instance_id == "a"
        [act] = await after.claim_activities("w2", 10, LEASE)
        assert (act.instance_id, act.task_id) == ("b", 1)
    finally:
        await after.close()
    assert list(path.with_name(path.name + "-owners").iterdir()) == []


async def test_a_store_that_cannot_keep_lock_files_works_with_leases_alone(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.with_name(path.name + "-owners").write_text("not a folder")
    store = SqliteStore(path)
    try:
        await store.create_instance(new_instance("a"))
        with caplog.at_level(logging.WARNING, logger="durable.store.sqlite"):
            await claim_one(store, "a", owner="w1")
        assert "no owner locks" in caplog.text
    finally:
        await store.close()


async def test_concurrent_client_writes_share_a_transaction_and_fail_alone(path: Path) -> None:
    """Creates and sends that wait for the writer together are written together; one that
    fails (an event for an unknown instance) fails alone, and the others are written."""
    store = SqliteStore(path)
    try:
        await store.create_instance(new_instance("a"))
        results = await asyncio.gather(
            *(store.create_instance(new_instance(f"n{k}")) for k in range(50)),
            store.send(to("missing", raised("go"))),
            store.send(to("a", raised("go"))),
            return_exceptions=True,
        )
        assert results[:50] == [None] * 50
        assert isinstance(results[50], OrchestrationNotFoundError)
        assert results[51] is None
        page = await store.list_instances(InstanceQuery(limit=100))
        assert {s.instance_id for s in page.instances} == {"a"} | {f"n{k}" for k in range(50)}
        items = await claim(store, "w1")
        assert items["a"].messages[1:] == (raised("go"),)
    finally:
        await store.close()


async def test_a_store_that_finds_the_database_busy_opens_and_reaps_later(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ending a dead worker's leases waits for no one: with the database locked by another
    connection, the store opens anyway (the leases run out as usual) and a later open ends
    them."""
    setup = SqliteStore(path)
    try:
        await setup.create_instance(new_instance("a"))
    finally:
        await setup.close()
    proc, leased = ghost(path)
    assert leased == ["1", "0"]
    dies(proc)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    busy = SqliteStore(path, busy_timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="durable.store.sqlite"):
            assert (await busy.get_state("a")) is not None  # it opened
        assert "could not end the leases" in caplog.text
    finally:
        await busy.close()
        blocker.execute("ROLLBACK")
        blocker.close()
    after = SqliteStore(path)
    try:
        [item] = await after.claim_orchestrations("w2", 10, LEASE)
        assert item.instance_id == "a"
    finally:
        await after.close()
