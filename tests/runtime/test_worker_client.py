"""End to end: the Client's operations against a running Worker on a MemoryStore.

Scheduling and waiting, state, events, termination, suspension, purge, restart, history,
listing, continue-as-new and delayed starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from runtime_helpers import WAIT, Calls, eventually, has_status, status_of

import durable
from durable import task
from durable.core.events import (
    EventRaised,
    ExecutionCompleted,
    ExecutionStarted,
    OrchestratorStarted,
    TaskCompleted,
    TaskScheduled,
)

S = durable.OrchestrationStatus
CALLS = Calls()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


# -- activities and orchestrators ------------------------------------------------------


def double(ctx: task.ActivityContext, n: int) -> int:
    CALLS.add("double", n)
    return n * 2


def call_double(ctx: task.OrchestrationContext, n: int):
    return (yield ctx.call_activity(double, input=n))


def wait_event(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.wait_for_external_event(name))


def quick(ctx: task.OrchestrationContext, value: Any) -> Any:
    return value


@dataclasses.dataclass
class Order:
    item: str
    qty: int


class Receipt(msgspec.Struct):
    item: str
    total: int


def checkout(ctx: task.OrchestrationContext, order: Order):
    assert isinstance(order, Order)  # decoded into the annotated type
    ctx.set_custom_status({"stage": "pricing"})
    total = yield ctx.call_activity(double, input=order.qty)
    ctx.set_custom_status({"stage": "done"})
    return Receipt(item=order.item, total=total)


def two_events(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(double, input=1)
    first = yield ctx.wait_for_external_event("Data")
    second = yield ctx.wait_for_external_event("data")
    return [first, second]


def counter(ctx: task.OrchestrationContext, n: int):
    if n < 5:
        yield ctx.call_activity(double, input=n)
        ctx.continue_as_new(n + 1)
        return None
    return {"n": n, "id": ctx.instance_id}


def carries_events(ctx: task.OrchestrationContext, state: dict[str, Any]):
    if state["phase"] == 1:
        yield ctx.call_activity(double, input=1)
        ctx.continue_as_new({"phase": 2, "save": state["save"]}, save_events=state["save"])
        return None
    note = ctx.wait_for_external_event("note")
    winner = yield task.when_any([note, ctx.create_timer(timedelta(milliseconds=300))])
    return note.get_result() if winner is note else "lost"


def now_and_event(ctx: task.OrchestrationContext, _: Any):
    started = ctx.current_utc_datetime.isoformat()
    data = yield ctx.wait_for_external_event("hello")
    return [started, data]


def pinger(ctx: task.OrchestrationContext, target: str):
    ctx.send_event(target, "hello", data=f"from {ctx.instance_id}")
    ctx.send_event("nobody-has-this-id", "hello", data="lost")  # dropped, harmlessly
    return "sent"


ORCHESTRATORS = [
    call_double,
    wait_event,
    quick,
    checkout,
    two_events,
    counter,
    now_and_event,
    pinger,
    carries_events,
]


def make_worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(store, orchestrators=ORCHESTRATORS, activities=[double])


# -- scheduling and waiting ------------------------------------------------------------


async def test_schedule_wait_for_start_and_completion(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="go")
        started = await client.wait_for_orchestration_start(iid, timeout=WAIT)
        assert started is not None and started.runtime_status is S.RUNNING
        await client.raise_orchestration_event(iid, "go", data={"ok": 1})
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert done is not None
        assert done.runtime_status is S.COMPLETED
        assert done.get_output() == {"ok": 1}
        assert done.instance_id == iid and done.name == "wait_event"


async def test_schedule_with_explicit_id_and_by_name(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration("call_double", input=21, instance_id="my-id")
        assert iid == "my-id"
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert done is not None and done.get_output() == 42


async def test_wait_timeout_on_pending_instance_explains_no_worker(
    store: durable.MemoryStore,
) -> None:
    client = durable.Client(store)  # no worker runs
    iid = await client.schedule_new_orchestration(call_double, input=1)
    began = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        await client.wait_for_orchestration_completion(iid, timeout=0.2)
    assert 0.2 <= time.monotonic() - began < 2
    message = str(info.value)
    assert iid in message and "PENDING" in message
    assert "call_double" in message and "worker" in message
    with pytest.raises(TimeoutError):
        await client.wait_for_orchestration_start(iid, timeout=0.1)


async def test_wait_timeout_on_running_instance(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="never")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        with pytest.raises(TimeoutError, match=r"RUNNING after 0\.2s"):
            await client.wait_for_orchestration_completion(iid, timeout=0.2)


async def test_unknown_instance(store: durable.MemoryStore) -> None:
    client = durable.Client(store)
    assert await client.get_orchestration_state("nope") is None
    assert await client.wait_for_orchestration_completion("nope", timeout=0.1) is None
    assert await client.wait_for_orchestration_start("nope", timeout=0.1) is None
    assert list(await client.get_orchestration_history("nope")) == []


async def test_state_fields_and_typed_payloads(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        before = datetime.now(UTC)
        iid = await client.schedule_new_orchestration(checkout, input=Order("tea", 4))
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None
    assert done.runtime_status is S.COMPLETED
    assert done.created_at.tzinfo is not None
    assert before <= done.created_at <= done.last_updated_at <= datetime.now(UTC)
    assert json.loads(done.serialized_input or "") == {"item": "tea", "qty": 4}
    assert json.loads(done.serialized_output or "") == {"item": "tea", "total": 8}
    assert json.loads(done.serialized_custom_status or "") == {"stage": "done"}
    assert done.get_input(Order) == Order("tea", 4)
    assert done.get_output(Receipt) == Receipt(item="tea", total=8)
    assert done.get_output() == {"item": "tea", "total": 8}
    assert done.get_custom_status() == {"stage": "done"}
    assert done.failure_details is None
    done.raise_if_failed()  # completed: no error


# -- events, termination, suspension ---------------------------------------------------


async def test_events_raised_before_the_wait_are_buffered_in_order(
    store: durable.MemoryStore,
) -> None:
    client = durable.Client(store)
    iid = await client.schedule_new_orchestration(two_events)
    # Both events are in the store before any worker runs the orchestrator.
    await client.raise_orchestration_event(iid, "DATA", data=1)
    await client.raise_orchestration_event(iid, "data", data=2)
    async with make_worker(store):
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.get_output() == [1, 2]


async def test_terminate(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="never")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        await client.terminate_orchestration(iid, output={"reason": "stop"})
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert done is not None and done.runtime_status is S.TERMINATED
        assert done.get_output() == {"reason": "stop"}
        # A finished instance ignores later events and stays as it is.
        await client.raise_orchestration_event(iid, "never", data=1)
        await asyncio.sleep(0.1)
        again = await client.get_orchestration_state(iid)
        assert again is not None and again.runtime_status is S.TERMINATED
        assert again.get_output() == {"reason": "stop"}


async def test_suspend_and_resume(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="go")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        await client.suspend_orchestration(iid)
        await eventually(has_status(client, iid, S.SUSPENDED))
        await client.raise_orchestration_event(iid, "go", data="payload")
        await asyncio.sleep(0.3)  # plenty of time to act on it, were it not suspended
        assert await status_of(client, iid) is S.SUSPENDED
        await client.resume_orchestration(iid)
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output() == "payload"


async def test_terminate_a_suspended_instance(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="go")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        await client.suspend_orchestration(iid)
        await eventually(has_status(client, iid, S.SUSPENDED))
        await client.terminate_orchestration(iid, output="stopped while paused")
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.TERMINATED
    assert done.get_output() == "stopped while paused"


# -- purge, restart, history, listing --------------------------------------------------


async def test_purge_only_finished_instances(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(wait_event, input="never")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        with pytest.raises(durable.OrchestrationStateError):
            await client.purge_orchestration(iid)
        assert await status_of(client, iid) is S.RUNNING  # untouched
        await client.terminate_orchestration(iid)
        await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert await client.purge_orchestration(iid) == 1
        assert await client.get_orchestration_state(iid) is None
        assert list(await client.get_orchestration_history(iid)) == []
        assert await client.purge_orchestration(iid) == 0


async def test_restart_runs_again_from_the_same_input(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(call_double, input=7)
        first = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert first is not None and first.get_output() == 14
        assert await client.restart_orchestration(iid) == iid
        second = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert second is not None and second.runtime_status is S.COMPLETED
        assert second.get_output() == 14
        assert second.get_input() == 7
        assert CALLS.values["double"] == [7, 7]  # the activity really ran twice

        waiting = await client.schedule_new_orchestration(wait_event, input="never")
        await client.wait_for_orchestration_start(waiting, timeout=WAIT)
        with pytest.raises(durable.OrchestrationStateError):
            await client.restart_orchestration(waiting)
        with pytest.raises(durable.OrchestrationNotFoundError):
            await client.restart_orchestration("no-such-id")


async def test_history_is_typed_and_round_trips_through_json(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(call_double, input=3)
        await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        history = await client.get_orchestration_history(iid)
    assert isinstance(history, durable.History)
    started = [e for e in history if isinstance(e, ExecutionStarted)]
    assert len(started) == 1
    assert started[0].name == "call_double" and started[0].instance_id == iid
    assert started[0].input == "3"
    assert isinstance(history[-1], ExecutionCompleted) and history[-1].status == "COMPLETED"
    assert any(isinstance(e, OrchestratorStarted) for e in history)
    scheduled = [e for e in history if isinstance(e, TaskScheduled)]
    assert [(e.name, e.input) for e in scheduled] == [("double", "3")]
    assert [e.result for e in history if isinstance(e, TaskCompleted)] == ["6"]

    text = history.to_json()
    as_json = json.loads(text)
    assert isinstance(as_json, list) and len(as_json) == len(history)
    assert [e["kind"] for e in as_json] == [type(e).__name__ for e in history]
    assert durable.History.from_json(text) == history


async def test_list_orchestrations_filters_and_pages(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        done_ids, waiting_ids = [], []
        for i in range(5):
            await asyncio.sleep(0.002)  # distinct creation times
            if i < 3:
                done_ids.append(await client.schedule_new_orchestration(quick, input=i))
            else:
                waiting_ids.append(await client.schedule_new_orchestration(wait_event, input="x"))
        for iid in done_ids:
            await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        for iid in waiting_ids:
            await client.wait_for_orchestration_start(iid, timeout=WAIT)

        async def ids(**kw: Any) -> list[str]:
            return [st.instance_id async for st in client.list_orchestrations(**kw)]

        everything = done_ids + waiting_ids
        assert await ids() == everything  # oldest first
        assert await ids(status=S.COMPLETED) == done_ids
        assert await ids(status=S.RUNNING) == waiting_ids
        assert await ids(status=[S.COMPLETED, S.RUNNING]) == everything
        assert await ids(status=S.FAILED) == []
        assert await ids(name="wait_event") == waiting_ids
        assert await ids(name="quick", status=S.RUNNING) == []
        assert await ids(limit=2) == everything[:2]
        assert await ids(page_size=2) == everything
        assert await ids(page_size=2, limit=3) == everything[:3]
        assert await ids(page_size=1, name="quick") == done_ids
        states = [st async for st in client.list_orchestrations()]
        third = states[2].created_at
        assert await ids(created_from=third) == everything[2:]
        assert await ids(created_to=third) == everything[:3]
        assert await ids(created_from=third, created_to=third, name="quick") == [done_ids[2]]


async def test_continue_as_new_keeps_the_instance_id(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(counter, input=0)
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        listed = [st.instance_id async for st in client.list_orchestrations()]
        history = await client.get_orchestration_history(iid)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output() == {"n": 5, "id": iid}
    assert done.get_input() == 5  # the last execution's input
    assert listed == [iid]
    assert CALLS.values["double"] == [0, 1, 2, 3, 4]
    assert [e.input for e in history if isinstance(e, ExecutionStarted)] == ["5"]


@pytest.mark.parametrize("save", [True, False])
async def test_continue_as_new_carries_unconsumed_events_only_with_save_events(
    store: durable.MemoryStore, save: bool
) -> None:
    client = durable.Client(store)
    iid = await client.schedule_new_orchestration(carries_events, input={"phase": 1, "save": save})
    # In the store before the first execution runs: it receives the event and does not
    # consume it; the second execution waits for it.
    await client.raise_orchestration_event(iid, "note", data="kept")
    async with make_worker(store):
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output() == ("kept" if save else "lost")


# -- time ------------------------------------------------------------------------------


async def test_start_at_delays_the_start(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        start_at = datetime.now(UTC) + timedelta(milliseconds=500)
        iid = await client.schedule_new_orchestration(call_double, input=4, start_at=start_at)
        await asyncio.sleep(0.2)
        assert await status_of(client, iid) is S.PENDING
        assert CALLS.values["double"] == []
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output() == 8
    assert datetime.now(UTC) >= start_at
    started = list(await client.get_orchestration_history(iid))
    assert all(e.timestamp >= start_at for e in started if isinstance(e, OrchestratorStarted))


async def test_an_event_does_not_start_a_delayed_instance_early(
    store: durable.MemoryStore,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        start_at = datetime.now(UTC) + timedelta(milliseconds=500)
        iid = await client.schedule_new_orchestration(now_and_event, start_at=start_at)
        await client.raise_orchestration_event(iid, "hello", data="early bird")
        await asyncio.sleep(0.2)
        assert await status_of(client, iid) is S.PENDING  # the event waits for the start
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    started, data = done.get_output()
    assert data == "early bird"
    assert datetime.fromisoformat(started) >= start_at
    history = await client.get_orchestration_history(iid)
    kinds = [type(e) for e in history]
    assert kinds.index(ExecutionStarted) < kinds.index(EventRaised)


async def test_terminate_before_a_delayed_start(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        start_at = datetime.now(UTC) + timedelta(seconds=30)
        iid = await client.schedule_new_orchestration(call_double, input=1, start_at=start_at)
        await client.terminate_orchestration(iid, output="cancelled")
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.TERMINATED
    assert done.get_output() == "cancelled"
    assert CALLS.values["double"] == []


# -- events between instances ----------------------------------------------------------


async def test_send_event_from_one_orchestration_to_another(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        target = await client.schedule_new_orchestration(now_and_event)
        await client.wait_for_orchestration_start(target, timeout=WAIT)
        sender = await client.schedule_new_orchestration(pinger, input=target)
        sent = await client.wait_for_orchestration_completion(sender, timeout=WAIT)
        got = await client.wait_for_orchestration_completion(target, timeout=WAIT)
    assert sent is not None and sent.runtime_status is S.COMPLETED
    assert got is not None and got.runtime_status is S.COMPLETED
    assert got.get_output()[1] == f"from {sender}"
    assert await client.get_orchestration_state("nobody-has-this-id") is None
