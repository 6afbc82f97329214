"""End to end: the Client's management features, on every store.

Rewind (failed activities, when_all, exhausted retries, failed children, a fixed
orchestrator bug), purge (recursive or not), restart and re-use of instance ids, delayed
starts, listing with filters and pages, history export, and the blocking `SyncClient`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls, eventually, has_status, status_of

import durable
from durable import task
from durable.core.events import (
    ChildOrchestrationFailed,
    EventRaised,
    ExecutionCompleted,
    ExecutionRewound,
    ExecutionStarted,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)

S = durable.OrchestrationStatus
CALLS = Calls()
BROKEN: set[str] = set()
"""Keys of the `step` calls that fail until the test "fixes" them (removes the key)."""
GATE = threading.Event()
"""Holds `gated_step` calls back until the test opens it."""


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    BROKEN.clear()
    GATE.clear()
    yield
    GATE.set()  # never leave an activity thread blocked behind a failed test


# -- activities and orchestrators ------------------------------------------------------


def step(ctx: task.ActivityContext, key: str) -> str:
    CALLS.add(key, (ctx.attempt, datetime.now(UTC)))
    if key in BROKEN:
        raise RuntimeError(f"{key} is broken")
    return f"{key} done"


def gated_step(ctx: task.ActivityContext, key: str) -> str:
    GATE.wait(WAIT)
    return step(ctx, key)


def pipeline(ctx: task.OrchestrationContext, keys: list[str]):
    results = []
    for key in keys:
        results.append((yield ctx.call_activity(step, input=key)))
    return results


def fan_out(ctx: task.OrchestrationContext, plan: list[tuple[str, bool]]):
    calls = [ctx.call_activity(gated_step if gated else step, input=key) for key, gated in plan]
    return (yield task.when_all(calls))


RETRY = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=20), max_number_of_attempts=3)


def retrying(ctx: task.OrchestrationContext, keys: list[str]):
    first = yield ctx.call_activity(step, input=keys[0])
    second = yield ctx.call_activity(step, input=keys[1], retry_policy=RETRY)
    return [first, second]


def nested(ctx: task.OrchestrationContext, depth: int):
    """Level `depth` runs its own step, then the level below; level 0 is a pipeline."""
    if depth == 0:
        return (yield from pipeline(ctx, ["leaf-1", "leaf-2", "leaf-3"]))
    own = yield ctx.call_activity(step, input=f"level-{depth}")
    below = yield ctx.call_sub_orchestrator(
        nested, input=depth - 1, instance_id=f"{ctx.instance_id}/{depth - 1}"
    )
    return [own, below]


def parallel_steps(ctx: task.OrchestrationContext, _: Any):
    slow = ctx.call_activity(gated_step, input="slow")
    fast = ctx.call_activity(step, input="fast")
    first = yield fast  # if it fails, the orchestration fails while "slow" still runs
    second = yield slow
    return [first, second]


def flow_with_bug(ctx: task.OrchestrationContext, _: Any):
    first = yield ctx.call_activity(step, input="a")
    raise ValueError(f"bug in the orchestrator after {first!r}")


def flow_fixed(ctx: task.OrchestrationContext, _: Any):
    first = yield ctx.call_activity(step, input="a")
    second = yield ctx.call_activity(step, input="b")
    return [first, second]


def greet(ctx: task.OrchestrationContext, _: Any):
    started = ctx.current_utc_datetime.isoformat()
    data = yield ctx.wait_for_external_event("go")
    return [started, data]


def quick(ctx: task.OrchestrationContext, value: Any) -> Any:
    return value


def family(ctx: task.OrchestrationContext, depth: int):
    """Two children per level down to depth 0; ids are `<parent>.<i>`."""
    if depth == 0:
        return ctx.instance_id
    kids = [
        ctx.call_sub_orchestrator(family, input=depth - 1, instance_id=f"{ctx.instance_id}.{i}")
        for i in range(2)
    ]
    return (yield task.when_all(kids))


def parent_of_waiter(ctx: task.OrchestrationContext, _: Any):
    return (yield ctx.call_sub_orchestrator(greet, instance_id=f"{ctx.instance_id}.kid"))


def everything(ctx: task.OrchestrationContext, _: Any):
    """Touches most kinds of history event, for the JSON export."""
    ctx.set_custom_status({"stage": "start"})
    try:
        yield ctx.call_activity(step, input="always-broken")
    except task.TaskFailedError as e:
        caught = e.details.error_type
    yield ctx.create_timer(timedelta(milliseconds=10))
    data = yield ctx.wait_for_external_event("go")
    child = yield ctx.call_sub_orchestrator(pipeline, input=["child-step"])
    ctx.send_event(ctx.instance_id, "self-note", data="ignored")
    ctx.set_custom_status({"stage": "done", "unicode": "é✓"})
    return {"caught": caught, "data": data, "child": child, "uuid": ctx.new_uuid()}


ORCHESTRATORS = [
    pipeline,
    fan_out,
    retrying,
    nested,
    greet,
    quick,
    family,
    parent_of_waiter,
    everything,
    parallel_steps,
]


def make_worker(store: durable.Store, **kw: Any) -> durable.Worker:
    return durable.Worker(store, orchestrators=ORCHESTRATORS, activities=[step, gated_step], **kw)


# -- helpers ---------------------------------------------------------------------------


def events_of(history: durable.History, kind: type) -> list[Any]:
    return [e for e in history if isinstance(e, kind)]


async def history_of(client: durable.Client, iid: str) -> durable.History:
    return await client.get_orchestration_history(iid)


async def ended_times(client: durable.Client, iid: str, n: int) -> durable.OrchestrationState:
    """Wait until the instance's history holds `n` ends and it is finished; its state.

    After a rewind the state is still the old FAILED one until a worker acts on it, so
    `wait_for_orchestration_completion` alone would return at once.
    """

    async def check() -> bool:
        st = await client.get_orchestration_state(iid)
        ends = events_of(await history_of(client, iid), ExecutionCompleted)
        return st is not None and st.runtime_status.is_terminal and len(ends) == n

    await eventually(check)
    st = await client.get_orchestration_state(iid)
    assert st is not None
    return st


async def failed(client: durable.Client, iid: str) -> durable.OrchestrationState:
    st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None and st.runtime_status is S.FAILED, st
    return st


def assert_append_only(before: durable.History, after: durable.History) -> None:
    assert len(after) > len(before)
    assert list(after)[: len(before)] == list(before)


def assert_rewound_once(before: durable.History, after: durable.History) -> None:
    """The old failure stays, one ExecutionRewound follows it, the history ends completed."""
    assert_append_only(before, after)
    ends = events_of(after, ExecutionCompleted)
    assert [e.status for e in ends] == ["FAILED", "COMPLETED"]
    rewinds = events_of(after, ExecutionRewound)
    assert len(rewinds) == 1
    kinds = list(after)
    assert kinds.index(ends[0]) < kinds.index(rewinds[0]) < kinds.index(ends[1])
    assert after[-1] == ends[1]


# -- rewind ----------------------------------------------------------------------------


async def test_rewind_reruns_only_the_failed_activity(store: durable.Store) -> None:
    BROKEN.add("b")
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(pipeline, input=["a", "b", "c"])
        st = await failed(client, iid)
        assert st.failure_details is not None
        assert "b is broken" in st.failure_details.message
        assert CALLS.counts == {"a": 1, "b": 1}
        before = await history_of(client, iid)
        assert len(events_of(before, TaskFailed)) == 1

        BROKEN.clear()  # the fix
        await client.rewind_orchestration(iid, reason="b was fixed")
        done = await ended_times(client, iid, 2)
        after = await history_of(client, iid)

    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["a done", "b done", "c done"]
    assert done.failure_details is None
    assert CALLS.counts == {"a": 1, "b": 2, "c": 1}
    assert_rewound_once(before, after)
    assert events_of(after, ExecutionRewound)[0].reason == "b was fixed"
    assert len(events_of(after, TaskFailed)) == 1  # the old failure is still there
    # "b" is not scheduled a second time in the history: the recorded call runs again.
    assert [e.input for e in events_of(after, TaskScheduled)] == ['"a"', '"b"', '"c"']


async def test_rewind_before_the_fix_fails_again_then_a_second_rewind_completes(
    store: durable.Store,
) -> None:
    BROKEN.add("b")
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(pipeline, input=["a", "b", "c"])
        await failed(client, iid)
        first = await history_of(client, iid)

        await client.rewind_orchestration(iid)  # not fixed yet
        again = await ended_times(client, iid, 2)
        assert again.runtime_status is S.FAILED
        assert again.failure_details is not None and "b is broken" in again.failure_details.message
        second = await history_of(client, iid)
        assert_append_only(first, second)
        assert CALLS.counts == {"a": 1, "b": 2}

        BROKEN.clear()
        await client.rewind_orchestration(iid)
        done = await ended_times(client, iid, 3)
        third = await history_of(client, iid)

    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["a done", "b done", "c done"]
    assert CALLS.counts == {"a": 1, "b": 3, "c": 1}
    assert_append_only(second, third)
    assert [e.status for e in events_of(third, ExecutionCompleted)] == [
        "FAILED",
        "FAILED",
        "COMPLETED",
    ]
    assert len(events_of(third, ExecutionRewound)) == 2
    assert len(events_of(third, TaskFailed)) == 2


@pytest.mark.parametrize("failure_first", [True, False], ids=["failure-first", "failure-last"])
async def test_rewind_inside_when_all_reruns_only_the_failed_branch(
    store: durable.Store, failure_first: bool
) -> None:
    """The failed branch's result arrives before (or after) its siblings' results."""
    BROKEN.add("b")
    # The gated calls finish only when the test opens the gate, which fixes the order.
    plan = [("a", failure_first), ("b", not failure_first), ("c", failure_first)]
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(fan_out, input=plan)

        async def first_results_recorded() -> bool:
            history = await history_of(client, iid)
            if failure_first:
                return len(events_of(history, TaskFailed)) == 1
            return len(events_of(history, TaskCompleted)) == 2

        await eventually(first_results_recorded)
        assert await status_of(client, iid) is S.RUNNING  # when_all waits for every branch
        GATE.set()
        await failed(client, iid)
        before = await history_of(client, iid)
        assert CALLS.counts == {"a": 1, "b": 1, "c": 1}

        BROKEN.clear()
        await client.rewind_orchestration(iid)
        done = await ended_times(client, iid, 2)
        after = await history_of(client, iid)

    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["a done", "b done", "c done"]
    assert CALLS.counts == {"a": 1, "b": 2, "c": 1}
    assert_rewound_once(before, after)


async def test_rewind_after_the_retry_policy_gave_up(store: durable.Store) -> None:
    BROKEN.add("flaky")
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(retrying, input=["first", "flaky"])
        await failed(client, iid)
        before = await history_of(client, iid)
        assert [a for a, _ in CALLS.values["flaky"]] == [1, 2, 3]  # every attempt was made
        assert len(events_of(before, TaskFailed)) == 3
        assert len(events_of(before, TimerFired)) == 2  # the waits between attempts

        BROKEN.clear()
        await client.rewind_orchestration(iid)
        done = await ended_times(client, iid, 2)
        after = await history_of(client, iid)

    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["first done", "flaky done"]
    assert CALLS.counts == {"first": 1, "flaky": 4}  # one more run, not a new round of three
    assert_rewound_once(before, after)
    assert len(events_of(after, TaskFailed)) == 3


@pytest.mark.parametrize("depth", [1, 2])
async def test_rewinding_a_parent_rewinds_its_failed_child(
    store: durable.Store, depth: int
) -> None:
    BROKEN.add("leaf-2")
    root = "root"
    ids = [root]  # root, root/<depth-1>, root/<depth-1>/<depth-2>, ... down to level 0
    for level in range(depth - 1, -1, -1):
        ids.append(f"{ids[-1]}/{level}")
    async with make_worker(store):
        client = durable.Client(store)
        await client.schedule_new_orchestration(nested, input=depth, instance_id=root)
        for iid in ids:
            await failed(client, iid)
        assert CALLS.counts == {
            **{f"level-{d}": 1 for d in range(1, depth + 1)},
            "leaf-1": 1,
            "leaf-2": 1,
        }
        before = {iid: await history_of(client, iid) for iid in ids}
        assert len(events_of(before[root], ChildOrchestrationFailed)) == 1
        executions = {iid: (await failed(client, iid)).execution_id for iid in ids}

        BROKEN.clear()
        await client.rewind_orchestration(root)
        states = {iid: await ended_times(client, iid, 2) for iid in ids}
        after = {iid: await history_of(client, iid) for iid in ids}

    for iid in ids:
        assert states[iid].runtime_status is S.COMPLETED, (iid, states[iid].failure_details)
        assert_rewound_once(before[iid], after[iid])
    leaf = ["leaf-1 done", "leaf-2 done", "leaf-3 done"]
    expected: Any = leaf
    for d in range(1, depth + 1):
        expected = [f"level-{d} done", expected]
    assert states[root].get_output() == expected
    assert CALLS.counts == {
        **{f"level-{d}": 1 for d in range(1, depth + 1)},
        "leaf-1": 1,
        "leaf-2": 2,
        "leaf-3": 1,
    }
    # The children were rewound, not started anew: the same execution, with both ends.
    for iid in ids:
        assert len(events_of(after[iid], ExecutionStarted)) == 1
        assert states[iid].execution_id == executions[iid]


@pytest.mark.parametrize(
    "slow_finished", [True, False], ids=["finished-before-rewind", "running-at-rewind"]
)
async def test_rewind_does_not_run_again_a_step_that_was_still_running_at_the_failure(
    store: durable.Store, slow_finished: bool
) -> None:
    """A step started before the failure finishes (before or after the rewind) and is used."""
    BROKEN.add("fast")
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(parallel_steps)
        await failed(client, iid)
        assert CALLS.counts == {"fast": 1}  # "slow" is still held at the gate
        if slow_finished:
            GATE.set()  # its result reaches the failed instance, which keeps it
            await eventually(lambda: _ran(CALLS, "slow"))
            await asyncio.sleep(0.2)  # time to record the result
        BROKEN.clear()
        await client.rewind_orchestration(iid)
        if not slow_finished:
            await asyncio.sleep(0.2)  # time for the rewind to act while "slow" runs
            GATE.set()
        done = await ended_times(client, iid, 2)
        await asyncio.sleep(0.1)  # a second run of "slow" would have shown by now
        history = await history_of(client, iid)
    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["fast done", "slow done"]
    assert CALLS.counts == {"fast": 2, "slow": 1}
    assert len(events_of(history, TaskCompleted)) == 2


async def _ran(calls: Calls, key: str) -> bool:
    return calls.counts[key] > 0


async def test_rewind_after_fixing_a_bug_in_the_orchestrator(store: durable.Store) -> None:
    client = durable.Client(store)
    buggy = make_worker(store)
    buggy.add_orchestrator(flow_with_bug, name="flow")
    async with buggy:
        iid = await client.schedule_new_orchestration("flow")
        st = await failed(client, iid)
    assert st.failure_details is not None
    assert st.failure_details.error_type == "builtins.ValueError"
    assert CALLS.counts == {"a": 1}
    before = await history_of(client, iid)

    fixed = make_worker(store)  # the deploy with the fix, under the same name
    fixed.add_orchestrator(flow_fixed, name="flow")
    async with fixed:
        await client.rewind_orchestration(iid)
        done = await ended_times(client, iid, 2)
        after = await history_of(client, iid)

    assert done.runtime_status is S.COMPLETED, done.failure_details
    assert done.get_output() == ["a done", "b done"]
    assert CALLS.counts == {"a": 1, "b": 1}  # "a" had succeeded: it is not run again
    assert_rewound_once(before, after)


async def test_rewind_refuses_instances_that_have_not_failed(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        running = await client.schedule_new_orchestration(greet)
        await client.wait_for_orchestration_start(running, timeout=WAIT)
        completed = await client.schedule_new_orchestration(pipeline, input=["x"])
        await client.wait_for_orchestration_completion(completed, timeout=WAIT)
        terminated = await client.schedule_new_orchestration(greet)
        await client.wait_for_orchestration_start(terminated, timeout=WAIT)
        await client.terminate_orchestration(terminated)
        await client.wait_for_orchestration_completion(terminated, timeout=WAIT)
        pending = await client.schedule_new_orchestration(
            quick, start_at=datetime.now(UTC) + timedelta(hours=1)
        )
        histories = {i: await history_of(client, i) for i in (running, completed, terminated)}

        for iid, status in [
            (running, "RUNNING"),
            (completed, "COMPLETED"),
            (terminated, "TERMINATED"),
            (pending, "PENDING"),
        ]:
            with pytest.raises(durable.OrchestrationStateError, match=status):
                await client.rewind_orchestration(iid)
        with pytest.raises(durable.OrchestrationNotFoundError):
            await client.rewind_orchestration("no-such-instance")
        assert await client.get_orchestration_state("no-such-instance") is None

        await asyncio.sleep(0.1)
        for iid, history in histories.items():
            assert await history_of(client, iid) == history  # nothing was appended
        assert await status_of(client, completed) is S.COMPLETED
        assert await status_of(client, pending) is S.PENDING
        # The running one was not disturbed either.
        await client.raise_orchestration_event(running, "go", data="still fine")
        done = await client.wait_for_orchestration_completion(running, timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.get_output()[1] == "still fine"


# -- purge -----------------------------------------------------------------------------

FAMILY = ["root", "root.0", "root.1", "root.0.0", "root.0.1", "root.1.0", "root.1.1"]


async def run_family(client: durable.Client) -> None:
    await client.schedule_new_orchestration(family, input=2, instance_id="root")
    for iid in FAMILY:
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert st is not None and st.runtime_status is S.COMPLETED, iid


async def test_purge_deletes_children_and_grandchildren_by_default(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        await run_family(client)
        other = await client.schedule_new_orchestration(quick, input=1)
        await client.wait_for_orchestration_completion(other, timeout=WAIT)
        assert await client.purge_orchestration("root") == len(FAMILY)
    for iid in FAMILY:
        assert await client.get_orchestration_state(iid) is None, iid
        assert list(await history_of(client, iid)) == []
    assert [s.instance_id async for s in client.list_orchestrations()] == [other]
    assert await client.purge_orchestration("root") == 0


async def test_purge_with_recursive_false_keeps_the_children(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        await run_family(client)
        assert await client.purge_orchestration("root", recursive=False) == 1
    assert await client.get_orchestration_state("root") is None
    for iid in FAMILY[1:]:
        st = await client.get_orchestration_state(iid)
        assert st is not None and st.runtime_status is S.COMPLETED, iid
        assert len(await history_of(client, iid)) > 0
    # A child can be purged on its own afterwards, with its own children.
    assert await client.purge_orchestration("root.0") == 3
    remaining = [s.instance_id async for s in client.list_orchestrations()]
    assert remaining == [i for i in FAMILY if i.startswith("root.1")]


async def test_purging_a_running_instance_deletes_nothing(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        running = await client.schedule_new_orchestration(greet)
        await client.wait_for_orchestration_start(running, timeout=WAIT)
        with pytest.raises(durable.OrchestrationStateError):
            await client.purge_orchestration(running)
        assert await status_of(client, running) is S.RUNNING

        # A finished parent whose child still runs: the recursive purge deletes neither.
        parent = await client.schedule_new_orchestration(parent_of_waiter, instance_id="p")
        await eventually(has_status(client, "p.kid", S.RUNNING))
        await client.terminate_orchestration(parent, recursive=False)
        await client.wait_for_orchestration_completion(parent, timeout=WAIT)
        history = await history_of(client, parent)
        with pytest.raises(durable.OrchestrationStateError, match=r"p\.kid"):
            await client.purge_orchestration(parent)
        assert await status_of(client, parent) is S.TERMINATED
        assert await history_of(client, parent) == history
        assert await status_of(client, "p.kid") is S.RUNNING

        # Without recursion the finished parent alone goes; the child runs on.
        assert await client.purge_orchestration(parent, recursive=False) == 1
        assert await client.get_orchestration_state(parent) is None
        for iid in (running, "p.kid"):
            await client.raise_orchestration_event(iid, "go", data=iid)
            done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert done is not None and done.runtime_status is S.COMPLETED
            assert done.get_output()[1] == iid


# -- restart and instance ids ----------------------------------------------------------


async def test_restart_runs_everything_again_from_the_original_input(
    store: durable.Store,
) -> None:
    BROKEN.add("b")
    async with make_worker(store):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(pipeline, input=["a", "b"])
        first = await failed(client, iid)
        BROKEN.clear()
        assert await client.restart_orchestration(iid) == iid
        await eventually(has_status(client, iid, S.COMPLETED))
        done = await client.get_orchestration_state(iid)
        history = await history_of(client, iid)
    assert done is not None
    assert done.get_output() == ["a done", "b done"]
    assert done.get_input() == ["a", "b"]
    assert done.execution_id != first.execution_id
    assert done.failure_details is None
    assert CALLS.counts == {"a": 2, "b": 2}  # unlike a rewind, everything runs again
    # A fresh history: one start with the original input, no trace of the failure.
    starts = events_of(history, ExecutionStarted)
    assert [s.input for s in starts] == ['["a","b"]']
    assert events_of(history, TaskFailed) == []
    assert events_of(history, ExecutionRewound) == []
    assert [e.status for e in events_of(history, ExecutionCompleted)] == ["COMPLETED"]


async def test_scheduling_an_unfinished_id_again_is_refused(store: durable.Store) -> None:
    client = durable.Client(store)
    # PENDING: no worker has picked it up yet.
    await client.schedule_new_orchestration(greet, input="first", instance_id="dup")
    with pytest.raises(durable.OrchestrationAlreadyExistsError):
        await client.schedule_new_orchestration(quick, input="second", instance_id="dup")
    st = await client.get_orchestration_state("dup")
    assert st is not None and st.name == "greet" and st.get_input() == "first"
    async with make_worker(store):
        await client.wait_for_orchestration_start("dup", timeout=WAIT)
        before = await client.get_orchestration_state("dup")
        history = await history_of(client, "dup")
        with pytest.raises(durable.OrchestrationAlreadyExistsError):
            await client.schedule_new_orchestration(quick, input="third", instance_id="dup")
        after = await client.get_orchestration_state("dup")
        assert after == before  # RUNNING and untouched
        assert await history_of(client, "dup") == history
        assert [s.instance_id async for s in client.list_orchestrations()] == ["dup"]
        await client.raise_orchestration_event("dup", "go", data="own event")
        done = await client.wait_for_orchestration_completion("dup", timeout=WAIT)
    assert done is not None and done.runtime_status is S.COMPLETED
    assert done.name == "greet" and done.get_input() == "first"
    assert done.get_output()[1] == "own event"


@pytest.mark.parametrize("how", ["completed", "failed", "terminated"])
async def test_scheduling_a_finished_id_again_replaces_it(store: durable.Store, how: str) -> None:
    BROKEN.add("bad")
    async with make_worker(store):
        client = durable.Client(store)
        if how == "terminated":
            await client.schedule_new_orchestration(greet, instance_id="reuse")
            await client.wait_for_orchestration_start("reuse", timeout=WAIT)
            await client.terminate_orchestration("reuse")
        else:
            keys = ["bad"] if how == "failed" else ["old"]
            await client.schedule_new_orchestration(pipeline, input=keys, instance_id="reuse")
        old = await client.wait_for_orchestration_completion("reuse", timeout=WAIT)
        assert old is not None and old.runtime_status.value == how.upper()

        assert (
            await client.schedule_new_orchestration(pipeline, input=["new"], instance_id="reuse")
            == "reuse"
        )
        await eventually(has_status(client, "reuse", S.COMPLETED))
        done = await client.get_orchestration_state("reuse")
        history = await history_of(client, "reuse")
        listed = [s.instance_id async for s in client.list_orchestrations()]
    assert done is not None
    assert done.name == "pipeline" and done.get_input() == ["new"]
    assert done.get_output() == ["new done"]
    assert done.failure_details is None
    assert done.execution_id != old.execution_id
    assert listed == ["reuse"]
    assert [s.input for s in events_of(history, ExecutionStarted)] == ['["new"]']
    assert [e.status for e in events_of(history, ExecutionCompleted)] == ["COMPLETED"]


# -- delayed start ---------------------------------------------------------------------


async def test_start_at_in_the_near_future(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        start_at = datetime.now(UTC) + timedelta(milliseconds=300)
        iid = await client.schedule_new_orchestration(pipeline, input=["later"], start_at=start_at)
        st = await client.get_orchestration_state(iid)
        assert st is not None and st.runtime_status is S.PENDING
        assert st.scheduled_start_at == start_at
        await asyncio.sleep(0.1)
        looked_at = datetime.now(UTC)
        st = await client.get_orchestration_state(iid)
        if looked_at < start_at - timedelta(milliseconds=50):  # the host was not too slow
            assert st is not None and st.runtime_status is S.PENDING
            assert CALLS.counts["later"] == 0
        started = await client.wait_for_orchestration_start(iid, timeout=WAIT)
        assert started is not None and started.runtime_status is not S.PENDING
        assert datetime.now(UTC) >= start_at
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        history = await history_of(client, iid)
    assert done is not None and done.get_output() == ["later done"]
    ((_, ran_at),) = CALLS.values["later"]
    assert ran_at >= start_at
    assert all(e.timestamp >= start_at for e in events_of(history, OrchestratorStarted))


async def test_an_event_raised_before_a_delayed_start_waits_for_it(store: durable.Store) -> None:
    async with make_worker(store):
        client = durable.Client(store)
        start_at = datetime.now(UTC) + timedelta(milliseconds=300)
        iid = await client.schedule_new_orchestration(greet, start_at=start_at)
        await client.raise_orchestration_event(iid, "GO", data="early")  # names ignore case
        await asyncio.sleep(0.1)
        looked_at = datetime.now(UTC)
        st = await client.get_orchestration_state(iid)
        if looked_at < start_at - timedelta(milliseconds=50):
            assert st is not None and st.runtime_status is S.PENDING
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        history = await history_of(client, iid)
    assert done is not None and done.runtime_status is S.COMPLETED
    started, data = done.get_output()
    assert data == "early"
    assert datetime.fromisoformat(started) >= start_at
    kinds = [type(e) for e in history]
    assert kinds.index(ExecutionStarted) < kinds.index(EventRaised)
    assert events_of(history, EventRaised)[0].timestamp < start_at  # raised before the start


# -- listing ---------------------------------------------------------------------------


async def test_list_orchestrations_filters_pages_and_limits(store: durable.Store) -> None:
    BROKEN.add("bad")
    async with make_worker(store):
        client = durable.Client(store)
        ids: list[str] = []

        async def add(fn: Callable[..., Any], **kw: Any) -> str:
            await asyncio.sleep(0.003)  # distinct creation times
            iid = await client.schedule_new_orchestration(fn, instance_id=f"i{len(ids)}", **kw)
            ids.append(iid)
            return iid

        c0 = await add(quick, input=0)
        f1 = await add(pipeline, input=["bad"])
        r2 = await add(greet)
        c3 = await add(quick, input=3)
        t4 = await add(greet)
        p5 = await add(quick, start_at=datetime.now(UTC) + timedelta(hours=1))
        c6 = await add(pipeline, input=["good"])
        c7 = await add(quick, input=7)
        for iid in (c0, f1, c3, c6, c7):
            await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        for iid in (r2, t4):
            await client.wait_for_orchestration_start(iid, timeout=WAIT)
        await client.terminate_orchestration(t4)
        await client.wait_for_orchestration_completion(t4, timeout=WAIT)

        async def listed(**kw: Any) -> list[str]:
            return [st.instance_id async for st in client.list_orchestrations(**kw)]

        states = [st async for st in client.list_orchestrations()]
        assert [st.instance_id for st in states] == ids  # creation order
        assert [st.runtime_status for st in states] == [
            S.COMPLETED,
            S.FAILED,
            S.RUNNING,
            S.COMPLETED,
            S.TERMINATED,
            S.PENDING,
            S.COMPLETED,
            S.COMPLETED,
        ]
        for st in states:
            assert st == await client.get_orchestration_state(st.instance_id)

        # status
        assert await listed(status=S.COMPLETED) == [c0, c3, c6, c7]
        assert await listed(status=S.FAILED) == [f1]
        assert await listed(status=S.PENDING) == [p5]
        assert await listed(status=[S.RUNNING, S.TERMINATED]) == [r2, t4]
        assert await listed(status=(S.SUSPENDED,)) == []
        # name
        assert await listed(name="quick") == [c0, c3, p5, c7]
        assert await listed(name="pipeline", status=S.COMPLETED) == [c6]
        assert await listed(name="nobody") == []
        # creation time, bounds inclusive
        created = [st.created_at for st in states]
        assert await listed(created_from=created[2]) == ids[2:]
        assert await listed(created_to=created[4]) == ids[:5]
        assert await listed(created_from=created[2], created_to=created[4]) == ids[2:5]
        assert await listed(created_from=created[3], created_to=created[3]) == [c3]
        after_all = created[-1] + timedelta(seconds=1)
        assert await listed(created_from=after_all) == []
        assert await listed(created_to=created[0] - timedelta(seconds=1)) == []
        assert await listed(created_from=created[1], created_to=created[6], name="quick") == [
            c3,
            p5,
        ]
        # limit and pages
        assert await listed(limit=3) == ids[:3]
        assert await listed(limit=0) == []
        assert await listed(limit=100) == ids
        for page_size in (1, 2, 3, 7, 8, 9):
            assert await listed(page_size=page_size) == ids, page_size
            assert await listed(page_size=page_size, limit=5) == ids[:5], page_size
        assert await listed(page_size=1, status=S.COMPLETED) == [c0, c3, c6, c7]
        assert await listed(page_size=3, status=S.COMPLETED, limit=3) == [c0, c3, c6]
        assert await listed(page_size=2, name="quick", created_from=created[1]) == [c3, p5, c7]


# -- history export --------------------------------------------------------------------


async def test_history_json_round_trips(store: durable.Store) -> None:
    BROKEN.update({"always-broken", "b"})
    async with make_worker(store):
        client = durable.Client(store)
        rich = await client.schedule_new_orchestration(everything, input={"x": [1, "é"]})
        await client.wait_for_orchestration_start(rich, timeout=WAIT)
        await eventually(lambda: _has_event(client, rich, TimerFired), timeout=WAIT)
        await client.raise_orchestration_event(rich, "go", data={"nested": [None, 1.5]})
        done = await client.wait_for_orchestration_completion(rich, timeout=WAIT)
        assert done is not None and done.runtime_status is S.COMPLETED, done.failure_details

        rewound = await client.schedule_new_orchestration(pipeline, input=["a", "b"])
        await failed(client, rewound)
        BROKEN.discard("b")
        await client.rewind_orchestration(rewound)
        await ended_times(client, rewound, 2)

        for iid in (rich, rewound):
            history = await history_of(client, iid)
            text = history.to_json()
            parsed = durable.History.from_json(text)
            assert parsed == history
            assert list(parsed) == list(history)
            assert parsed.to_json() == text
            assert durable.History.from_json(text.encode()) == history
            as_json = json.loads(text)
            assert [e["kind"] for e in as_json] == [type(e).__name__ for e in history]
            assert all(e.timestamp.tzinfo is not None for e in parsed)

    kinds = {type(e) for e in await history_of(client, rich)}
    assert {TaskFailed, TimerCreated, TimerFired, EventRaised, ExecutionCompleted} <= kinds
    assert ExecutionRewound in {type(e) for e in await history_of(client, rewound)}


async def _has_event(client: durable.Client, iid: str, kind: type) -> bool:
    return bool(events_of(await history_of(client, iid), kind))


# -- SyncClient ------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.01)


def sync_client_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "durable-sync-client" and t.is_alive()}


def test_sync_client_from_plain_code(sync_store: durable.Store) -> None:
    BROKEN.add("b")
    worker = make_worker(sync_store)
    worker.start_in_thread()
    try:
        with durable.SyncClient(sync_store) as client:
            # schedule, wait, raise an event
            waiting = client.schedule_new_orchestration(greet, instance_id="waiting")
            st = client.wait_for_orchestration_start(waiting, timeout=WAIT)
            assert st is not None and st.runtime_status is S.RUNNING
            client.raise_orchestration_event(waiting, "go", data={"from": "sync"})
            done = client.wait_for_orchestration_completion(waiting, timeout=WAIT)
            assert done is not None and done.runtime_status is S.COMPLETED
            assert done.get_output()[1] == {"from": "sync"}
            with pytest.raises(TimeoutError):
                pending = client.schedule_new_orchestration(
                    quick, start_at=datetime.now(UTC) + timedelta(hours=1)
                )
                client.wait_for_orchestration_start(pending, timeout=0.1)

            # a failure, then rewind
            broken = client.schedule_new_orchestration(
                pipeline, input=["a", "b"], instance_id="broken"
            )
            st = client.wait_for_orchestration_completion(broken, timeout=WAIT)
            assert st is not None and st.runtime_status is S.FAILED
            with pytest.raises(durable.OrchestrationFailedError):
                st.raise_if_failed()
            BROKEN.clear()
            client.rewind_orchestration(broken)
            wait_until(lambda: client.get_orchestration_state(broken).runtime_status is S.COMPLETED)
            st = client.get_orchestration_state(broken)
            assert st is not None and st.get_output() == ["a done", "b done"]
            assert CALLS.counts == {"a": 1, "b": 2}
            history = client.get_orchestration_history(broken)
            assert len(events_of(history, ExecutionRewound)) == 1
            assert durable.History.from_json(history.to_json()) == history

            # errors come through as they are
            with pytest.raises(durable.OrchestrationStateError):
                client.rewind_orchestration(waiting)
            with pytest.raises(durable.OrchestrationNotFoundError):
                client.rewind_orchestration("nobody")
            with pytest.raises(durable.OrchestrationNotFoundError):
                client.raise_orchestration_event("nobody", "go")
            with pytest.raises(durable.OrchestrationAlreadyExistsError):
                client.schedule_new_orchestration(quick, instance_id=pending)

            # list, whole or page by page, and stopping early
            assert [s.instance_id for s in client.list_orchestrations()] == [
                waiting,
                pending,
                broken,
            ]
            assert [s.instance_id for s in client.list_orchestrations(page_size=1)] == [
                waiting,
                pending,
                broken,
            ]
            assert [
                s.instance_id for s in client.list_orchestrations(status=S.COMPLETED, limit=1)
            ] == [waiting]
            pages = client.list_orchestrations(page_size=1)
            assert next(pages).instance_id == waiting
            pages.close()

            # restart, terminate, purge
            assert client.restart_orchestration(waiting) == waiting
            wait_until(lambda: client.get_orchestration_state(waiting).runtime_status is S.RUNNING)
            client.terminate_orchestration(waiting, output="enough")
            st = client.wait_for_orchestration_completion(waiting, timeout=WAIT)
            assert st is not None and st.runtime_status is S.TERMINATED
            assert st.get_output() == "enough"
            with pytest.raises(durable.OrchestrationStateError):
                client.purge_orchestration(pending)
            assert client.purge_orchestration(waiting) == 1
            assert client.purge_orchestration(broken) == 1
            assert client.get_orchestration_state(waiting) is None
            assert [s.instance_id for s in client.list_orchestrations()] == [pending]
    finally:
        worker.stop()


async def test_sync_client_inside_a_running_event_loop(store: durable.Store) -> None:
    BROKEN.add("b")
    worker = make_worker(store)
    worker.start_in_thread()
    try:
        client = durable.SyncClient(store)
        try:
            # Blocking calls from a coroutine, as in a notebook cell.
            iid = client.schedule_new_orchestration(greet)
            assert client.wait_for_orchestration_start(iid, timeout=WAIT) is not None
            client.raise_orchestration_event(iid, "go", data=42)
            done = client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert done is not None and done.get_output()[1] == 42

            broken = client.schedule_new_orchestration(pipeline, input=["a", "b"])
            st = client.wait_for_orchestration_completion(broken, timeout=WAIT)
            assert st is not None and st.runtime_status is S.FAILED
            BROKEN.clear()
            client.rewind_orchestration(broken)
            wait_until(lambda: client.get_orchestration_state(broken).runtime_status is S.COMPLETED)
            assert [s.instance_id for s in client.list_orchestrations(page_size=1)] == [
                iid,
                broken,
            ]
            assert client.purge_orchestration(iid) == 1
            await asyncio.sleep(0)  # this loop still runs
            # ...and an async Client on this loop sees the same store.
            async_client = durable.Client(store)
            assert await async_client.get_orchestration_state(iid) is None
            st = await async_client.get_orchestration_state(broken)
            assert st is not None and st.runtime_status is S.COMPLETED
        finally:
            client.close()
    finally:
        worker.stop()


def test_sync_client_context_manager_closes_cleanly(sync_store: durable.Store) -> None:
    before = sync_client_threads()
    with durable.SyncClient(sync_store) as client:
        iid = client.schedule_new_orchestration("pipeline", input=[])  # no worker runs
        st = client.get_orchestration_state(iid)
        assert st is not None and st.runtime_status is S.PENDING
        assert len(sync_client_threads() - before) == 1
    assert sync_client_threads() == before  # its thread ended
    with pytest.raises(RuntimeError, match="closed"):
        client.get_orchestration_state(iid)
    client.close()  # a second close is harmless

    # An error inside the block closes it too.
    with (
        pytest.raises(durable.OrchestrationAlreadyExistsError),
        durable.SyncClient(sync_store) as failing,
    ):
        failing.schedule_new_orchestration("pipeline", instance_id=iid)
    assert sync_client_threads() == before

    # The store is not the client's: it stays open for the next one, and a worker.
    worker = make_worker(sync_store)
    worker.start_in_thread()
    try:
        with durable.SyncClient(sync_store) as again:
            done = again.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert done is not None and done.runtime_status is S.COMPLETED
            assert done.get_output() == []
    finally:
        worker.stop()
    assert sync_client_threads() == before
