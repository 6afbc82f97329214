"""SqliteStore only: what one store object writes, another on the same file sees.

Both after the first is closed (the data is in the file, not in the object) and while
both are open (leases and fencing live in the database, so two processes share them).
"""

from __future__ import annotations

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
from durable.core.errors import LeaseLostError
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
