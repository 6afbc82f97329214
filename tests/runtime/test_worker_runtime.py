"""End to end: how the Worker runs orchestrations and activities.

Failures and retries, threads, child orchestrations, timers, registration, running on a
thread of its own, concurrency limits, and several workers sharing one store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls, eventually, has_status

import durable
from durable import task

S = durable.OrchestrationStatus
CALLS = Calls()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


# -- activities and orchestrators ------------------------------------------------------


def double(ctx: task.ActivityContext, n: int) -> int:
    CALLS.add("double", n)
    return n * 2


def fail_value_error(ctx: task.ActivityContext, text: str) -> None:
    raise ValueError(f"bad value: {text}")


def flaky(ctx: task.ActivityContext, fail_times: int) -> str:
    CALLS.add(ctx.orchestration_id, ctx.attempt)
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return f"ok on attempt {ctx.attempt}"


def fail_key_error(ctx: task.ActivityContext, _: Any) -> None:
    CALLS.add(ctx.orchestration_id, ctx.attempt)
    raise KeyError("missing")


def sync_thread(ctx: task.ActivityContext) -> int:
    return threading.get_ident()


async def async_thread(ctx: task.ActivityContext) -> int:
    await asyncio.sleep(0)
    return threading.get_ident()


def call_double(ctx: task.OrchestrationContext, n: int):
    return (yield ctx.call_activity(double, input=n))


def wait_event(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.wait_for_external_event(name))


def catches_failure(ctx: task.OrchestrationContext, _: Any):
    try:
        yield ctx.call_activity(fail_value_error, input="x")
    except task.TaskFailedError as e:
        d = e.details
        return {
            "type": d.error_type,
            "message": d.message,
            "caused_by_value_error": d.is_caused_by(ValueError),
            "caused_by_key_error": d.is_caused_by(KeyError),
            "trace_names_activity": "fail_value_error" in (d.stack_trace or ""),
        }
    return None


def lets_failure_escape(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_activity(fail_value_error, input="y")


def raises_directly(ctx: task.OrchestrationContext, _: Any):
    raise KeyError("no such customer")


RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=20), max_number_of_attempts=3)


def with_retries(ctx: task.OrchestrationContext, fail_times: int):
    return (yield ctx.call_activity(flaky, input=fail_times, retry_policy=RETRY))


def retry_non_retryable(ctx: task.OrchestrationContext, _: Any):
    policy = task.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=20),
        max_number_of_attempts=5,
        non_retryable_error_types=[KeyError],
    )
    try:
        yield ctx.call_activity(fail_key_error, retry_policy=policy)
    except task.TaskFailedError as e:
        return e.details.error_type
    return None


def threads(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(sync_thread)
    b = yield ctx.call_activity(async_thread)
    return [a, b]


def failing_child(ctx: task.OrchestrationContext, _: Any):
    raise ValueError("child broke")


def parent_catches(ctx: task.OrchestrationContext, _: Any):
    try:
        yield ctx.call_sub_orchestrator(failing_child)
    except task.TaskFailedError as e:
        return [e.details.error_type, e.details.message]
    return None


def parent_lets_escape(ctx: task.OrchestrationContext, _: Any):
    yield ctx.call_sub_orchestrator(failing_child)


def parent_of_waiter(ctx: task.OrchestrationContext, _: Any):
    return (yield ctx.call_sub_orchestrator(wait_event, input="never"))


def timed(ctx: task.OrchestrationContext, ms: int):
    before = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(milliseconds=ms))
    return [before.isoformat(), ctx.current_utc_datetime.isoformat()]


def quick(ctx: task.OrchestrationContext, value: Any) -> Any:
    return value


ORCHESTRATORS = [
    call_double,
    wait_event,
    catches_failure,
    lets_failure_escape,
    raises_directly,
    with_retries,
    retry_non_retryable,
    threads,
    failing_child,
    parent_catches,
    parent_lets_escape,
    parent_of_waiter,
    timed,
    quick,
]
ACTIVITIES = [double, fail_value_error, flaky, fail_key_error, sync_thread, async_thread]


def make_worker(store: durable.Store, **kw: Any) -> durable.Worker:
    return durable.Worker(store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, **kw)


async def run_one(store: durable.Store, orchestrator: Any, input: Any = None) -> Any:
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(orchestrator, input=input)
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None
    return st


# -- failures and retries --------------------------------------------------------------


async def test_activity_failure_is_a_task_failed_error_in_the_orchestrator(
    store: durable.MemoryStore,
) -> None:
    st = await run_one(store, catches_failure)
    assert st.runtime_status is S.COMPLETED
    assert st.get_output() == {
        "type": "builtins.ValueError",
        "message": "bad value: x",
        "caused_by_value_error": True,
        "caused_by_key_error": False,
        "trace_names_activity": True,
    }


async def test_uncaught_failure_fails_the_orchestration(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        escaped = await client.schedule_new_orchestration(lets_failure_escape)
        direct = await client.schedule_new_orchestration(raises_directly)
        st = await client.wait_for_orchestration_completion(escaped, timeout=WAIT)
        st2 = await client.wait_for_orchestration_completion(direct, timeout=WAIT)
    assert st is not None and st.runtime_status is S.FAILED
    fd = st.failure_details
    assert fd is not None
    assert fd.error_type == "durable.TaskFailedError"
    assert fd.is_caused_by(durable.TaskFailedError)
    assert fd.inner is not None and fd.inner.error_type == "builtins.ValueError"
    assert "bad value: y" in fd.message
    with pytest.raises(durable.OrchestrationFailedError) as info:
        st.raise_if_failed()
    assert info.value.instance_id == escaped
    assert info.value.failure_details == fd
    assert escaped in str(info.value)

    assert st2 is not None and st2.runtime_status is S.FAILED
    assert st2.failure_details is not None
    assert st2.failure_details.error_type == "builtins.KeyError"
    assert "no such customer" in st2.failure_details.message
    assert "raises_directly" in (st2.failure_details.stack_trace or "")
    assert st2.serialized_output is None


async def test_retry_policy_retries_until_success(store: durable.MemoryStore) -> None:
    st = await run_one(store, with_retries, 2)
    assert st.runtime_status is S.COMPLETED
    assert st.get_output() == "ok on attempt 3"
    assert CALLS.values[st.instance_id] == [1, 2, 3]


async def test_retry_policy_gives_up_after_max_attempts(store: durable.MemoryStore) -> None:
    st = await run_one(store, with_retries, 10)
    assert st.runtime_status is S.FAILED
    assert st.failure_details is not None and st.failure_details.inner is not None
    assert st.failure_details.inner.error_type == "builtins.ConnectionError"
    assert CALLS.values[st.instance_id] == [1, 2, 3]


async def test_non_retryable_errors_are_not_retried(store: durable.MemoryStore) -> None:
    st = await run_one(store, retry_non_retryable)
    assert st.get_output() == "builtins.KeyError"
    assert CALLS.values[st.instance_id] == [1]


async def test_sync_activities_run_off_the_loop_and_async_ones_on_it(
    store: durable.MemoryStore,
) -> None:
    st = await run_one(store, threads)
    sync_ident, async_ident = st.get_output()
    loop_ident = threading.get_ident()
    assert async_ident == loop_ident
    assert sync_ident != loop_ident


# -- child orchestrations --------------------------------------------------------------


async def test_child_failure_propagates_to_the_parent(store: durable.MemoryStore) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        caught = await client.schedule_new_orchestration(parent_catches)
        escaped = await client.schedule_new_orchestration(parent_lets_escape)
        st = await client.wait_for_orchestration_completion(caught, timeout=WAIT)
        st2 = await client.wait_for_orchestration_completion(escaped, timeout=WAIT)
        child = await client.get_orchestration_state(f"{escaped}:0000")
    assert st is not None and st.runtime_status is S.COMPLETED
    error_type, message = st.get_output()
    assert error_type == "builtins.ValueError" and "child broke" in message
    assert st2 is not None and st2.runtime_status is S.FAILED
    assert st2.failure_details is not None
    assert st2.failure_details.error_type == "durable.TaskFailedError"
    assert st2.failure_details.inner is not None
    assert st2.failure_details.inner.error_type == "builtins.ValueError"
    assert child is not None and child.runtime_status is S.FAILED
    assert child.parent_instance_id == escaped


async def test_terminating_a_parent_terminates_its_running_children(
    store: durable.MemoryStore,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        parent = await client.schedule_new_orchestration(parent_of_waiter)
        child = f"{parent}:0000"
        await eventually(has_status(client, child, S.RUNNING))
        await client.terminate_orchestration(parent, output="bye")
        p = await client.wait_for_orchestration_completion(parent, timeout=WAIT)
        c = await client.wait_for_orchestration_completion(child, timeout=WAIT)
    assert p is not None and p.runtime_status is S.TERMINATED and p.get_output() == "bye"
    assert c is not None and c.runtime_status is S.TERMINATED


async def test_non_recursive_terminate_leaves_the_children_running(
    store: durable.MemoryStore,
) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        parent = await client.schedule_new_orchestration(parent_of_waiter)
        child = f"{parent}:0000"
        await eventually(has_status(client, child, S.RUNNING))
        await client.terminate_orchestration(parent, recursive=False)
        p = await client.wait_for_orchestration_completion(parent, timeout=WAIT)
        assert p is not None and p.runtime_status is S.TERMINATED
        await asyncio.sleep(0.2)
        assert await has_status(client, child, S.RUNNING)()
        await client.raise_orchestration_event(child, "never", data="still here")
        c = await client.wait_for_orchestration_completion(child, timeout=WAIT)
    assert c is not None and c.runtime_status is S.COMPLETED
    assert c.get_output() == "still here"


# -- timers ----------------------------------------------------------------------------


async def test_timer_fires_at_or_after_its_due_time(store: durable.MemoryStore) -> None:
    began = time.monotonic()
    st = await run_one(store, timed, 300)
    elapsed = time.monotonic() - began
    assert st.runtime_status is S.COMPLETED
    before, after = (datetime.fromisoformat(t) for t in st.get_output())
    assert after - before >= timedelta(milliseconds=300)
    assert 0.3 <= elapsed < 3


# -- registration ----------------------------------------------------------------------


def renamed(ctx: task.ActivityContext, x: int) -> int:
    return x + 100


def calls_by_name(ctx: task.OrchestrationContext, x: int):
    return (yield ctx.call_activity("plus_hundred", input=x))


async def test_registration_by_constructor_and_by_method(store: durable.MemoryStore) -> None:
    worker = durable.Worker(store, orchestrators=[call_double], activities=[double])
    assert worker.add_orchestrator(calls_by_name) == "calls_by_name"
    assert worker.add_orchestrator(calls_by_name, name="alias") == "alias"
    assert worker.add_activity(renamed, name="plus_hundred") == "plus_hundred"
    async with worker:
        client = durable.Client(store)
        a = await client.schedule_new_orchestration(call_double, input=2)
        b = await client.schedule_new_orchestration(calls_by_name, input=1)
        c = await client.schedule_new_orchestration("alias", input=2)
        outputs = []
        for iid in (a, b, c):
            st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert st is not None
            outputs.append(st.get_output())
    assert outputs == [4, 101, 102]


async def _async_orchestrator(ctx: task.OrchestrationContext, _: Any) -> None:
    return None


def test_bad_registrations_raise(store: durable.MemoryStore) -> None:
    worker = durable.Worker(store, orchestrators=[quick], activities=[double])
    with pytest.raises(ValueError, match="quick"):
        worker.add_orchestrator(quick)
    with pytest.raises(ValueError, match="double"):
        worker.add_activity(double)
    with pytest.raises(ValueError):
        worker.add_activity(lambda ctx, x: x)
    with pytest.raises(ValueError):
        worker.add_orchestrator(lambda ctx, x: x)
    with pytest.raises(TypeError, match="async"):
        worker.add_orchestrator(_async_orchestrator)
    with pytest.raises(ValueError):
        durable.Worker(store, orchestrators=[quick, quick])
    with pytest.raises(ValueError):
        durable.Worker(store, activities=[double, double])
    with pytest.raises(TypeError):
        durable.Worker(store, orchestrators=[_async_orchestrator])
    assert worker.add_activity(lambda ctx, x: x, name="identity") == "identity"


# -- a worker on its own thread --------------------------------------------------------


def test_start_in_thread_with_a_client_on_another_loop(store: durable.MemoryStore) -> None:
    worker = make_worker(store)
    worker.start_in_thread()
    try:
        with pytest.raises(RuntimeError):
            worker.start_in_thread()

        async def use_client() -> list[Any]:
            client = durable.Client(store)
            a = await client.schedule_new_orchestration(call_double, input=5)
            b = await client.schedule_new_orchestration(wait_event, input="go")
            await client.wait_for_orchestration_start(b, timeout=WAIT)
            await client.raise_orchestration_event(b, "go", data="x")
            out = []
            for iid in (a, b):
                st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
                assert st is not None
                out.append(st.get_output())
            return out

        assert asyncio.run(use_client()) == [10, "x"]
    finally:
        worker.stop()
    assert not any(t.name == "durable-worker" and t.is_alive() for t in threading.enumerate())

    async def after_stop() -> durable.OrchestrationState | None:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(call_double, input=1)
        await asyncio.sleep(0.3)
        return await client.get_orchestration_state(iid)

    st = asyncio.run(after_stop())
    assert st is not None and st.runtime_status is S.PENDING  # nobody runs it any more
    worker.stop()  # a second stop is harmless


# -- concurrency -----------------------------------------------------------------------

_ACTIVE = {"now": 0, "peak": 0}


async def slow(ctx: task.ActivityContext, i: int) -> int:
    _ACTIVE["now"] += 1
    _ACTIVE["peak"] = max(_ACTIVE["peak"], _ACTIVE["now"])
    await asyncio.sleep(0.03)
    _ACTIVE["now"] -= 1
    return i


def fan_out(ctx: task.OrchestrationContext, n: int):
    return (yield task.when_all([ctx.call_activity(slow, input=i) for i in range(n)]))


@pytest.mark.parametrize("limit", [1, 3])
async def test_max_concurrent_activities_is_respected(
    store: durable.MemoryStore, limit: int
) -> None:
    _ACTIVE.update(now=0, peak=0)
    worker = durable.Worker(
        store, orchestrators=[fan_out], activities=[slow], max_concurrent_activities=limit
    )
    async with worker:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(fan_out, input=8)
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None and st.get_output() == list(range(8))
    assert _ACTIVE["peak"] == limit


def record_once(ctx: task.ActivityContext, key: str) -> str:
    CALLS.add(key)
    time.sleep(0.002)
    return key.upper()


def many_steps(ctx: task.OrchestrationContext, n: int):
    keys = [f"{ctx.instance_id}/{i}" for i in range(n)]
    first = yield task.when_all([ctx.call_activity(record_once, input=k) for k in keys])
    yield ctx.create_timer(timedelta(milliseconds=5))
    last = yield ctx.call_activity(record_once, input=f"{ctx.instance_id}/last")
    return [*first, last]


async def test_several_workers_share_one_store(store: durable.MemoryStore) -> None:
    def worker() -> durable.Worker:
        return durable.Worker(
            store,
            orchestrators=[many_steps],
            activities=[record_once],
            max_concurrent_orchestrations=2,
            max_concurrent_activities=4,
        )

    async with worker(), worker(), worker():
        client = durable.Client(store)
        ids = [await client.schedule_new_orchestration(many_steps, input=4) for _ in range(20)]
        for iid in ids:
            st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert st is not None and st.runtime_status is S.COMPLETED, st
            assert st.get_output() == [f"{iid}/{i}".upper() for i in range(4)] + [
                f"{iid}/last".upper()
            ]
    assert len(CALLS.counts) == 20 * 5
    assert set(CALLS.counts.values()) == {1}  # every activity ran exactly once
