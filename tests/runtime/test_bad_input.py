"""Bad input gets a clear, typed error, and never harms any other instance.

Every test runs a healthy orchestration alongside the bad one and checks it completes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls, eventually, has_status

import durable
from durable import task

S = durable.OrchestrationStatus
_CALLS = Calls()
ran = _CALLS.counts


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    _CALLS.clear()


def count(name: str) -> None:
    _CALLS.add(name)


# -- the healthy neighbour -------------------------------------------------------------


def add_one(ctx: task.ActivityContext, n: int) -> int:
    count("add_one")
    return n + 1


def healthy(ctx: task.OrchestrationContext, n: int):
    a = yield ctx.call_activity(add_one, input=n)
    yield ctx.create_timer(timedelta(milliseconds=20))
    b, c = yield task.when_all(
        [ctx.call_activity(add_one, input=a), ctx.call_activity(add_one, input=a + 10)]
    )
    return [a, b, c]


async def start_healthy(client: durable.Client) -> str:
    return await client.schedule_new_orchestration(healthy, input=1)


async def check_healthy(client: durable.Client, iid: str) -> None:
    st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None
    assert st.runtime_status is S.COMPLETED, st.failure_details
    assert st.get_output() == [2, 3, 13]
    assert st.failure_details is None


# -- bad orchestrators and activities --------------------------------------------------


def yields_a_number(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(add_one, input=1)
    yield 42


def calls_a_ghost_activity(ctx: task.OrchestrationContext, _: Any):
    try:
        yield ctx.call_activity("ghost_activity", input=1)
    except task.TaskFailedError as e:
        return {
            "type": e.details.error_type,
            "not_registered": e.details.is_caused_by(durable.NotRegisteredError),
            "names_it": "ghost_activity" in e.details.message,
        }
    return None


class Opaque:
    pass


def returns_unencodable(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(add_one, input=1)
    return Opaque()


def sends_unencodable(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(add_one, input=Opaque())


def huge_result(ctx: task.ActivityContext, size: int) -> str:
    count("huge_result")
    return "x" * size


def asks_for_huge(ctx: task.OrchestrationContext, size: int):
    try:
        value = yield ctx.call_activity(huge_result, input=size)
    except task.TaskFailedError as e:
        return {
            "too_large": e.details.is_caused_by(durable.PayloadTooLargeError),
            "message": e.details.message,
        }
    return len(value)


def strict_input(ctx: task.ActivityContext, n: int) -> int:
    count("strict_input")
    return n


def sends_wrong_type(ctx: task.OrchestrationContext, _: Any):
    try:
        yield ctx.call_activity(strict_input, input="not a number")
    except task.TaskFailedError as e:
        return e.details.is_caused_by(durable.PayloadDecodeError)
    return None


@dataclasses.dataclass
class Point:
    x: int
    y: int


def takes_a_point(ctx: task.OrchestrationContext, p: Point) -> int:
    return p.x + p.y


def waits(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.wait_for_external_event(name))


ORCHESTRATORS = [
    healthy,
    yields_a_number,
    calls_a_ghost_activity,
    returns_unencodable,
    sends_unencodable,
    asks_for_huge,
    sends_wrong_type,
    takes_a_point,
    waits,
]
ACTIVITIES = [add_one, huge_result, strict_input]


def make_worker(store: durable.Store, **kw: Any) -> durable.Worker:
    return durable.Worker(store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, **kw)


async def run_bad(
    store: durable.Store, orchestrator: Any, input: Any = None, **worker_kw: Any
) -> durable.OrchestrationState:
    """Run `orchestrator` to its end next to a healthy instance; return its final state."""
    async with make_worker(store, **worker_kw):
        client = durable.Client(store)
        ok = await start_healthy(client)
        iid = await client.schedule_new_orchestration(orchestrator, input=input)
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        await check_healthy(client, ok)
    assert st is not None
    return st


# -- tests -----------------------------------------------------------------------------


async def test_yielding_a_non_task_fails_with_invalid_task_error(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, yields_a_number)
    assert st.runtime_status is S.FAILED
    fd = st.failure_details
    assert fd is not None
    assert fd.error_type == "durable.InvalidTaskError"
    assert fd.is_caused_by(durable.InvalidTaskError) and fd.is_caused_by(TypeError)
    assert "yields_a_number" in fd.message and "42" in fd.message
    with pytest.raises(durable.OrchestrationFailedError, match="InvalidTaskError"):
        st.raise_if_failed()


@pytest.mark.parametrize("bad", ["", "nul\x00inside", "x" * 1001, "é" * 501])
async def test_an_instance_id_no_store_can_keep_is_refused_at_once(
    store: durable.MemoryStore, bad: str
) -> None:
    client = durable.Client(store)
    with pytest.raises(ValueError, match="instance id"):
        await client.schedule_new_orchestration(healthy, input=1, instance_id=bad)
    assert await client.schedule_new_orchestration(healthy, input=1, instance_id="x" * 1000)


def sends_to_a_bad_id(ctx: task.OrchestrationContext, _: Any):
    ctx.send_event("bad\x00id", "ping")
    yield ctx.create_timer(timedelta(milliseconds=1))


def starts_a_child_with_a_long_id(ctx: task.OrchestrationContext, _: Any):
    return (yield ctx.call_sub_orchestrator(healthy, input=1, instance_id="c" * 2000))


ORCHESTRATORS.extend([sends_to_a_bad_id, starts_a_child_with_a_long_id])


@pytest.mark.parametrize("orchestrator", [sends_to_a_bad_id, starts_a_child_with_a_long_id])
async def test_an_orchestrator_naming_a_bad_instance_id_fails_alone(
    store: durable.MemoryStore, orchestrator: Any
) -> None:
    # On Postgres such an id would make the shared group commit fail for every decision
    # in it; it is refused in the orchestrator instead, and only that instance fails.
    st = await run_bad(store, orchestrator)
    assert st.runtime_status is S.FAILED
    fd = st.failure_details
    assert fd is not None and fd.is_caused_by(ValueError) and "instance id" in fd.message


async def test_unregistered_orchestrator_name_fails_with_not_registered(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, "ghost_orchestrator")
    assert st.runtime_status is S.FAILED
    fd = st.failure_details
    assert fd is not None
    assert fd.error_type == "durable.NotRegisteredError"
    assert "ghost_orchestrator" in fd.message
    assert "healthy" in fd.message  # lists what is registered


async def test_unregistered_activity_fails_the_task_with_not_registered(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, calls_a_ghost_activity)
    assert st.runtime_status is S.COMPLETED
    assert st.get_output() == {
        "type": "durable.NotRegisteredError",
        "not_registered": True,
        "names_it": True,
    }


async def test_unencodable_output_fails_with_payload_encode_error(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, returns_unencodable)
    assert st.runtime_status is S.FAILED
    fd = st.failure_details
    assert fd is not None
    assert fd.error_type == "durable.PayloadEncodeError"
    assert "Opaque" in fd.message and "returns_unencodable" in fd.message
    assert st.serialized_output is None


async def test_unencodable_activity_input_fails_the_orchestration(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, sends_unencodable)
    assert st.runtime_status is S.FAILED
    assert st.failure_details is not None
    assert st.failure_details.error_type == "durable.PayloadEncodeError"
    assert "add_one" in st.failure_details.message
    assert ran["add_one"] == 3  # only the healthy instance's calls: nothing was sent


async def test_activity_input_of_the_wrong_type_fails_the_task(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, sends_wrong_type)
    assert st.get_output() is True
    assert ran["strict_input"] == 0  # the activity body never ran


async def test_orchestrator_input_of_the_wrong_shape_fails_it(store: durable.MemoryStore) -> None:
    st = await run_bad(store, takes_a_point, input={"x": 1})
    assert st.runtime_status is S.FAILED
    assert st.failure_details is not None
    assert st.failure_details.error_type == "durable.PayloadDecodeError"
    good = await run_bad(durable.MemoryStore(), takes_a_point, input={"x": 1, "y": 2})
    assert good.get_output() == 3


async def test_duplicate_id_of_a_running_instance_is_refused(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        ok = await start_healthy(client)
        iid = await client.schedule_new_orchestration(waits, input="go", instance_id="dup")
        await client.wait_for_orchestration_start(iid, timeout=WAIT)
        with pytest.raises(durable.OrchestrationAlreadyExistsError, match="dup"):
            await client.schedule_new_orchestration(waits, input="other", instance_id="dup")
        with pytest.raises(durable.OrchestrationAlreadyExistsError):
            await client.schedule_new_orchestration(healthy, input=5, instance_id="dup")
        listed = [st async for st in client.list_orchestrations(name="waits")]
        assert [st.instance_id for st in listed] == ["dup"]
        assert listed[0].get_input() == "go"  # the original is untouched
        await client.raise_orchestration_event("dup", "go", data="first run")
        first = await client.wait_for_orchestration_completion("dup", timeout=WAIT)
        assert first is not None and first.get_output() == "first run"

        # Once finished, the id may be used again.
        again = await client.schedule_new_orchestration(healthy, input=1, instance_id="dup")
        assert again == "dup"
        await check_healthy(client, "dup")
        await check_healthy(client, ok)


async def test_event_to_an_unknown_instance_is_not_found(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        ok = await start_healthy(client)
        with pytest.raises(durable.OrchestrationNotFoundError, match="no-such-instance"):
            await client.raise_orchestration_event("no-such-instance", "go", data=1)
        with pytest.raises(durable.OrchestrationNotFoundError):
            await client.terminate_orchestration("no-such-instance")
        with pytest.raises(durable.OrchestrationNotFoundError):
            await client.suspend_orchestration("no-such-instance")
        await check_healthy(client, ok)
        assert await client.get_orchestration_state("no-such-instance") is None


async def test_payload_over_the_client_cap_is_refused_at_schedule_time(
    store: durable.MemoryStore,
) -> None:
    async with make_worker(store):
        client = durable.Client(store, max_payload_bytes=100)
        ok = await start_healthy(client)
        with pytest.raises(durable.PayloadTooLargeError, match="100"):
            await client.schedule_new_orchestration(waits, input="x" * 200)
        assert [st.name async for st in client.list_orchestrations()] == ["healthy"]
        iid = await client.schedule_new_orchestration(waits, input="go")
        with pytest.raises(durable.PayloadTooLargeError):
            await client.raise_orchestration_event(iid, "go", data="y" * 200)
        await client.raise_orchestration_event(iid, "go", data="small")
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert st is not None and st.get_output() == "small"
        with pytest.raises(durable.PayloadEncodeError):
            await client.schedule_new_orchestration(waits, input=Opaque())
        await check_healthy(client, ok)


async def test_activity_result_over_the_worker_cap_fails_the_task(
    store: durable.MemoryStore,
) -> None:
    st = await run_bad(store, asks_for_huge, input=5000, max_payload_bytes=1000)
    assert st.runtime_status is S.COMPLETED
    out = st.get_output()
    assert out["too_large"] is True
    assert "huge_result" in out["message"]
    assert ran["huge_result"] == 1
    small = await run_bad(durable.MemoryStore(), asks_for_huge, input=500, max_payload_bytes=1000)
    assert small.get_output() == 500


# -- non-determinism -------------------------------------------------------------------


def step_a(ctx: task.ActivityContext, _: Any) -> str:
    count("step_a")
    return "a"


def step_b(ctx: task.ActivityContext, _: Any) -> str:
    count("step_b")
    return "b"


def step_other(ctx: task.ActivityContext, _: Any) -> str:
    count("step_other")
    return "other"


def agent(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(step_a)
    ctx.set_custom_status("waiting")
    event = yield ctx.wait_for_external_event("go")
    b = yield ctx.call_activity(step_b)
    return [a, event, b]


def agent_changed(ctx: task.OrchestrationContext, _: Any):
    # A deploy that changed the first step without ctx.is_patched(...)
    a = yield ctx.call_activity(step_other)
    event = yield ctx.wait_for_external_event("go")
    return [a, event]


def nd_worker(store: durable.Store, agent_fn: Any) -> durable.Worker:
    worker = durable.Worker(store, orchestrators=[healthy], activities=[add_one])
    worker.add_orchestrator(agent_fn, name="agent")
    for fn in (step_a, step_b, step_other):
        worker.add_activity(fn)
    return worker


async def start_agent(store: durable.Store, client: durable.Client) -> str:
    """Run `agent` with its original code until it waits for "go", then stop that worker."""
    async with nd_worker(store, agent):
        iid = await client.schedule_new_orchestration("agent")

        async def waiting() -> bool:
            st = await client.get_orchestration_state(iid)
            return st is not None and st.get_custom_status() == "waiting"

        await eventually(waiting)
    assert ran["step_a"] == 1
    return iid


async def wake_changed_code(client: durable.Client, iid: str) -> None:
    """With a worker running `agent_changed`, wake the instance and wait until it is blocked."""
    await client.raise_orchestration_event(iid, "go", data="go!")

    async def blocked() -> bool:
        st = await client.get_orchestration_state(iid)
        return st is not None and st.failure_details is not None

    await eventually(blocked)


async def test_non_determinism_blocks_the_instance_without_failing_it(
    store: durable.MemoryStore,
) -> None:
    client = durable.Client(store)
    iid = await start_agent(store, client)

    # The changed code meets the recorded history when the event wakes the instance.
    async with nd_worker(store, agent_changed):
        ok = await start_healthy(client)
        await wake_changed_code(client, iid)
        await check_healthy(client, ok)
        await asyncio.sleep(0.2)
        st = await client.get_orchestration_state(iid)
    assert st is not None
    assert st.runtime_status is S.RUNNING  # not failed: a fixed deploy can carry it on
    fd = st.failure_details
    assert fd is not None and fd.error_type == "durable.NonDeterminismError"
    assert "step_a" in fd.message and "step_other" in fd.message
    st.raise_if_failed()  # RUNNING: nothing to raise
    assert st.get_custom_status() == "waiting"
    assert ran["step_other"] == 0 and ran["step_b"] == 0

    with pytest.raises(TimeoutError, match="blocked"):
        await client.wait_for_orchestration_completion(iid, timeout=0.1)

    # The original code, deployed again, finishes the instance from where it stood.
    async with nd_worker(store, agent):
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output() == ["a", "go!", "b"]
    assert done.failure_details is None
    assert ran == Counter({"step_a": 1, "step_b": 1, "add_one": 3})


async def test_a_blocked_instance_can_still_be_terminated_and_purged(
    store: durable.MemoryStore,
) -> None:
    client = durable.Client(store)
    iid = await start_agent(store, client)
    async with nd_worker(store, agent_changed):
        ok = await start_healthy(client)
        await wake_changed_code(client, iid)
        await client.terminate_orchestration(iid, output="gave up on it")
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        await check_healthy(client, ok)
    assert st is not None and st.runtime_status is S.TERMINATED
    assert st.get_output() == "gave up on it"
    assert await client.purge_orchestration(iid) == 1
    assert await client.get_orchestration_state(iid) is None
    assert ran["step_other"] == 0 and ran["step_b"] == 0


def agent_with_child(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(step_a)
    return (yield ctx.call_sub_orchestrator(waits, input="never"))


def agent_with_child_changed(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(step_other)
    return (yield ctx.call_sub_orchestrator(waits, input="never"))


async def test_terminating_a_blocked_parent_terminates_its_children(
    store: durable.MemoryStore,
) -> None:
    def worker(fn: Any) -> durable.Worker:
        w = durable.Worker(store, orchestrators=[waits], activities=[step_a, step_other])
        w.add_orchestrator(fn, name="parent")
        return w

    client = durable.Client(store)
    async with worker(agent_with_child):
        parent = await client.schedule_new_orchestration("parent")
        child = f"{parent}:0001"
        await eventually(has_status(client, child, S.RUNNING))
    async with worker(agent_with_child_changed):
        await client.terminate_orchestration(parent, output="stop all")
        p = await client.wait_for_orchestration_completion(parent, timeout=WAIT)
        c = await client.wait_for_orchestration_completion(child, timeout=WAIT)
    assert p is not None and p.runtime_status is S.TERMINATED
    assert p.get_output() == "stop all"
    assert c is not None and c.runtime_status is S.TERMINATED
    assert ran["step_other"] == 0
