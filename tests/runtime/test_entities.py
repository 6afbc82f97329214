"""Durable entities end to end, on every store: signals, calls, failures, clients."""

from __future__ import annotations

from typing import Any

from runtime_helpers import WAIT, eventually

import durable
from durable import task
from durable.entities import DurableEntity, EntityContext, EntityInstanceId

COUNTER = EntityInstanceId("Counter", "shared")


class Counter(DurableEntity):
    def add(self, amount: int) -> int:
        total = self.get_state(int, 0) + amount
        self.set_state(total)
        return total

    def get(self) -> int:
        return self.get_state(int, 0)

    def set_then_fail(self, value: int) -> None:
        self.set_state(value)
        self.signal_entity(EntityInstanceId("journal", "log"), "note", value)
        raise ValueError(f"refusing {value}")

    def report(self, to: str) -> str:
        total = self.get_state(int, 0)
        self.signal_entity(EntityInstanceId("journal", to), "note", total)
        return self.schedule_new_orchestration("announce", input=total, instance_id=f"ann-{to}")


def journal(ctx: EntityContext, note: Any) -> list[Any]:
    notes = ctx.get_state(list, [])
    if ctx.operation == "note":
        notes.append(note)
        ctx.set_state(notes)
    return notes


def announce(ctx: task.OrchestrationContext, total: int) -> str:
    return f"total is {total}"
    yield  # a generator: an orchestrator


def adder(ctx: task.OrchestrationContext, times: int) -> Any:
    for _ in range(times):
        ctx.signal_entity(COUNTER, "add", 1)
    return (yield ctx.call_entity(COUNTER, "get"))


def caller(ctx: task.OrchestrationContext, value: int) -> Any:
    try:
        yield ctx.call_entity(COUNTER, "set_then_fail", value)
    except durable.TaskFailedError as e:
        inner = e.details.inner
        assert inner is not None
        after = yield ctx.call_entity(COUNTER, "get")
        return [e.details.error_type, e.details.message, inner.error_type, inner.message, after]
    return "no failure"


def worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(
        store,
        orchestrators=[adder, caller, announce],
        entities=[Counter, journal],
        poll_interval=0.05,
    )


async def test_ten_orchestrations_of_a_hundred_signals_each_add_up_to_a_thousand(
    store: durable.Store,
) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        ids = [await client.schedule_new_orchestration(adder, input=100) for _ in range(10)]
        for iid in ids:
            state = await client.wait_for_orchestration_completion(iid, timeout=60)
            assert (
                state is not None and state.runtime_status is durable.OrchestrationStatus.COMPLETED
            )
            assert 100 <= state.get_output() <= 1000  # its own hundred are in by its call

        async def counted() -> bool:
            found = await client.get_entity(COUNTER)
            return found is not None and found.get_state(int) == 1000

        await eventually(counted, timeout=WAIT * 4)


async def test_a_failing_operation_changes_nothing_and_fails_the_call(store: durable.Store) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        await client.signal_entity(COUNTER, "add", 7)
        iid = await client.schedule_new_orchestration(caller, input=99)
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT * 4)
    assert state is not None and state.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert state.get_output() == [
        "durable.entities.EntityOperationFailedException",
        "Operation 'set_then_fail' on entity '@counter@shared' failed with error: refusing 99",
        "builtins.ValueError",
        "refusing 99",
        7,
    ]
    # The signal the failed operation asked for was never sent.
    assert await durable.Client(store).get_entity(EntityInstanceId("journal", "log")) is None


async def test_an_operation_signals_entities_and_starts_orchestrations_once_it_succeeds(
    store: durable.Store,
) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        await client.signal_entity(COUNTER, "add", 3)
        await client.signal_entity(COUNTER, "report", "a")

        async def announced() -> bool:  # started by the operation, once it succeeded
            state = await client.get_orchestration_state("ann-a")
            return state is not None and state.get_output() == "total is 3"

        await eventually(announced, timeout=WAIT * 4)

        async def noted() -> bool:
            found = await client.get_entity(EntityInstanceId("journal", "a"))
            return found is not None and found.get_typed_state(list) == [3]

        await eventually(noted)


async def test_a_client_reads_an_entity_and_an_unknown_one_is_none(store: durable.Store) -> None:
    client = durable.Client(store, poll_interval=0.05)
    assert await client.get_entity(COUNTER) is None
    async with worker(store):
        await client.signal_entity(COUNTER, "add", 2)

        async def there() -> bool:
            found = await client.get_entity(COUNTER)
            return found is not None and found.get_state() == "2"

        await eventually(there)
    found = await client.get_entity(COUNTER, include_state=False)
    assert found is not None and found.id == COUNTER and not found.includes_state
    assert found.get_state() is None and found.last_modified.tzinfo is not None


def stranger(ctx: task.OrchestrationContext, _: Any) -> Any:
    try:
        yield ctx.call_entity(EntityInstanceId("nobody", "k"), "hello")
    except durable.TaskFailedError as e:
        return e.details.inner.error_type if e.details.inner else None
    return "answered"


async def test_a_call_to_an_unregistered_entity_fails(store: durable.Store) -> None:
    async with durable.Worker(store, orchestrators=[stranger], poll_interval=0.05):
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(stranger)
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT * 4)
    assert state is not None and state.get_output() == "durable.NotRegisteredError"
