"""Decisions made on activity results directly, without a claim (the stores whose
`direct_results` is true: SQLite and Postgres).

A worker that holds an instance's execution in memory decides on its activities' results
at once and commits decision and results together. The store writes that only when the
instance is idle and unchanged; otherwise the results become messages, as if they had
been recorded with `complete_activities`, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_helpers import new_hub
from store_helpers import (
    LEASE,
    PAST_LEASE,
    T0,
    FakeClock,
    S,
    claim,
    claim_one,
    commit,
    decision,
    raised,
    start,
    to,
)

import durable
from durable import task
from durable.core.commands import ScheduleActivity
from durable.core.errors import LeaseLostError
from durable.core.events import OrchestratorStarted, TaskCompleted, TaskScheduled
from durable.store import PostgresStore, SqliteStore, Store
from durable.store.base import (
    ActivityResult,
    ActivityWorkItem,
    OrchestrationCommit,
    OrchestrationWorkItem,
)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        opened = PostgresStore(url, hub=new_hub(), clock=clock, sticky_seconds=0)
    else:
        opened = SqliteStore(tmp_path / "durable.db", clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


FETCH = ScheduleActivity(task_id=1, name="fetch", input='"x"')


async def running(store: Store, iid: str = "a") -> tuple[int, ActivityWorkItem]:
    """`iid` running, waiting for the activity it scheduled, which a worker has taken;
    its history length and that activity."""
    history = await start(store, iid, activities=(FETCH,))
    [activity] = await store.claim_activities("w1", 10, LEASE)
    return len(history), activity


def on_results(
    iid: str, length: int, *activities: ActivityWorkItem, **fields: object
) -> OrchestrationCommit:
    """A decision on the activities' results made without a claim, as a worker makes it."""
    results = tuple(
        ActivityResult(item=a, event=TaskCompleted(timestamp=T0, task_id=a.task_id))
        for a in activities
    )
    item = OrchestrationWorkItem(
        instance_id=iid,
        execution_id="e1",
        name="orch",
        history_length=length,
        messages=tuple(r.event for r in results),
        message_ids=(),
        lease_owner="w1",
    )
    return decision(item, results=results, **fields)


async def test_an_idle_instance_takes_the_decision_and_its_results_in_one_commit(
    store: Store, clock: FakeClock
) -> None:
    length, activity = await running(store)
    then = ScheduleActivity(task_id=2, name="fetch", input='"y"')
    direct = on_results("a", length, activity, activities=(then,))

    assert await store.commit_orchestrations([direct]) == [None]

    history = await store.get_history("a")
    assert history[length:] == list(direct.events)
    assert (await store.get_state("a")).runtime_status is S.RUNNING  # type: ignore[union-attr]
    clock.advance(PAST_LEASE)
    assert await claim(store) == {}  # the result is not waiting as a message as well
    [following] = await store.claim_activities("w2", 10, LEASE)
    assert following.task_id == 2  # the finished activity is gone; the next one waits


async def test_a_waiting_event_sends_the_results_the_usual_way(store: Store) -> None:
    length, activity = await running(store)
    await store.send(to("a", raised("go")))

    [outcome] = await store.commit_orchestrations([on_results("a", length, activity)])

    assert isinstance(outcome, LeaseLostError) and "busy" in str(outcome)
    assert len(await store.get_history("a")) == length
    item = await claim_one(store, "a")
    assert [type(m) for m in item.messages] == [type(raised("go")), TaskCompleted]


async def test_an_instance_leased_elsewhere_keeps_its_lease_and_gets_the_results_later(
    store: Store,
) -> None:
    length, activity = await running(store)
    await store.send(to("a", raised("go")))
    other = await claim_one(store, "a", owner="w2")

    [outcome] = await store.commit_orchestrations([on_results("a", length, activity)])

    assert isinstance(outcome, LeaseLostError) and "busy" in str(outcome)
    await commit(store, other)  # the lease held: w2's decision is written
    item = await claim_one(store, "a")
    assert [type(m) for m in item.messages] == [TaskCompleted]
    assert item.history_length == length + 2


async def test_a_decision_on_an_old_history_is_not_written(store: Store) -> None:
    length, activity = await running(store)
    await store.send(to("a", raised("go")))
    await commit(store, await claim_one(store, "a"))  # the history moved on

    [outcome] = await store.commit_orchestrations([on_results("a", length, activity)])

    assert isinstance(outcome, LeaseLostError) and "stale" in str(outcome)
    item = await claim_one(store, "a")
    assert [type(m) for m in item.messages] == [TaskCompleted]


async def test_a_result_recorded_elsewhere_first_is_dropped(store: Store) -> None:
    length, activity = await running(store)
    first = TaskCompleted(timestamp=T0, task_id=1, result='"first"')
    await store.complete_activities([ActivityResult(item=activity, event=first)])

    [outcome] = await store.commit_orchestrations([on_results("a", length, activity)])

    assert isinstance(outcome, LeaseLostError) and "stale" in str(outcome)
    item = await claim_one(store, "a")
    assert item.messages == (first,)


async def test_a_suspended_instance_gets_the_results_as_messages(store: Store) -> None:
    await start(store, "a", activities=(FETCH,))
    [activity] = await store.claim_activities("w1", 10, LEASE)
    await store.send(to("a", raised("pause")))
    suspended = await commit(store, await claim_one(store, "a"), status=S.SUSPENDED)
    length = suspended.item.history_length + len(suspended.events)

    [outcome] = await store.commit_orchestrations([on_results("a", length, activity)])

    assert isinstance(outcome, LeaseLostError) and "busy" in str(outcome)
    assert len(await store.get_history("a")) == length
    item = await claim_one(store, "a")
    assert [type(m) for m in item.messages] == [TaskCompleted]


async def test_one_decision_that_is_not_written_leaves_the_others_alone(
    store: Store,
) -> None:
    a_length, a_activity = await running(store, "a")
    b_length, b_activity = await running(store, "b")
    await store.send(to("b", raised("go")))

    outcomes = await store.commit_orchestrations(
        [on_results("a", a_length, a_activity), on_results("b", b_length, b_activity)]
    )

    assert outcomes[0] is None and isinstance(outcomes[1], LeaseLostError)
    assert len(await store.get_history("a")) == a_length + 2
    item = await claim_one(store, "b")
    assert [type(m) for m in item.messages] == [type(raised("go")), TaskCompleted]


# -- through a worker ------------------------------------------------------------------


async def step(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def chain(ctx: task.OrchestrationContext, n: int):  # type: ignore[no-untyped-def]
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(step, input=x)
    return x


class Counting(SqliteStore):
    """Counts how activity results reach the store, and the work items claimed."""

    completed = 0
    direct = 0
    claimed = 0

    async def claim_orchestrations(self, owner, limit, lease_seconds):  # type: ignore[no-untyped-def]
        items = await super().claim_orchestrations(owner, limit, lease_seconds)
        self.claimed += len(items)
        return items

    async def complete_activities(self, results):  # type: ignore[no-untyped-def]
        self.completed += len(results)
        await super().complete_activities(results)

    async def commit_orchestrations(self, commits, take=None):  # type: ignore[no-untyped-def]
        self.direct += sum(len(c.results) for c in commits)
        return await super().commit_orchestrations(commits, take)


async def test_a_worker_records_a_chain_with_its_decisions_and_the_history_is_the_same(
    tmp_path: Path,
) -> None:
    histories = []
    for store in (Counting(tmp_path / "direct.db"), durable.MemoryStore()):
        async with store, durable.Worker(store, orchestrators=[chain], activities=[step]):
            client = durable.Client(store)
            iid = await client.schedule_new_orchestration(chain, input=20)
            state = await client.wait_for_orchestration_completion(iid, timeout=30)
            assert state is not None and state.get_output() == 20
            histories.append([type(e).__name__ for e in await store.get_history(iid)])
        if isinstance(store, Counting):
            assert (store.direct, store.completed) == (20, 0)
    assert histories[0] == histories[1]
    assert histories[0].count(TaskScheduled.__name__) == 20
    assert histories[0].count(OrchestratorStarted.__name__) == 21


async def test_a_worker_that_does_not_hold_the_instance_in_memory_loads_it_for_its_results(
    tmp_path: Path,
) -> None:
    """With no cache (or when another worker decided the instance last), the worker that
    ran the activity reads the history and decides on the result at once: no message,
    and no claim."""
    store = Counting(tmp_path / "direct.db")
    worker = durable.Worker(store, orchestrators=[chain], activities=[step], cache_size=0)
    async with store, worker:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(chain, input=20)
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
        history = [type(e).__name__ for e in await store.get_history(iid)]
    assert state is not None and state.get_output() == 20
    assert (store.direct, store.completed, store.claimed) == (20, 0, 1)  # (1: the start)
    assert history.count(TaskScheduled.__name__) == 20


async def test_two_workers_that_run_each_others_activities_finish_every_chain_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers that take each other's activities decide on the results where they ran:
    every chain finishes with its own result, each step scheduled once, and what the
    store refused along the way (a worker's stale copy of an instance) is not warned of."""
    store = Counting(tmp_path / "direct.db")
    options = {"orchestrators": [chain], "activities": [step], "max_concurrent_activities": 4}
    async with store, durable.Worker(store, **options), durable.Worker(store, **options):
        client = durable.Client(store)
        ids = [await client.schedule_new_orchestration(chain, input=8) for _ in range(40)]
        states = [await client.wait_for_orchestration_completion(i, timeout=60) for i in ids]
        histories = [[type(e).__name__ for e in await store.get_history(i)] for i in ids]
    assert [s.get_output() if s is not None else None for s in states] == [8] * 40
    assert all(h.count(TaskScheduled.__name__) == 8 for h in histories)
    assert store.direct > 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def slow(ctx: task.ActivityContext, x: int) -> int:
    await asyncio.sleep(0.3)
    return x


def result_then_event(ctx: task.OrchestrationContext, _: None):  # type: ignore[no-untyped-def]
    got = yield ctx.call_activity(slow, input=1)
    event = yield ctx.wait_for_external_event("go")
    return [got, event]


async def test_an_event_that_comes_during_an_activity_is_not_lost_nor_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Counting(tmp_path / "direct.db")
    async with (
        store,
        durable.Worker(store, orchestrators=[result_then_event], activities=[slow]),
    ):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(result_then_event)
        await asyncio.sleep(0.1)  # the activity runs
        await client.raise_orchestration_event(iid, "go", data=2)
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.get_output() == [1, 2]
    assert store.direct == 1 and store.completed == 0  # tried, and queued in that commit
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def activity_and_event(ctx: task.OrchestrationContext, _: None):  # type: ignore[no-untyped-def]
    got = yield task.when_all([ctx.call_activity(slow, input=1), ctx.wait_for_external_event("go")])
    return got


class SlowClaimedCommits(Counting):
    """Writes decisions on events slowly, and notes a decision that arrives for an instance
    while another decision of it is being written."""

    overlapping: list[str]
    in_flight: set[str]

    async def commit_orchestrations(self, commits, take=None):  # type: ignore[no-untyped-def]
        ids = {c.item.instance_id for c in commits}
        self.overlapping.extend(ids & self.in_flight)
        self.in_flight |= ids
        try:
            if any(type(m).__name__ == "EventRaised" for c in commits for m in c.item.messages):
                await asyncio.sleep(0.3)  # (the activity ends meanwhile)
            return await super().commit_orchestrations(commits, take)
        finally:
            self.in_flight -= ids


async def test_a_result_that_comes_while_a_decision_is_being_written_waits_for_it(
    tmp_path: Path,
) -> None:
    """The event's decision is being written when the activity's result comes: the worker
    decides on the result only after that write (never a second decision of one instance
    on top of one not yet written), and the orchestration ends with both."""
    store = SlowClaimedCommits(tmp_path / "direct.db")
    store.overlapping, store.in_flight = [], set()
    async with (
        store,
        durable.Worker(store, orchestrators=[activity_and_event], activities=[slow]),
    ):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(activity_and_event)
        await asyncio.sleep(0.15)  # the activity runs (0.3 s)
        await client.raise_orchestration_event(iid, "go", data=2)
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.get_output() == [1, 2]
    assert store.overlapping == []
