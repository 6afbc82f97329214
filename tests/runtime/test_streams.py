"""End to end: activities write named streams; clients read them while the orchestration runs.

Live delivery is shown with gates: the activity waits on an event the test sets only
after a reader has seen a chunk, so the chunk must have reached the reader first.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from runtime_helpers import WAIT, Calls, status_of

import durable
from durable import task
from durable.client import StreamChunk

S = durable.OrchestrationStatus
CALLS = Calls()
GATES: dict[str, asyncio.Event] = {}
RETRY = durable.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=20), max_number_of_attempts=2
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()


class Item(msgspec.Struct):
    i: int


# -- activities and orchestrators ------------------------------------------------------


async def produce(ctx: durable.ActivityContext, n: int) -> int:
    CALLS.add("task", (ctx.task_id, ctx.attempt))
    out = ctx.stream("out")
    for i in range(n):
        await out.write({"i": i})
    await out.close()
    return n


def produce_sync(ctx: durable.ActivityContext, n: int) -> int:
    CALLS.add("task", (ctx.task_id, ctx.attempt))
    out = ctx.stream("out")
    for i in range(n):
        out.write_sync(f"s{i}")
    out.close_sync()
    return n


async def produce_open(ctx: durable.ActivityContext, n: int) -> int:
    out = ctx.stream("out")
    for i in range(n):
        await out.write(i)
    return n  # never closed


async def gated(ctx: durable.ActivityContext, n: int) -> int:
    """Writes chunk 0, waits for the test's gate, then writes the rest and closes."""
    out = ctx.stream("out")
    await out.write(0)
    await asyncio.wait_for(GATES["open"].wait(), WAIT)
    for i in range(1, n):
        await out.write(i)
    await out.close()
    return n


async def close_then_wait(ctx: durable.ActivityContext, n: int) -> int:
    out = ctx.stream("out")
    for i in range(n):
        await out.write(i)
    await out.close()
    await asyncio.wait_for(GATES["open"].wait(), WAIT)
    return n


async def flaky(ctx: durable.ActivityContext, _: Any) -> str:
    CALLS.add("task", (ctx.task_id, ctx.attempt))
    await ctx.stream("out").write(f"attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    await ctx.stream("out").close()
    return "ok"


async def write_then_fail(ctx: durable.ActivityContext, _: Any) -> None:
    await ctx.stream("out").write("partial")
    raise RuntimeError("no retry")


def run(ctx: task.OrchestrationContext, args: list[Any]):
    """Calls the activity named by args[0] with input args[1]."""
    name, value = args
    policy = RETRY if name == "flaky" else None
    return (yield ctx.call_activity(name, input=value, retry_policy=policy))


def run_then_wait(ctx: task.OrchestrationContext, n: int):
    yield ctx.call_activity(produce_open, input=n)
    return (yield ctx.wait_for_external_event("never"))


ACTIVITIES = [produce, produce_sync, produce_open, gated, close_then_wait, flaky, write_then_fail]


def make_worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(
        store, orchestrators=[run, run_then_wait], activities=ACTIVITIES, shutdown_grace=1
    )


async def read_all(client: durable.Client, iid: str, **kwargs: Any) -> list[StreamChunk]:
    async def collect() -> list[StreamChunk]:
        return [c async for c in client.read_stream(iid, "out", **kwargs)]

    return await asyncio.wait_for(collect(), WAIT)


def rows(chunks: list[StreamChunk]) -> list[tuple[int, Any]]:
    return [(c.index, c.data) for c in chunks]


async def finish(client: durable.Client, iid: str, status: S = S.COMPLETED) -> None:
    state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.runtime_status is status


# -- tests -----------------------------------------------------------------------------


async def test_an_async_activity_streams_chunks_and_closes(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["produce", 3])
        chunks = await read_all(client, iid)
        await finish(client, iid)
    [(task_id, attempt)] = CALLS.values["task"]
    assert chunks == [
        StreamChunk(index=i, data={"i": i}, task_id=task_id, attempt=attempt) for i in range(3)
    ]
    assert attempt == 1


async def test_a_sync_activity_streams_with_write_sync(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["produce_sync", 4])
        chunks = await read_all(client, iid)
        await finish(client, iid)
    [(task_id, _)] = CALLS.values["task"]
    assert rows(chunks) == [(0, "s0"), (1, "s1"), (2, "s2"), (3, "s3")]
    assert {(c.task_id, c.attempt) for c in chunks} == {(task_id, 1)}


async def test_a_late_reader_gets_every_chunk_from_the_start_or_after(
    store: durable.Store,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["produce", 5])
        await finish(client, iid)
    client = durable.Client(store)  # no worker runs any more
    everything = await read_all(client, iid)
    assert rows(everything) == [(i, {"i": i}) for i in range(5)]
    assert await read_all(client, iid) == everything  # read again: the same, once each
    assert rows(await read_all(client, iid, after=2)) == [(3, {"i": 3}), (4, {"i": 4})]
    assert await read_all(client, iid, after=4) == []
    typed = await read_all(client, iid, data_type=Item, after=3)
    assert [c.data for c in typed] == [Item(i=4)]


async def test_a_reader_started_first_gets_chunks_while_the_activity_runs(
    store: durable.Store,
) -> None:
    GATES["open"] = gate = asyncio.Event()
    client = durable.Client(store)
    iid = await client.schedule_new_orchestration(run, input=["gated", 3])
    got: list[StreamChunk] = []
    status_at_first: list[S | None] = []

    async def reader() -> None:
        async for c in client.read_stream(iid, "out"):
            got.append(c)
            if c.index == 0:
                status_at_first.append(await status_of(client, iid))
                gate.set()  # the activity goes on only now

    reading = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    assert not reading.done()  # a pending instance with no stream yet: the reader waits
    async with make_worker(store):
        await asyncio.wait_for(reading, WAIT)
        await finish(client, iid)
    assert status_at_first == [S.RUNNING]
    assert rows(got) == [(0, 0), (1, 1), (2, 2)]


async def test_a_reader_that_reconnects_mid_stream_misses_nothing(store: durable.Store) -> None:
    GATES["open"] = gate = asyncio.Event()
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["gated", 4])
        first: list[StreamChunk] = []
        async for c in client.read_stream(iid, "out"):
            first.append(c)
            break  # the connection drops after one chunk
        gate.set()
        rest = await read_all(client, iid, after=first[-1].index)
        await finish(client, iid)
    assert rows(first + rest) == [(0, 0), (1, 1), (2, 2), (3, 3)]


async def test_a_closed_stream_ends_the_reader_while_the_instance_runs(
    store: durable.Store,
) -> None:
    GATES["open"] = gate = asyncio.Event()
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["close_then_wait", 2])
        chunks = await read_all(client, iid)
        assert await status_of(client, iid) is S.RUNNING  # the activity still holds the gate
        gate.set()
        await finish(client, iid)
    assert rows(chunks) == [(0, 0), (1, 1)]


async def test_an_unclosed_stream_ends_when_the_instance_completes(store: durable.Store) -> None:
    client = durable.Client(store)
    iid = await client.schedule_new_orchestration(run, input=["produce_open", 3])
    reading = asyncio.create_task(read_all(client, iid))  # before any worker runs
    async with make_worker(store):
        chunks = await reading
        state = await client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is S.COMPLETED
    assert rows(chunks) == [(0, 0), (1, 1), (2, 2)]


async def test_an_unclosed_stream_ends_when_the_instance_fails_or_is_terminated(
    store: durable.Store,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        failing = await client.schedule_new_orchestration(run, input=["write_then_fail", None])
        waiting = await client.schedule_new_orchestration(run_then_wait, input=2)
        reading = asyncio.create_task(read_all(client, waiting))
        assert rows(await read_all(client, failing)) == [(0, "partial")]
        await finish(client, failing, S.FAILED)
        await client.wait_for_orchestration_start(waiting, timeout=WAIT)
        await asyncio.sleep(0.05)
        assert not reading.done()  # running and unclosed: the reader waits
        await client.terminate_orchestration(waiting)
        assert rows(await reading) == [(0, 0), (1, 1)]


async def test_a_retried_activity_writes_again_under_its_new_attempt(
    store: durable.Store,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(run, input=["flaky", None])
        chunks = await read_all(client, iid)
        await finish(client, iid)
    (first_task, one), (second_task, two) = CALLS.values["task"]
    assert (one, two) == (1, 2)
    assert chunks == [
        StreamChunk(index=0, data="attempt 1", task_id=first_task, attempt=1),
        StreamChunk(index=1, data="attempt 2", task_id=second_task, attempt=2),
    ]


async def test_reading_an_unknown_instance_raises(store: durable.Store) -> None:
    client = durable.Client(store)
    with pytest.raises(durable.OrchestrationNotFoundError):
        await read_all(client, "nobody")


# -- SyncClient ------------------------------------------------------------------------


def test_sync_client_reads_a_stream_from_plain_code(sync_store: durable.Store) -> None:
    worker = make_worker(sync_store)
    worker.start_in_thread()
    try:
        with durable.SyncClient(sync_store) as client:
            iid = client.schedule_new_orchestration(run, input=["produce_sync", 3])
            chunks = list(client.read_stream(iid, "out"))  # may start before the activity
            assert rows(chunks) == [(0, "s0"), (1, "s1"), (2, "s2")]
            assert rows(list(client.read_stream(iid, "out", after=0))) == [(1, "s1"), (2, "s2")]
            stopped_early = client.read_stream(iid, "out")
            assert next(stopped_early).index == 0
            stopped_early.close()
            with pytest.raises(durable.OrchestrationNotFoundError):
                list(client.read_stream("nobody", "out"))
            done = client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert done is not None and done.get_output() == 3
    finally:
        worker.stop()
