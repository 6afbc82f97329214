"""End to end: fork_orchestration, a new instance going on from a chosen step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls

import durable
from durable import task
from durable.core.events import (
    ChildOrchestrationCreated,
    ExecutionStarted,
    HistoryEvent,
    TaskCompleted,
    TaskScheduled,
)

S = durable.OrchestrationStatus
CALLS = Calls()
HOLD = threading.Event()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    HOLD.clear()
    yield
    HOLD.set()


def step(ctx: task.ActivityContext, key: str) -> str:
    CALLS.add(key)
    return key.upper()


def held(ctx: task.ActivityContext, key: str) -> str:
    """Waits for the test (in a worker thread) before it returns."""
    CALLS.add(key)
    HOLD.wait(WAIT)
    return key.upper()


def four_steps(ctx: task.OrchestrationContext, _: Any):
    done = []
    for key in ("a", "b", "c", "d"):
        done.append((yield ctx.call_activity(step, input=key)))
    return done


def four_steps_fixed(ctx: task.OrchestrationContext, _: Any):
    """The same first two steps; then different ones."""
    done = []
    for key in ("a", "b", "x", "y"):
        done.append((yield ctx.call_activity(step, input=key)))
    return done


def with_child_and_timer(ctx: task.OrchestrationContext, _: Any):
    first = yield ctx.call_activity(step, input="first")
    child = yield ctx.call_sub_orchestrator(four_steps)
    yield ctx.create_timer(timedelta(milliseconds=50))
    return [first, child]


def waits_on_held(ctx: task.OrchestrationContext, _: Any):
    a = yield ctx.call_activity(step, input="a")
    b = yield ctx.call_activity(held, input="b")
    return [a, b]


def after(history: list[HistoryEvent] | Any, key: str) -> int:
    """The number of events up to and including the result of activity `key`."""
    ids = {e.task_id for e in history if isinstance(e, TaskScheduled) and e.input == f'"{key}"'}
    return 1 + next(
        i for i, e in enumerate(history) if isinstance(e, TaskCompleted) and e.task_id in ids
    )


def worker(store: durable.Store, **kw: Any) -> durable.Worker:
    kw.setdefault("orchestrators", [four_steps, with_child_and_timer, waits_on_held])
    return durable.Worker(store, activities=[step, held], poll_interval=0.05, **kw)


async def done(client: durable.Client, iid: str) -> durable.OrchestrationState:
    st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None
    return st


async def test_a_fork_keeps_the_steps_before_the_cut_and_runs_the_rest(
    store: durable.Store,
) -> None:
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(four_steps, instance_id="orig")
        assert (await done(client, iid)).get_output() == ["A", "B", "C", "D"]
        original = list(await client.get_orchestration_history(iid))
        CALLS.clear()
        fork = await client.fork_orchestration(iid, at=after(original, "b"))
        st = await done(client, fork)
    assert st.runtime_status is S.COMPLETED and st.get_output() == ["A", "B", "C", "D"]
    assert dict(CALLS.counts) == {"c": 1, "d": 1}  # a and b kept their results
    assert fork.startswith("orig-fork-")
    assert list(await client.get_orchestration_history(iid)) == original  # untouched
    forked = await client.get_orchestration_history(fork)
    [new_start] = [e for e in forked if isinstance(e, ExecutionStarted)]
    [old_start] = [e for e in original if isinstance(e, ExecutionStarted)]
    assert new_start.instance_id == fork and new_start.execution_id != old_start.execution_id


async def test_fixed_code_decides_everything_after_the_cut(store: durable.Store) -> None:
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(four_steps)
        await done(client, iid)
        original = list(await client.get_orchestration_history(iid))
    CALLS.clear()
    fixed = worker(store, orchestrators=[])
    fixed.add_orchestrator(four_steps_fixed, name="four_steps")
    async with fixed:
        fork = await client.fork_orchestration(iid, at=after(original, "b"), new_instance_id="v2")
        st = await done(client, fork)
    assert fork == "v2" and st.get_output() == ["A", "B", "X", "Y"]
    assert dict(CALLS.counts) == {"x": 1, "y": 1}


async def test_work_in_flight_at_the_cut_starts_again(store: durable.Store) -> None:
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(waits_on_held)
        HOLD.set()
        await done(client, iid)
        original = list(await client.get_orchestration_history(iid))
        CALLS.clear()
        # Cut right after "b" was scheduled, before its result: it must run in the fork.
        cut = 1 + next(
            i for i, e in enumerate(original) if isinstance(e, TaskScheduled) and e.input == '"b"'
        )
        fork = await client.fork_orchestration(iid, at=cut)
        st = await done(client, fork)
    assert st.get_output() == ["A", "B"]
    assert dict(CALLS.counts) == {"b": 1}


async def test_children_and_timers_of_a_fork_are_its_own(store: durable.Store) -> None:
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(with_child_and_timer, instance_id="p")
        assert (await done(client, iid)).runtime_status is S.COMPLETED
        original = list(await client.get_orchestration_history(iid))
        CALLS.clear()
        # Cut just after the child was created: the fork starts its own child, then waits
        # on its own timer.
        cut = 1 + next(
            i for i, e in enumerate(original) if isinstance(e, ChildOrchestrationCreated)
        )
        fork = await client.fork_orchestration(iid, at=cut, new_instance_id="q")
        st = await done(client, fork)
    assert st.get_output() == ["FIRST", ["A", "B", "C", "D"]]
    created = [
        e
        for e in await client.get_orchestration_history(fork)
        if isinstance(e, ChildOrchestrationCreated)
    ]
    assert [e.instance_id for e in created] == ["q:0001"]
    child = await client.get_orchestration_state("q:0001")
    assert child is not None and child.parent_instance_id == "q"
    assert dict(CALLS.counts) == {"a": 1, "b": 1, "c": 1, "d": 1}  # the child's steps only
    original_child = await client.get_orchestration_state("p:0001")
    assert original_child is not None and original_child.runtime_status is S.COMPLETED


async def test_a_fork_at_a_failure_runs_the_failed_step_again(store: durable.Store) -> None:
    failing = {"c"}

    def flaky(ctx: task.ActivityContext, key: str) -> str:
        CALLS.add(key)
        if key in failing:
            raise RuntimeError(f"{key} broke")
        return key.upper()

    flaky.__name__ = "step"
    client = durable.Client(store)
    w = durable.Worker(store, orchestrators=[four_steps], poll_interval=0.05)
    w.add_activity(flaky, name="step")
    async with w:
        iid = await client.schedule_new_orchestration(four_steps)
        assert (await done(client, iid)).runtime_status is S.FAILED
        history = await client.get_orchestration_history(iid)
        failing.clear()
        CALLS.clear()
        fork = await client.fork_orchestration(iid, at=len(history))
        st = await done(client, fork)
    assert st.runtime_status is S.COMPLETED and st.get_output() == ["A", "B", "C", "D"]
    assert dict(CALLS.counts) == {"c": 1, "d": 1}
    state = await client.get_orchestration_state(iid)
    assert state is not None and state.runtime_status is S.FAILED  # the original stays


async def test_bad_forks_are_refused(store: durable.Store) -> None:
    client = durable.Client(store)
    with pytest.raises(durable.OrchestrationNotFoundError):
        await client.fork_orchestration("nobody", at=1)
    async with worker(store):
        iid = await client.schedule_new_orchestration(four_steps)
        await done(client, iid)
        length = len(await client.get_orchestration_history(iid))
        for at in (0, length + 1):
            with pytest.raises(ValueError, match="between 1 and"):
                await client.fork_orchestration(iid, at=at)
        running = await client.schedule_new_orchestration(four_steps, instance_id="busy")
        # the id of an unfinished instance cannot be taken
        with pytest.raises(durable.OrchestrationAlreadyExistsError):
            await client.fork_orchestration(iid, at=3, new_instance_id=running)


def waits_for_go(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.wait_for_external_event("go"))


def calls_a_waiting_child(ctx: task.OrchestrationContext, _: Any) -> Any:
    return (yield ctx.call_sub_orchestrator(waits_for_go, instance_id="kid"))


async def running(client: durable.Client, iid: str, not_execution: str | None = None) -> str:
    """Wait until `iid` runs (an execution other than `not_execution`); its execution id."""
    for _ in range(500):
        st = await client.get_orchestration_state(iid)
        if st is not None and st.runtime_status is S.RUNNING and st.execution_id != not_execution:
            assert st.execution_id is not None
            return st.execution_id
        await asyncio.sleep(0.01)
    raise AssertionError(f"{iid} never ran")


async def test_rewinding_a_parent_whose_child_was_terminated_runs_the_child_anew(
    store: durable.Store,
) -> None:
    client = durable.Client(store)
    async with worker(store, orchestrators=[calls_a_waiting_child, waits_for_go]):
        parent = await client.schedule_new_orchestration(calls_a_waiting_child)
        first = await running(client, "kid")
        await client.terminate_orchestration("kid")
        assert (await done(client, parent)).runtime_status is S.FAILED
        await client.rewind_orchestration(parent)
        again = await running(client, "kid", not_execution=first)  # run anew, same id
        assert again != first
        await client.raise_orchestration_event("kid", "go", data="went")
        final = await done(client, parent)
    assert final.runtime_status is S.COMPLETED and final.get_output() == "went"
