"""Critical sections in the pure core: what an entity admits while locked, and the
commands an orchestration's `lock_entities` gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable
from durable import task
from durable.core.commands import CallEntity, LockEntities, SignalEntity, UnlockEntities
from durable.core.engine import Execution
from durable.core.entity import EntityRecord, admit, lock_targets
from durable.core.events import (
    EntityLockGranted,
    EntityOperationCompleted,
    EntityRequest,
    EventRaised,
    ExecutionStarted,
    ExecutionTerminated,
    OrchestratorStarted,
)
from durable.core.functions import Registry
from durable.entities import EntityInstanceId

T0 = datetime(2030, 1, 1, tzinfo=UTC)
A = EntityInstanceId("acct", "a")
B = EntityInstanceId("acct", "b")


def op(name: str, holder: str | None = None) -> EntityRequest:
    return EntityRequest(timestamp=T0, request_id=name, operation=name, holder=holder)


def lock(holder: str) -> EntityRequest:
    return EntityRequest(
        timestamp=T0, request_id=f"lock-{holder}", operation="", lock_action="lock", holder=holder
    )


def unlock(holder: str) -> EntityRequest:
    return EntityRequest(
        timestamp=T0,
        request_id=f"unlock-{holder}",
        operation="",
        lock_action="unlock",
        holder=holder,
    )


def names(requests: list[EntityRequest]) -> list[str]:
    return [r.request_id for r in requests]


# -- what a locked entity runs ---------------------------------------------------------


def test_a_locked_entity_runs_its_holders_requests_and_keeps_the_others_in_order() -> None:
    acted, record = admit(EntityRecord(), [lock("s"), op("x"), op("in", "s"), op("y")])
    assert names(acted) == ["lock-s", "in"]
    assert record.locked_by == "s"
    assert names(list(record.waiting)) == ["x", "y"]

    acted, record = admit(record, [op("z"), unlock("s")])
    assert names(acted) == ["x", "y", "z"]  # the waiting ones first, in arrival order
    assert record == EntityRecord()


def test_a_lock_request_waits_behind_another_section() -> None:
    acted, record = admit(EntityRecord(), [lock("s"), lock("t"), op("x")])
    assert names(acted) == ["lock-s"]
    acted, record = admit(record, [unlock("s")])
    assert names(acted) == ["lock-t"]  # t holds it now; x waits on
    assert (record.locked_by, names(list(record.waiting))) == ("t", ["x"])


def test_a_section_released_before_its_lock_came_is_skipped() -> None:
    acted, record = admit(EntityRecord(), [unlock("s"), op("x")])
    assert names(acted) == ["x"]
    assert record.released == ("s",)
    acted, record = admit(record, [lock("s"), op("y")])
    assert names(acted) == ["y"]  # not locked by a section that ended
    assert record == EntityRecord()


REQUESTS = st.lists(
    st.tuples(st.sampled_from(["op", "lock", "unlock"]), st.sampled_from(["s", "t", None])),
    max_size=30,
)


@given(REQUESTS, st.integers(1, 5))
def test_every_request_is_acted_on_once_however_the_batches_fall(
    plan: list[tuple[str, str | None]], batch: int
) -> None:
    """Each section locks once and unlocks once: then nothing waits at the end, every
    operation ran exactly once, and operations of no section never ran while locked."""
    requests: list[EntityRequest] = []
    for n, (kind, holder) in enumerate(plan):
        if kind == "op":
            requests.append(op(f"op{n}", holder))
    for holder in ("s", "t"):  # each section: its lock, then (later) its unlock
        requests.insert(len(requests) // 3, lock(holder))
        requests.append(unlock(holder))
    record, acted = EntityRecord(), []
    for start in range(0, len(requests), batch):
        done, record = admit(record, requests[start : start + batch])
        acted += done
        if record.locked_by is not None:  # what waits is not the holder's
            assert all(r.holder != record.locked_by for r in record.waiting)
    assert record.waiting == () and record.locked_by is None
    ops = [r.request_id for r in requests if r.lock_action is None]
    assert sorted(names([r for r in acted if r.lock_action is None])) == sorted(ops)


def test_lock_targets_are_checked_sorted_and_without_repeats() -> None:
    assert lock_targets([B, A, B]) == ("@acct@a", "@acct@b")
    with pytest.raises(ValueError, match="at least one"):
        lock_targets([])
    with pytest.raises(TypeError):
        lock_targets(A)
    with pytest.raises(TypeError):
        lock_targets(["@acct@a"])


# -- what an orchestration decides -----------------------------------------------------


def section(ctx: task.OrchestrationContext, _: None) -> Any:
    with (yield ctx.lock_entities([B, A])):
        got = yield ctx.call_entity(A, "get")
        ctx.signal_entity(B, "add", got)
        ctx.signal_entity(EntityInstanceId("log", "x"), "note", got)
    yield ctx.wait_for_external_event("after")
    return got


def nested(ctx: task.OrchestrationContext, _: None) -> Any:
    with (yield ctx.lock_entities([A])):
        try:
            yield ctx.lock_entities([B])
        except durable.LockingRulesViolationError as e:
            return str(e)
    return "nested"


def held_forever(ctx: task.OrchestrationContext, _: None) -> Any:
    with (yield ctx.lock_entities([A])):
        yield ctx.wait_for_external_event("never")


def execution() -> Execution:
    registry = Registry()
    for fn in (section, nested, held_forever):
        registry.add_orchestrator(fn)
    return Execution(registry.orchestrator)


def start(name: str) -> list[Any]:
    return [
        OrchestratorStarted(timestamp=T0),
        ExecutionStarted(timestamp=T0, name=name, instance_id="o", execution_id="e"),
    ]


def test_a_section_locks_in_order_calls_with_its_holder_and_releases_at_its_end() -> None:
    x = execution()
    first = x.step(start("section"))
    [asked] = first.commands
    assert isinstance(asked, LockEntities)
    assert asked.entities == ("@acct@a", "@acct@b")
    assert asked.holder == "o/e/0"

    inside = x.step([OrchestratorStarted(timestamp=T0), EntityLockGranted(timestamp=T0, task_id=0)])
    [call] = inside.commands
    assert isinstance(call, CallEntity) and call.holder == "o/e/0"

    done = x.step(
        [
            OrchestratorStarted(timestamp=T0),
            EntityOperationCompleted(timestamp=T0, task_id=call.task_id, result="7"),
        ]
    )
    signal_b, signal_log, released = done.commands
    assert isinstance(signal_b, SignalEntity) and signal_b.holder == "o/e/0"
    assert isinstance(signal_log, SignalEntity) and signal_log.holder is None
    assert isinstance(released, UnlockEntities)
    assert (released.entities, released.holder) == (("@acct@a", "@acct@b"), "o/e/0")

    end = x.step([OrchestratorStarted(timestamp=T0), EventRaised(timestamp=T0, name="after")])
    assert [type(c).__name__ for c in end.commands] == ["CompleteOrchestration"]


def test_critical_sections_do_not_nest() -> None:
    x = execution()
    x.step(start("nested"))
    done = x.step([OrchestratorStarted(timestamp=T0), EntityLockGranted(timestamp=T0, task_id=0)])
    kinds = [type(c).__name__ for c in done.commands]
    assert kinds == ["UnlockEntities", "CompleteOrchestration"]
    assert "do not nest" in (done.output or "")


def test_a_terminated_orchestration_still_releases_its_locks() -> None:
    x = execution()
    x.step(start("held_forever"))
    x.step([OrchestratorStarted(timestamp=T0), EntityLockGranted(timestamp=T0, task_id=0)])
    end = x.step([OrchestratorStarted(timestamp=T0), ExecutionTerminated(timestamp=T0)])
    assert [type(c).__name__ for c in end.commands] == ["UnlockEntities", "CompleteOrchestration"]


def test_an_orchestration_that_ends_before_its_grant_releases_what_it_asked_for() -> None:
    x = execution()
    x.step(start("held_forever"))
    end = x.step([OrchestratorStarted(timestamp=T0), ExecutionTerminated(timestamp=T0)])
    [released, _] = end.commands
    assert isinstance(released, UnlockEntities) and released.entities == ("@acct@a",)


def test_replay_of_a_section_decides_the_same() -> None:
    x = execution()
    history: list[Any] = []
    batches = [
        start("section"),
        [OrchestratorStarted(timestamp=T0), EntityLockGranted(timestamp=T0, task_id=0)],
        [
            OrchestratorStarted(timestamp=T0),
            EntityOperationCompleted(timestamp=T0, task_id=1, result="7"),
        ],
    ]
    for batch in batches:
        history += x.step(batch).events
    again = execution()
    again.replay(history)
    final = [OrchestratorStarted(timestamp=T0), EventRaised(timestamp=T0, name="after")]
    assert again.step(final) == x.step(final)
