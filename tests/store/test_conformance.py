"""Store conformance: every `Store` behaves the same, as the worker and client rely on.

Each test runs on every store (see conftest.py) and uses the `Store` protocol only. Time
is a fake clock: leases expire, timers fire and delayed starts come due when a test moves
it, never by sleeping.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    BOOM,
    LEASE,
    PAST_LEASE,
    FakeClock,
    OpenStore,
    S,
    claim,
    claim_one,
    commit,
    decision,
    new_instance,
    raised,
    start,
    started,
    to,
)

from durable.core.commands import ScheduleActivity
from durable.core.errors import (
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    OrchestrationNotFoundError,
    OrchestrationStateError,
)
from durable.core.events import (
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionRewound,
    ExecutionTerminated,
    OrchestratorStarted,
    ParentInstance,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from durable.store.base import (
    ActivityResult,
    ActivityTake,
    ActivityWorkItem,
    InstanceQuery,
    NewInstance,
    Store,
)


def _value(status: S) -> str:
    return str(status.value)


# -- claiming and leases ---------------------------------------------------------------


async def test_create_then_claim_returns_the_start(store: Store, clock: FakeClock) -> None:
    instance = new_instance("a", execution_id="e1", name="greet", input='"hi"')
    await store.create_instance(instance)

    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.PENDING
    assert (state.name, state.execution_id, state.serialized_input) == ("greet", "e1", '"hi"')
    assert state.created_at == clock() and state.last_updated_at == clock()

    items = await store.claim_orchestrations("w1", 10, LEASE)
    assert len(items) == 1
    item = items[0]
    assert item.instance_id == "a"
    assert item.execution_id == "e1"
    assert item.name == "greet"
    assert item.history_length == 0
    assert item.messages == (instance.start,)
    assert len(item.message_ids) == 1
    assert item.lease_owner == "w1"


async def test_held_lease_blocks_other_owners_until_it_expires(
    store: Store, clock: FakeClock
) -> None:
    await store.create_instance(new_instance("a"))
    first = await claim_one(store, "a", owner="w1")

    assert await store.claim_orchestrations("w2", 10, LEASE) == []
    # A message arriving while the lease is held does not release it either.
    await store.send(to("a", raised("go")))
    assert await store.claim_orchestrations("w2", 10, LEASE) == []
    clock.advance(LEASE - 1)
    assert await store.claim_orchestrations("w2", 10, LEASE) == []

    clock.advance(PAST_LEASE - (LEASE - 1))
    second = await claim_one(store, "a", owner="w2")
    assert second.history_length == 0
    assert second.messages == (*first.messages, raised("go"))
    assert await store.claim_orchestrations("w1", 10, LEASE) == []


async def test_claim_respects_the_limit(store: Store) -> None:
    for iid in ("a", "b", "c"):
        await store.create_instance(new_instance(iid))
    first = await claim(store, "w1", limit=2)
    second = await claim(store, "w2", limit=2)
    assert len(first) == 2 and len(second) == 1
    assert set(first) | set(second) == {"a", "b", "c"}
    assert await claim(store, "w3") == {}


async def test_renewed_lease_does_not_expire(store: Store, clock: FakeClock) -> None:
    await store.create_instance(new_instance("a"))
    item = await claim_one(store, "a", owner="w1")
    clock.advance(LEASE - 5)
    await store.renew_leases("w1", ["a"], [], LEASE)
    clock.advance(LEASE - 5)  # past the first lease, within the renewed one
    assert await store.claim_orchestrations("w2", 10, LEASE) == []
    # Only the owner can renew: w2's renewal leaves w1's lease to run out.
    await store.renew_leases("w2", ["a"], [], 10 * LEASE)
    clock.advance(PAST_LEASE - (LEASE - 5))
    taken = await claim_one(store, "a", owner="w3")
    assert taken.messages == item.messages


async def test_messages_that_arrive_during_a_claim_wait_for_the_next(
    store: Store, clock: FakeClock
) -> None:
    await store.create_instance(new_instance("a"))
    item = await claim_one(store, "a")
    await store.send(to("a", raised("during")))
    await store.send(to("a", raised("past"), visible_at=clock.at(-10)))  # visible already
    c = await commit(store, item)
    assert await store.get_history("a") == list(c.events)
    after = await claim_one(store, "a")
    assert after.messages == (raised("during"), raised("past"))
    assert after.history_length == len(c.events)
    assert await store.commit_orchestrations([]) == []


# -- fencing ---------------------------------------------------------------------------


async def test_commit_of_a_lost_lease_is_rejected_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await start(store, "other")
    await store.create_instance(new_instance("a"))
    stale = await claim_one(store, "a", owner="A")
    clock.advance(PAST_LEASE)
    fresh = await claim_one(store, "a", owner="B")

    child = new_instance(
        "kid", parent=ParentInstance(instance_id="a", execution_id="e1", task_id=3)
    )
    everything = decision(
        stale,
        status=S.COMPLETED,
        output='"A"',
        custom_status='"A was here"',
        activities=(ScheduleActivity(task_id=1, name="act"),),
        messages=(
            to("other", raised("from A")),
            to("a", TimerFired(timestamp=clock(), task_id=2, fire_at=clock()), execution_id="e1"),
        ),
        children=(child,),
    )
    outcomes = await store.commit_orchestrations([everything])
    assert len(outcomes) == 1 and isinstance(outcomes[0], LeaseLostError)

    assert await store.get_history("a") == []
    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.PENDING
    assert state.serialized_output is None and state.serialized_custom_status is None
    assert await store.get_state("kid") is None
    assert await store.claim_activities("w", 10, LEASE) == []
    assert await claim(store, "w") == {}  # "other" got nothing; "a" is B's

    b = await commit(store, fresh, output=None)
    assert await store.get_history("a") == list(b.events)
    # A's decision stays rejected after B's commit too.
    outcomes = await store.commit_orchestrations([everything])
    assert isinstance(outcomes[0], LeaseLostError)
    assert await store.get_history("a") == list(b.events)


async def test_commit_after_the_own_lease_expired_is_rejected(
    store: Store, clock: FakeClock
) -> None:
    await store.create_instance(new_instance("a"))
    item = await claim_one(store, "a", owner="A")
    clock.advance(PAST_LEASE)  # nobody else claimed it, but the lease is over
    outcomes = await store.commit_orchestrations([decision(item)])
    assert isinstance(outcomes[0], LeaseLostError)
    assert await store.get_history("a") == []
    again = await claim_one(store, "a", owner="B")
    assert again.messages == item.messages


async def test_commit_with_a_stale_claim_is_rejected(store: Store) -> None:
    history = await start(store, "a")
    await store.send(to("a", raised("go")))
    item = await claim_one(store, "a")
    assert item.history_length == len(history)

    for stale in (
        msgspec.structs.replace(item, history_length=item.history_length - 1),
        msgspec.structs.replace(item, history_length=item.history_length + 1),
        msgspec.structs.replace(item, execution_id="e0"),
        msgspec.structs.replace(item, lease_owner="intruder"),
    ):
        outcomes = await store.commit_orchestrations([decision(stale, status=S.COMPLETED)])
        assert isinstance(outcomes[0], LeaseLostError), stale
        assert await store.get_history("a") == history

    # The rejections changed nothing, the lease included: the real claim still commits.
    c = await commit(store, item)
    assert await store.get_history("a") == [*history, *c.events]
    state = await store.get_state("a")
    assert state is not None and state.runtime_status is S.RUNNING


async def test_rejected_commit_does_not_affect_the_others_in_its_group(
    store: Store, clock: FakeClock
) -> None:
    await store.create_instance(new_instance("b"))
    stale_b = await claim_one(store, "b", owner="w1")
    clock.advance(PAST_LEASE)
    taken_b = await claim_one(store, "b", owner="w2")
    await store.create_instance(new_instance("a"))
    await store.create_instance(new_instance("c"))
    items = await claim(store, "w1")
    assert set(items) == {"a", "c"}

    group = [
        decision(items["a"], activities=(ScheduleActivity(task_id=1, name="for a"),)),
        decision(stale_b, activities=(ScheduleActivity(task_id=1, name="for b"),)),
        decision(items["c"], status=S.COMPLETED, output='"c"'),
    ]
    outcomes = await store.commit_orchestrations(group)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], LeaseLostError)

    assert await store.get_history("a") == list(group[0].events)
    assert await store.get_history("b") == []
    assert await store.get_history("c") == list(group[2].events)
    state_c = await store.get_state("c")
    assert state_c is not None
    assert (state_c.runtime_status, state_c.serialized_output) == (S.COMPLETED, '"c"')
    activities = await store.claim_activities("w", 10, LEASE)
    assert [(a.instance_id, a.name) for a in activities] == [("a", "for a")]
    await commit(store, taken_b)  # b's rightful holder is unaffected


# -- one commit applies everything -----------------------------------------------------


async def test_one_commit_applies_everything(store: Store, clock: FakeClock) -> None:
    await start(store, "other")
    await store.create_instance(new_instance("p", execution_id="pe"))
    item = await claim_one(store, "p")
    now = clock()
    fire_at = clock.at(60)
    kid_start = started(
        "kid",
        execution_id="ke",
        name="child",
        input='"k"',
        parent=ParentInstance(instance_id="p", execution_id="pe", task_id=4),
        at=now,
    )
    events = (
        OrchestratorStarted(timestamp=now),
        *item.messages,
        TaskScheduled(timestamp=now, task_id=1, name="fetch", input='"x"'),
        TimerCreated(timestamp=now, task_id=2, fire_at=fire_at),
        EventSent(timestamp=now, task_id=3, instance_id="other", name="hello", input="1"),
        ChildOrchestrationCreated(timestamp=now, task_id=4, name="child", instance_id="kid"),
        TaskScheduled(timestamp=now, task_id=5, name="store", attempt=2),
    )
    clock.advance(1)
    await commit(
        store,
        item,
        events=events,
        status=S.RUNNING,
        custom_status='"busy"',
        activities=(
            ScheduleActivity(task_id=1, name="fetch", input='"x"'),
            ScheduleActivity(task_id=5, name="store", attempt=2),
        ),
        messages=(
            to(
                "p",
                TimerFired(timestamp=fire_at, task_id=2, fire_at=fire_at),
                execution_id="pe",
                visible_at=fire_at,
            ),
            to("other", raised("hello", "1", at=now)),
            to("other", raised("stale", at=now), execution_id="not current"),  # dropped
            to("ghost", raised("nobody home", at=now)),  # no such instance: dropped
        ),
        children=(NewInstance(start=kid_start),),
    )

    assert await store.get_history("p") == list(events)
    assert await store.load_history("p", "pe") == list(events)
    state = await store.get_state("p")
    assert state is not None
    assert state.runtime_status is S.RUNNING
    assert state.serialized_custom_status == '"busy"'
    assert state.last_updated_at == clock()
    assert state.created_at == clock.at(-1)

    activities = sorted(await store.claim_activities("aw", 10, LEASE), key=lambda a: a.task_id)
    assert [
        (a.instance_id, a.execution_id, a.task_id, a.name, a.input, a.attempt) for a in activities
    ] == [
        ("p", "pe", 1, "fetch", '"x"', 1),
        ("p", "pe", 5, "store", None, 2),
    ]
    assert all(a.lease_owner == "aw" for a in activities)
    assert len({a.id for a in activities}) == 2

    kid = await store.get_state("kid")
    assert kid is not None
    assert (kid.runtime_status, kid.parent_instance_id, kid.execution_id) == (S.PENDING, "p", "ke")
    items = await claim(store)
    assert set(items) == {"other", "kid"}  # p's timer is not due
    assert items["other"].messages == (raised("hello", "1", at=now),)
    assert items["kid"].messages == (kid_start,)
    outcomes = await store.commit_orchestrations([decision(i) for i in items.values()])
    assert outcomes == [None, None]

    clock.advance(59)
    fired = await claim_one(store, "p")
    assert fired.messages == (TimerFired(timestamp=fire_at, task_id=2, fire_at=fire_at),)
    assert fired.history_length == len(events)
    assert await store.get_state("ghost") is None


async def test_commit_sets_output_and_failure(store: Store, clock: FakeClock) -> None:
    await store.create_instance(new_instance("ok"))
    await store.create_instance(new_instance("bad"))
    items = await claim(store)
    clock.advance(5)
    done = ExecutionCompleted(timestamp=clock(), status="COMPLETED", result='"yes"')
    fail = ExecutionCompleted(timestamp=clock(), status="FAILED", failure=BOOM)
    outcomes = await store.commit_orchestrations(
        [
            decision(
                items["ok"],
                events=(*items["ok"].messages, done),
                status=S.COMPLETED,
                output='"yes"',
                custom_status='"fine"',
            ),
            decision(
                items["bad"], events=(*items["bad"].messages, fail), status=S.FAILED, failure=BOOM
            ),
        ]
    )
    assert outcomes == [None, None]

    ok, bad = await store.get_state("ok"), await store.get_state("bad")
    assert ok is not None and bad is not None
    assert ok.runtime_status is S.COMPLETED
    assert (ok.serialized_output, ok.serialized_custom_status) == ('"yes"', '"fine"')
    assert ok.failure_details is None
    assert bad.runtime_status is S.FAILED
    assert bad.failure_details == BOOM
    assert bad.serialized_output is None
    assert ok.last_updated_at == bad.last_updated_at == clock()
    assert (await store.get_history("ok"))[-1] == done
    assert (await store.get_history("bad"))[-1] == fail


async def test_timer_is_invisible_until_due(store: Store, clock: FakeClock) -> None:
    await start(store, "a")
    await store.send(to("a", raised("go")))
    item = await claim_one(store, "a")
    fire_at = clock.at(30)
    timer = TimerFired(timestamp=fire_at, task_id=1, fire_at=fire_at)
    await commit(store, item, messages=(to("a", timer, execution_id="e1", visible_at=fire_at),))

    clock.advance(29)
    assert await claim(store) == {}
    clock.advance(1)  # due exactly now: visible
    fired = await claim_one(store, "a")
    assert fired.messages == (timer,)


@pytest.mark.parametrize("status", [S.COMPLETED, S.TERMINATED], ids=_value)
async def test_finishing_drops_pending_messages(store: Store, clock: FakeClock, status: S) -> None:
    await start(store, "a")
    await store.send(to("a", raised("go")))
    item = await claim_one(store, "a")
    await store.send(to("a", raised("too late")))
    fire_at = clock.at(30)
    timer = TimerFired(timestamp=fire_at, task_id=1, fire_at=fire_at)
    await commit(store, item, status=status, messages=(to("a", timer, visible_at=fire_at),))
    clock.advance(30)
    assert await claim(store) == {}
    state = await store.get_state("a")
    assert state is not None and state.runtime_status is status


async def test_child_with_an_unfinished_id_fails_the_parent(store: Store) -> None:
    kid_history = await start(store, "kid", execution_id="k1", input='"original"')
    await store.create_instance(new_instance("p", execution_id="pe"))
    item = await claim_one(store, "p")
    parent = ParentInstance(instance_id="p", execution_id="pe", task_id=7)
    child = new_instance("kid", execution_id="k2", input='"new"', parent=parent)
    await commit(store, item, children=(child,))

    kid = await store.get_state("kid")
    assert kid is not None
    assert (kid.execution_id, kid.serialized_input, kid.runtime_status) == (
        "k1",
        '"original"',
        S.RUNNING,
    )
    assert kid.parent_instance_id is None
    assert await store.get_history("kid") == kid_history

    report = await claim_one(store, "p")
    assert len(report.messages) == 1
    failed = report.messages[0]
    assert isinstance(failed, ChildOrchestrationFailed)
    assert failed.task_id == 7
    assert failed.failure.is_caused_by(OrchestrationAlreadyExistsError)


async def test_child_with_a_finished_id_replaces_it(store: Store) -> None:
    await start(store, "kid", execution_id="k1", status=S.COMPLETED, output='"old"')
    await store.create_instance(new_instance("p", execution_id="pe"))
    item = await claim_one(store, "p")
    parent = ParentInstance(instance_id="p", execution_id="pe", task_id=7)
    child = new_instance("kid", execution_id="k2", input='"new"', parent=parent)
    await commit(store, item, children=(child,))

    kid = await store.get_state("kid")
    assert kid is not None
    assert (kid.execution_id, kid.runtime_status, kid.parent_instance_id) == ("k2", S.PENDING, "p")
    assert kid.serialized_output is None
    assert await store.get_history("kid") == []
    fresh = await claim_one(store, "kid")
    assert fresh.messages == (child.start,)
    assert fresh.history_length == 0


async def test_continue_as_new(store: Store, clock: FakeClock) -> None:
    history = await start(store, "a", execution_id="e1", input='"first"')
    await store.send(to("a", raised("consumed")))
    item = await claim_one(store, "a")
    assert item.history_length == len(history)
    # While the decision is being made: an external event (kept for the next execution),
    # and a result of this execution's work (dropped with it).
    later = raised("meanwhile", at=clock.at(1))
    await store.send(to("a", later))
    await store.send(to("a", TaskCompleted(timestamp=clock(), task_id=1), execution_id="e1"))

    fire_at = clock.at(100)
    carried = raised("carried", '"c"')
    nxt = started("a", execution_id="e2", input='"second"', at=clock())
    await commit(
        store,
        item,
        events=(
            OrchestratorStarted(timestamp=clock()),
            *item.messages,
            ContinuedAsNew(timestamp=clock(), input='"second"', carried_events=(carried,)),
        ),
        status=S.CONTINUED_AS_NEW,
        activities=(ScheduleActivity(task_id=9, name="old work"),),
        messages=(
            to(
                "a",
                TimerFired(timestamp=fire_at, task_id=8, fire_at=fire_at),
                execution_id="e1",
                visible_at=fire_at,
            ),
        ),
        new_execution=nxt,
        carried=(to("a", carried),),
    )

    assert await store.get_history("a") == []
    assert await store.load_history("a", "e2") == []
    assert await store.load_history("a", "e1") == []
    state = await store.get_state("a")
    assert state is not None
    assert state.execution_id == "e2"
    assert state.serialized_input == '"second"'
    assert state.runtime_status is S.PENDING

    fresh = await claim_one(store, "a")
    assert fresh.execution_id == "e2"
    assert fresh.history_length == 0
    assert fresh.messages == (nxt, carried, later)
    await commit(store, fresh)

    # The first execution's timer and activity result never reach the second execution.
    [old] = await store.claim_activities("aw", 10, LEASE)
    assert (old.execution_id, old.task_id) == ("e1", 9)
    await store.complete_activities(
        [ActivityResult(item=old, event=TaskCompleted(timestamp=clock(), task_id=9))]
    )
    clock.advance(100)
    assert await claim(store) == {}


# -- delayed starts --------------------------------------------------------------------


async def test_delayed_start_waits_for_its_time(store: Store, clock: FakeClock) -> None:
    due = clock.at(60)
    instance = new_instance("a", visible_at=due)
    await store.create_instance(instance)
    state = await store.get_state("a")
    assert state is not None
    assert (state.runtime_status, state.scheduled_start_at) == (S.PENDING, due)
    assert await claim(store) == {}

    await store.send(to("a", raised("early")))  # events wait for the start
    assert await claim(store) == {}
    clock.advance(59)
    assert await claim(store) == {}

    clock.advance(1)
    item = await claim_one(store, "a")
    assert item.messages == (instance.start, raised("early"))
    assert item.history_length == 0


async def test_terminate_claims_a_delayed_start_early(store: Store, clock: FakeClock) -> None:
    await store.create_instance(new_instance("a", visible_at=clock.at(60)))
    await store.send(to("a", raised("early")))
    assert await claim(store) == {}
    stop = ExecutionTerminated(timestamp=clock(), output='"stop"')
    await store.send(to("a", stop))

    item = await claim_one(store, "a")
    assert item.messages == (raised("early"), stop)
    assert item.history_length == 0
    await commit(store, item, status=S.TERMINATED, output='"stop"')

    clock.advance(60)  # the start comes due, but the instance is over
    assert await claim(store) == {}
    state = await store.get_state("a")
    assert state is not None and state.runtime_status is S.TERMINATED


# -- send ------------------------------------------------------------------------------


async def test_send_to_an_unknown_instance_raises(store: Store) -> None:
    with pytest.raises(OrchestrationNotFoundError):
        await store.send(to("nobody", raised("x")))
    assert await store.get_state("nobody") is None


async def test_message_for_another_execution_is_dropped(store: Store, clock: FakeClock) -> None:
    await start(store, "a", execution_id="e1")
    await store.send(to("a", TaskCompleted(timestamp=clock(), task_id=1), execution_id="e0"))
    await store.send(to("a", raised("stale"), execution_id="e0"))
    assert await claim(store) == {}
    result = TaskCompleted(timestamp=clock(), task_id=1, result='"r"')
    await store.send(to("a", result, execution_id="e1"))
    item = await claim_one(store, "a")
    assert item.messages == (result,)


@pytest.mark.parametrize("status", [S.COMPLETED, S.TERMINATED], ids=_value)
async def test_messages_to_a_completed_or_terminated_instance_are_dropped(
    store: Store, clock: FakeClock, status: S
) -> None:
    history = await start(store, "a", status=status, output='"done"')
    await store.send(to("a", raised("late")))
    await store.send(to("a", ExecutionTerminated(timestamp=clock())))
    await store.send(to("a", ExecutionRewound(timestamp=clock())))
    await store.send(to("a", raised("later"), visible_at=clock.at(5)))
    clock.advance(10)
    assert await claim(store) == {}
    state = await store.get_state("a")
    assert state is not None
    assert (state.runtime_status, state.serialized_output) == (status, '"done"')
    assert await store.get_history("a") == history


async def test_failed_instance_keeps_messages_until_rewound(store: Store, clock: FakeClock) -> None:
    history = await start(store, "a", status=S.FAILED, failure=BOOM)
    first, second = raised("one"), raised("two")
    result = TaskCompleted(timestamp=clock(), task_id=1)
    await store.send(to("a", first))
    await store.send(to("a", result, execution_id="e1"))
    await store.send(to("a", second))
    await store.send(to("a", raised("stale"), execution_id="e0"))  # dropped, as ever
    clock.advance(PAST_LEASE)
    assert await claim(store) == {}
    await store.send(to("a", ExecutionRewound(timestamp=clock(), reason="bug"), execution_id="e0"))
    assert await claim(store) == {}  # a rewind for another execution is dropped

    rewind = ExecutionRewound(timestamp=clock(), reason="fixed")
    await store.send(to("a", rewind))
    item = await claim_one(store, "a")
    assert item.messages == (first, result, second, rewind)
    assert item.history_length == len(history)
    assert item.execution_id == "e1"
    await commit(store, item, status=S.RUNNING)
    state = await store.get_state("a")
    assert state is not None
    assert (state.runtime_status, state.failure_details) == (S.RUNNING, None)


@pytest.mark.parametrize("status", [S.PENDING, S.RUNNING, S.COMPLETED], ids=_value)
async def test_rewind_of_an_instance_that_has_not_failed_is_dropped(
    store: Store, clock: FakeClock, status: S
) -> None:
    if status is S.PENDING:
        await store.create_instance(new_instance("a"))
    else:
        await start(store, "a", status=status)
    await store.send(to("a", ExecutionRewound(timestamp=clock())))
    items = await claim(store)
    if status is S.PENDING:
        assert items["a"].messages == (started("a"),)
    else:
        assert items == {}


# -- create ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.PENDING, S.RUNNING, S.SUSPENDED], ids=_value)
async def test_create_over_an_unfinished_instance_raises_and_changes_nothing(
    store: Store, clock: FakeClock, status: S
) -> None:
    if status is S.PENDING:
        await store.create_instance(new_instance("a", input='"one"'))
        history = []
    else:
        history = await start(store, "a", input='"one"', status=status)
    before = await store.get_state("a")
    clock.advance(1)
    with pytest.raises(OrchestrationAlreadyExistsError):
        await store.create_instance(new_instance("a", execution_id="e2", input='"two"'))

    assert await store.get_state("a") == before
    assert await store.get_history("a") == history
    items = await claim(store)
    if status is S.PENDING:
        assert items["a"].messages == (started("a", input='"one"'),)
    else:
        assert items == {}


@pytest.mark.parametrize("status", [S.COMPLETED, S.FAILED, S.TERMINATED], ids=_value)
async def test_create_over_a_finished_instance_replaces_it(
    store: Store, clock: FakeClock, status: S
) -> None:
    failure = BOOM if status is S.FAILED else None
    await start(store, "a", status=status, output='"old"', custom_status='"c"', failure=failure)
    await store.send(to("a", raised("kept if failed")))
    clock.advance(10)
    fresh = new_instance("a", execution_id="e2", name="other", input='"new"')
    await store.create_instance(fresh)

    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.PENDING
    assert (state.name, state.execution_id, state.serialized_input) == ("other", "e2", '"new"')
    assert state.serialized_output is None and state.serialized_custom_status is None
    assert state.failure_details is None
    assert state.created_at == clock()
    assert await store.get_history("a") == []
    item = await claim_one(store, "a")
    assert item.messages == (fresh.start,)
    assert item.history_length == 0
    assert item.execution_id == "e2"


async def test_create_over_a_finished_instance_drops_its_pending_activities(
    store: Store,
) -> None:
    # Terminated with an activity still queued; the replacement must not inherit it.
    await start(
        store, "a", status=S.TERMINATED, activities=(ScheduleActivity(task_id=1, name="old"),)
    )
    await store.create_instance(new_instance("a", execution_id="e2"))
    assert await store.claim_activities("w", 10, LEASE) == []


# -- activities ------------------------------------------------------------------------


async def _schedule(store: Store, iid: str, *task_ids: int) -> None:
    """Start `iid` with a first decision that schedules activities `task_ids`."""
    await start(
        store,
        iid,
        activities=tuple(
            ScheduleActivity(task_id=t, name=f"act{t}", input=str(t)) for t in task_ids
        ),
    )


async def test_claim_activities_respects_the_limit_and_leases(
    store: Store, clock: FakeClock
) -> None:
    await _schedule(store, "a", 1, 2, 3)
    first = await store.claim_activities("w1", 2, LEASE)
    second = await store.claim_activities("w2", 2, LEASE)
    assert len(first) == 2 and len(second) == 1
    assert {a.task_id for a in first + second} == {1, 2, 3}
    assert all(a.lease_owner == "w1" for a in first)
    assert second[0].lease_owner == "w2"
    assert await store.claim_activities("w3", 10, LEASE) == []
    clock.advance(LEASE - 1)
    assert await store.claim_activities("w3", 10, LEASE) == []

    clock.advance(PAST_LEASE - (LEASE - 1))
    again = await store.claim_activities("w3", 10, LEASE)
    assert sorted(a.task_id for a in again) == [1, 2, 3]
    assert all(a.lease_owner == "w3" for a in again)
    assert {a.id: a.name for a in again} == {a.id: a.name for a in first + second}


async def test_renewed_activity_lease_does_not_expire(store: Store, clock: FakeClock) -> None:
    await _schedule(store, "a", 1, 2)
    one, two = sorted(await store.claim_activities("w1", 10, LEASE), key=lambda a: a.task_id)
    clock.advance(LEASE - 5)
    await store.renew_leases("w1", [], [one.id], LEASE)
    await store.renew_leases("w2", [], [two.id], LEASE)  # not w2's to renew
    clock.advance(PAST_LEASE - (LEASE - 5))
    expired = await store.claim_activities("w3", 10, LEASE)
    assert [a.id for a in expired] == [two.id]


async def test_completion_delivers_the_result_once(store: Store, clock: FakeClock) -> None:
    await _schedule(store, "a", 1, 2)
    one, two = sorted(await store.claim_activities("A", 10, LEASE), key=lambda a: a.task_id)
    done = TaskCompleted(timestamp=clock(), task_id=1, result='"one"')
    await store.complete_activities([ActivityResult(item=one, event=done)])
    item = await claim_one(store, "a")
    assert item.messages == (done,)
    await commit(store, item)

    # Completed twice (a retry, or a worker that lost its lease): the second is dropped.
    again = TaskCompleted(timestamp=clock(), task_id=1, result='"again"')
    await store.complete_activities([ActivityResult(item=one, event=again)])
    assert await claim(store) == {}

    clock.advance(PAST_LEASE)
    [taken] = await store.claim_activities("B", 10, LEASE)
    assert (taken.id, taken.lease_owner) == (two.id, "B")
    failed = TaskFailed(timestamp=clock(), task_id=2, failure=BOOM)
    await store.complete_activities([ActivityResult(item=taken, event=failed)])
    late = TaskCompleted(timestamp=clock(), task_id=2, result='"A, late"')
    await store.complete_activities([ActivityResult(item=two, event=late)])
    item = await claim_one(store, "a")
    assert item.messages == (failed,)
    clock.advance(PAST_LEASE)
    assert await store.claim_activities("C", 10, LEASE) == []


async def test_two_results_for_one_item_in_one_batch_deliver_the_first(
    store: Store, clock: FakeClock
) -> None:
    # A worker that retries a failed flush may hand the same result over twice at once.
    await _schedule(store, "a", 1)
    [one] = await store.claim_activities("A", 10, LEASE)
    first = TaskCompleted(timestamp=clock(), task_id=1, result='"first"')
    second = TaskCompleted(timestamp=clock(), task_id=1, result='"second"')
    await store.complete_activities(
        [ActivityResult(item=one, event=first), ActivityResult(item=one, event=second)]
    )
    item = await claim_one(store, "a")
    assert item.messages == (first,)


async def test_abandoned_activity_is_claimable_at_once(store: Store) -> None:
    await _schedule(store, "a", 1)
    [item] = await store.claim_activities("w1", 10, LEASE)
    await store.abandon_activities([item])
    [again] = await store.claim_activities("w2", 10, LEASE)
    assert (again.id, again.task_id, again.attempt, again.lease_owner) == (
        item.id,
        1,
        item.attempt,
        "w2",
    )
    # w1's stale item cannot release w2's lease.
    await store.abandon_activities([item])
    assert await store.claim_activities("w3", 10, LEASE) == []


@pytest.mark.parametrize("when", ["same commit", "later commit"])
async def test_activities_with_the_same_task_are_not_duplicated(store: Store, when: str) -> None:
    act = ScheduleActivity(task_id=1, name="once", input='"x"')
    if when == "same commit":
        await start(store, "a", activities=(act, act))
    else:
        await start(store, "a", activities=(act,))
        await store.send(to("a", raised("go")))
        item = await claim_one(store, "a")
        await commit(store, item, activities=(act,))
    claimed = await store.claim_activities("w", 10, LEASE)
    assert [(a.instance_id, a.execution_id, a.task_id) for a in claimed] == [("a", "e1", 1)]


# -- abandoning a claim ----------------------------------------------------------------


async def test_abandoned_claim_waits_for_retry_after(store: Store, clock: FakeClock) -> None:
    history = await start(store, "a")
    await store.send(to("a", raised("go")))
    item = await claim_one(store, "a")
    clock.advance(2)
    await store.abandon_orchestration(item, 30, BOOM)

    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.RUNNING
    assert state.failure_details == BOOM
    assert await store.get_history("a") == history
    assert await claim(store, "w2") == {}
    clock.advance(29)
    assert await claim(store, "w2") == {}
    clock.advance(1)
    again = await claim_one(store, "a", owner="w2")
    assert again.messages == item.messages
    assert again.history_length == item.history_length

    # The next successful commit replaces the error.
    await commit(store, again)
    state = await store.get_state("a")
    assert state is not None and state.failure_details is None


async def test_a_message_ends_the_backoff_of_an_abandoned_claim(
    store: Store, clock: FakeClock
) -> None:
    await start(store, "a")
    await store.send(to("a", raised("one")))
    item = await claim_one(store, "a")
    await store.abandon_orchestration(item, 30, BOOM)
    clock.advance(1)
    assert await claim(store, "w2") == {}, "retried before retry_after"
    await store.send(to("a", raised("two")))  # news may be what unblocks it: try now
    again = await claim_one(store, "a", owner="w2")
    assert again.messages == (raised("one"), raised("two"))


async def test_the_owner_of_a_lease_may_claim_its_instance_again(
    store: Store, clock: FakeClock
) -> None:
    # A worker whose commit failed (a busy store) keeps its lease and takes the claim up
    # again at once, instead of leaving the instance stalled until the lease runs out.
    await start(store, "a")
    await store.send(to("a", raised("one")))
    first = await claim_one(store, "a", owner="w1")
    assert await claim(store, "w2") == {}
    again = await claim_one(store, "a", owner="w1")
    assert again.messages == first.messages
    await commit(store, again)


async def test_abandon_without_delay_and_by_a_stale_owner(store: Store, clock: FakeClock) -> None:
    await store.create_instance(new_instance("a"))
    item = await claim_one(store, "a", owner="w1")
    await store.abandon_orchestration(item, 0, None)
    state = await store.get_state("a")
    assert state is not None and state.failure_details is None
    stale = await claim_one(store, "a", owner="w1")
    clock.advance(PAST_LEASE)
    held = await claim_one(store, "a", owner="w2")
    await store.abandon_orchestration(stale, 0, BOOM)  # w1's lease is gone: nothing happens
    assert await claim(store, "w3") == {}
    state = await store.get_state("a")
    assert state is not None and state.failure_details is None
    await commit(store, held)


# -- reading ---------------------------------------------------------------------------


async def test_unknown_instance_reads_empty(store: Store) -> None:
    assert await store.get_state("nobody") is None
    assert await store.get_history("nobody") == []
    assert await store.load_history("nobody", "e1") == []


async def test_load_history_only_for_the_current_execution(store: Store) -> None:
    history = await start(store, "a", execution_id="e1")
    assert await store.get_history("a") == history
    assert await store.load_history("a", "e1") == history
    assert await store.load_history("a", "e0") == []


async def _finish(store: Store, iid: str, status: S, name: str = "orch") -> None:
    if status is S.PENDING:
        await store.create_instance(new_instance(iid, name=name))
    else:
        await start(store, iid, status=status, name=name)


async def test_list_instances_filters(store: Store, clock: FakeClock) -> None:
    t0 = clock()
    await _finish(store, "a", S.COMPLETED, name="x")
    clock.advance(10)
    await _finish(store, "b", S.RUNNING, name="y")
    clock.advance(10)
    await _finish(store, "c", S.FAILED, name="x")
    clock.advance(10)
    await _finish(store, "d", S.PENDING, name="x")

    async def ids(**query: Any) -> list[str]:
        page = await store.list_instances(InstanceQuery(**query))
        assert page.next_token is None
        return [s.instance_id for s in page.instances]

    assert await ids() == ["a", "b", "c", "d"]
    assert await ids(statuses=(S.COMPLETED, S.FAILED)) == ["a", "c"]
    assert await ids(statuses=(S.TERMINATED,)) == []
    assert await ids(name="x") == ["a", "c", "d"]
    assert await ids(name="nope") == []
    assert await ids(created_from=t0 + timedelta(seconds=10)) == ["b", "c", "d"]
    assert await ids(created_to=t0 + timedelta(seconds=20)) == ["a", "b", "c"]
    assert await ids(
        created_from=t0 + timedelta(seconds=5), created_to=t0 + timedelta(seconds=25)
    ) == ["b", "c"]
    assert await ids(
        name="x", statuses=(S.PENDING, S.FAILED), created_to=t0 + timedelta(seconds=20)
    ) == ["c"]

    page = await store.list_instances(InstanceQuery(name="y"))
    [b] = page.instances
    assert (b.instance_id, b.name, b.runtime_status, b.created_at) == (
        "b",
        "y",
        S.RUNNING,
        t0 + timedelta(seconds=10),
    )
    assert b == await store.get_state("b")


@pytest.mark.parametrize("count", [0, 1, 6, 7])
async def test_list_instances_pages(store: Store, clock: FakeClock, count: int) -> None:
    created = [f"i{n}" for n in range(count)]
    for iid in created:
        await store.create_instance(new_instance(iid))
        clock.advance(1)

    seen: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        page = await store.list_instances(InstanceQuery(limit=3, after=after))
        pages += 1
        assert len(page.instances) <= 3
        seen += [s.instance_id for s in page.instances]
        if page.next_token is None:
            break
        assert len(page.instances) == 3
        after = page.next_token
    assert seen == created
    assert pages == max(1, -(-count // 3))

    # Paging composes with filters.
    page = await store.list_instances(InstanceQuery(limit=1, statuses=(S.PENDING,)))
    assert [s.instance_id for s in page.instances] == created[:1]


# -- purge -----------------------------------------------------------------------------


async def test_purge_deletes_finished_instances_only(store: Store) -> None:
    await start(store, "done", status=S.COMPLETED)
    await start(store, "failed", status=S.FAILED, failure=BOOM)
    await start(store, "running")
    with pytest.raises(OrchestrationStateError):
        await store.purge(["done", "running", "failed"])
    for iid in ("done", "failed", "running"):
        assert await store.get_state(iid) is not None  # nothing was deleted
        assert await store.get_history(iid) != []

    assert await store.purge(["done", "failed", "nobody"]) == 2
    assert await store.get_state("done") is None
    assert await store.get_history("failed") == []
    assert await store.purge(["done"]) == 0
    page = await store.list_instances(InstanceQuery())
    assert [s.instance_id for s in page.instances] == ["running"]

    # The id is free again.
    await store.create_instance(new_instance("done", execution_id="e9"))
    item = await claim_one(store, "done")
    assert (item.execution_id, item.history_length) == ("e9", 0)


async def test_purge_removes_pending_work(store: Store, clock: FakeClock) -> None:
    # An instance may finish with activities still queued (when_any, terminate); purging
    # it deletes them: nothing runs for an instance that no longer exists.
    act = ScheduleActivity(task_id=1, name="orphan")
    await start(store, "a", status=S.TERMINATED, activities=(act,))
    assert await store.purge(["a"]) == 1
    assert await store.claim_activities("w", 10, LEASE) == []
    assert await store.next_wake_time() is None


def _child_of(iid: str, task_id: int = 1) -> ParentInstance:
    return ParentInstance(instance_id=iid, execution_id="e1", task_id=task_id)


async def test_purge_recursive_deletes_descendants(store: Store) -> None:
    await start(store, "root", status=S.COMPLETED)
    await start(store, "kid", status=S.COMPLETED, parent=_child_of("root"))
    await start(store, "grandkid", status=S.FAILED, failure=BOOM, parent=_child_of("kid"))
    await start(store, "other", status=S.COMPLETED)
    await start(store, "other-kid", status=S.COMPLETED, parent=_child_of("other"))

    assert await store.purge(["other"]) == 1  # not recursive: the child stays
    assert await store.get_state("other-kid") is not None

    assert await store.purge(["root"], recursive=True) == 3
    for iid in ("root", "kid", "grandkid"):
        assert await store.get_state(iid) is None
    page = await store.list_instances(InstanceQuery())
    assert [s.instance_id for s in page.instances] == ["other-kid"]


async def test_purge_recursive_with_an_unfinished_descendant_deletes_nothing(
    store: Store,
) -> None:
    await start(store, "root", status=S.COMPLETED)
    await start(store, "kid", status=S.COMPLETED, parent=_child_of("root"))
    await start(store, "grandkid", status=S.RUNNING, parent=_child_of("kid"))
    with pytest.raises(OrchestrationStateError):
        await store.purge(["root"], recursive=True)
    for iid in ("root", "kid", "grandkid"):
        assert await store.get_state(iid) is not None
        assert await store.get_history(iid) != []


# -- next_wake_time --------------------------------------------------------------------


async def test_next_wake_time_is_the_earliest_delayed_message(
    store: Store, clock: FakeClock
) -> None:
    assert await store.next_wake_time() is None
    await start(store, "a")
    await start(store, "b")
    assert await store.next_wake_time() is None

    for iid, seconds in (("a", 30), ("b", 10)):
        await store.send(to(iid, raised("tick")))
        item = await claim_one(store, iid)
        fire_at = clock.at(seconds)
        timer = TimerFired(timestamp=fire_at, task_id=1, fire_at=fire_at)
        await commit(store, item, messages=(to(iid, timer, visible_at=fire_at),))
    await store.create_instance(new_instance("later", visible_at=clock.at(50)))
    assert await store.next_wake_time() == clock.at(10)

    clock.advance(10)
    await commit(store, await claim_one(store, "b"))
    assert await store.next_wake_time() == clock.at(20)

    clock.advance(20)
    item = await claim_one(store, "a")
    await store.abandon_orchestration(item, 5, None)
    assert await store.next_wake_time() == clock.at(5)
    clock.advance(5)
    await commit(store, await claim_one(store, "a"))
    assert await store.next_wake_time() == clock.at(15)  # the delayed start


# -- notifiers -------------------------------------------------------------------------


async def test_writes_notify(store: Store, clock: FakeClock) -> None:
    work, acts, changes = store.orchestration_work, store.activity_work, store.instance_changes

    v_work, v_changes = work.version, changes.version
    await store.create_instance(new_instance("a"))
    assert work.version > v_work and changes.version > v_changes

    v_work = work.version
    await store.send(to("a", raised("go")))
    assert work.version > v_work

    item = await claim_one(store, "a")
    v_work, v_acts, v_changes = work.version, acts.version, changes.version
    await commit(store, item, activities=(ScheduleActivity(task_id=1, name="x"),))
    assert work.version > v_work and changes.version > v_changes and acts.version > v_acts

    [act] = await store.claim_activities("w", 10, LEASE)
    v_acts = acts.version
    await store.abandon_activities([act])
    assert acts.version > v_acts

    [act] = await store.claim_activities("w", 10, LEASE)
    v_work = work.version
    await store.complete_activities(
        [ActivityResult(item=act, event=TaskCompleted(timestamp=clock(), task_id=1))]
    )
    assert work.version > v_work


async def test_notifier_wait(store: Store) -> None:
    work = store.orchestration_work
    seen = work.version
    assert await work.wait(0.01, since=seen) is False  # nothing happened

    await store.create_instance(new_instance("a"))
    assert await asyncio.wait_for(work.wait(30, since=seen), 5) is True  # at once

    seen = work.version
    waiter = asyncio.ensure_future(work.wait(30, since=seen))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.send(to("a", raised("go")))
    assert await asyncio.wait_for(waiter, 5) is True


# -- properties ------------------------------------------------------------------------

_PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # a new store per example
)

_OFFSETS = st.lists(st.none() | st.integers(-5, 60), max_size=5)  # visible_at, from now
_ROUNDS = st.lists(
    st.tuples(
        _OFFSETS,  # sends
        st.integers(0, 40),  # seconds the clock moves
        _OFFSETS,  # sends while a claim is held
        st.integers(0, int(LEASE) - 1),  # seconds the clock moves while it is held
        st.sampled_from(["commit", "abandon", "crash"]),  # how the claim ends
    ),
    min_size=1,
    max_size=10,
)


@_PROPERTY_SETTINGS
@given(rounds=_ROUNDS)
async def test_property_messages_are_claimed_when_visible_in_order_exactly_once(
    open_store: OpenStore,
    rounds: list[tuple[list[int | None], int, list[int | None], int, str]],
) -> None:
    """Rounds of sends (some delayed), clock moves, a claim, more sends while it is held,
    and its commit, abandon or loss (a crashed worker): every claim returns exactly the
    visible, unconsumed messages in arrival order, the held lease keeps others out, and
    in the end each message is in the history exactly once."""
    clock = FakeClock()
    store = open_store(clock)
    try:
        history = await start(store, "a")
        pending: list[tuple[EventRaised, datetime | None]] = []  # arrival order
        sent: list[EventRaised] = []

        async def send(offsets: list[int | None]) -> None:
            for offset in offsets:
                event = raised(f"m{len(sent)}", at=clock())
                at = None if offset is None else clock.at(offset)
                await store.send(to("a", event, visible_at=at))
                pending.append((event, at))
                sent.append(event)

        for n, (before, wait, during, hold, end) in enumerate(rounds):
            await send(before)
            clock.advance(wait)
            visible = tuple(e for e, at in pending if at is None or at <= clock())
            items = await claim(store, f"w{n}")
            if not visible:
                assert items == {}
                continue
            item = items["a"]
            assert item.messages == visible
            assert item.history_length == len(history)
            await send(during)
            clock.advance(hold)
            assert await claim(store, "intruder") == {}
            if end == "commit":
                history.extend((await commit(store, item)).events)
                pending = [(e, at) for e, at in pending if e not in item.messages]
            elif end == "abandon":
                await store.abandon_orchestration(item, 0, None)
            else:
                clock.advance(PAST_LEASE)

        clock.advance(120)
        for item in (await claim(store)).values():
            history.extend((await commit(store, item)).events)
        assert await claim(store) == {}
        delivered = [e for e in history if isinstance(e, EventRaised)]
        assert sorted(e.name for e in delivered) == sorted(e.name for e in sent)
        assert await store.get_history("a") == history
    finally:
        await store.close()


_ACTIVITY_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.integers(0, 2), st.integers(1, 3)),  # worker, limit
        st.tuples(st.sampled_from(["complete", "abandon"]), st.integers(0, 2), st.integers(0, 5)),
        st.tuples(st.sampled_from(["renew", "crash"]), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("advance"), st.just(0), st.integers(1, 40)),  # seconds
    ),
    max_size=40,
)


@_PROPERTY_SETTINGS
@given(count=st.integers(1, 5), ops=_ACTIVITY_OPS)
async def test_property_each_activity_result_is_delivered_exactly_once(
    open_store: OpenStore, count: int, ops: list[tuple[str, int, int]]
) -> None:
    """Workers claim, complete, abandon and renew activities, crash, and act on claims
    they lost, while the clock moves: an activity is never leased to two workers at once,
    free work is claimed, and each result reaches the instance exactly once (the first
    completion wins)."""
    clock = FakeClock()
    store = open_store(clock)
    try:
        tasks = range(1, count + 1)
        await start(
            store, "a", activities=tuple(ScheduleActivity(task_id=t, name="act") for t in tasks)
        )
        # What each worker believes it holds (stale once another worker took it over).
        holding: list[dict[int, ActivityWorkItem]] = [{}, {}, {}]
        owner: dict[int, int] = {}  # the worker that claimed each task last
        # A lease is surely held until `sure`, and perhaps until `maybe` (a lapsed lease
        # renewed before anyone took it may or may not come back).
        sure: dict[int, datetime] = {}
        maybe: dict[int, datetime] = {}
        done: set[int] = set()
        margin = timedelta(seconds=PAST_LEASE - LEASE)

        def release(t: int) -> None:
            for leases in (owner, sure, maybe):
                leases.pop(t, None)

        for op, who, arg in ops:
            mine = holding[who]
            now = clock()
            if op == "claim":
                claimed = await store.claim_activities(f"w{who}", arg, LEASE)
                free = [t for t in tasks if t not in done and maybe.get(t, now) + margin <= now]
                assert min(arg, len(free)) <= len(claimed) <= arg
                for a in claimed:
                    assert a.task_id not in done, "a completed activity was claimed"
                    assert sure.get(a.task_id, now) <= now, "claimed while leased"
                    mine[a.task_id] = a
                    owner[a.task_id] = who
                    sure[a.task_id] = maybe[a.task_id] = clock.at(LEASE)
            elif op in ("complete", "abandon") and mine:
                item = sorted(mine.values(), key=lambda a: a.task_id)[arg % len(mine)]
                t = item.task_id
                del mine[t]
                if op == "complete":
                    result = TaskCompleted(timestamp=now, task_id=t)
                    await store.complete_activities([ActivityResult(item=item, event=result)])
                    done.add(t)  # by this completion, or an earlier one
                    release(t)
                else:
                    await store.abandon_activities([item])
                    if owner.get(t) == who:  # a stale item releases nothing
                        release(t)
            elif op == "renew" and mine:
                await store.renew_leases(f"w{who}", [], [a.id for a in mine.values()], LEASE)
                for t in mine:
                    if owner.get(t) == who:
                        maybe[t] = clock.at(LEASE)
                        if sure[t] > now:
                            sure[t] = maybe[t]
            elif op == "crash":
                mine.clear()
            elif op == "advance":
                clock.advance(arg)

        # Drain: whatever is left is claimed and completed.
        clock.advance(PAST_LEASE)
        for a in await store.claim_activities("drain", 100, LEASE):
            assert a.task_id not in done
            result = TaskCompleted(timestamp=clock(), task_id=a.task_id)
            await store.complete_activities([ActivityResult(item=a, event=result)])
            done.add(a.task_id)
        assert done == set(tasks)
        item = await claim_one(store, "a")
        assert len(item.messages) == count
        assert sorted(m.task_id for m in item.messages if isinstance(m, TaskCompleted)) == list(
            tasks
        )
    finally:
        await store.close()


async def test_a_commit_leases_the_activities_it_schedules_to_the_worker_that_offers(
    store: Store, clock: FakeClock
) -> None:
    await store.create_instance(new_instance("a"))
    decided = await claim_one(store, "a")
    work = tuple(ScheduleActivity(task_id=n, name="step", input=str(n)) for n in range(3))
    take = ActivityTake(owner="w1", limit=2, lease_seconds=LEASE)
    [outcome] = await store.commit_orchestrations([decision(decided, activities=work)], take)
    assert outcome is None
    assert sorted((i.task_id, i.lease_owner, i.input) for i in take.items) == [
        (0, "w1", "0"),
        (1, "w1", "1"),
    ]
    mine = sorted(take.items, key=lambda i: i.task_id)
    # Leased in the commit: no one else claims them; the third waits for anyone.
    [other] = await store.claim_activities("w2", 10, 10 * LEASE)
    assert other.task_id == 2
    assert await store.claim_activities("w2", 10, LEASE) == []
    # Run by w1 like claimed ones: renewed, then completed once.
    clock.advance(LEASE - 1)
    await store.renew_leases("w1", (), [i.id for i in mine], LEASE)
    clock.advance(2)
    assert await store.claim_activities("w2", 10, LEASE) == []
    done = TaskCompleted(timestamp=clock(), task_id=0, result="0")
    await store.complete_activities([ActivityResult(item=mine[0], event=done)])
    woken = await claim_one(store, "a")
    assert woken.messages == (done,)
    # w1 died with the other one: it is anyone's once its lease runs out.
    clock.advance(LEASE)
    [taken_over] = await store.claim_activities("w2", 10, LEASE)
    assert (taken_over.task_id, taken_over.lease_owner) == (1, "w2")
    # A rejected commit leases nothing.
    [stale] = await store.commit_orchestrations([decision(decided, activities=work)], take)
    assert isinstance(stale, LeaseLostError) and take.items == []
