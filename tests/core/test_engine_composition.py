"""when_all / when_any, fan-out/fan-in, child orchestrations and continue_as_new."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from engine_helpers import (
    T0,
    Run,
    completed,
    details_of,
    enc,
    failed,
    fired,
    output_of,
    raised,
)

from durable.core.commands import (
    CompleteOrchestration,
    ContinueAsNew,
    ScheduleActivity,
    SendEvent,
    StartChildOrchestration,
)
from durable.core.context import OrchestrationContext
from durable.core.errors import TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    ParentInstance,
)
from durable.core.state import OrchestrationStatus
from durable.core.tasks import RetryPolicy, when_all, when_any

RUNNING = OrchestrationStatus.RUNNING
COMPLETED = OrchestrationStatus.COMPLETED


# -- when_all ---------------------------------------------------------------------------


def fan_out(ctx, n: int):
    results = yield when_all([ctx.call_activity("work", input=i) for i in range(n)])
    return results


def test_fan_out_schedules_every_activity_in_one_decision():
    run = Run(fan_out)
    d = run.start(fan_out, 20)
    assert d.commands == tuple(
        ScheduleActivity(task_id=i, name="work", input=str(i)) for i in range(20)
    )


def test_fan_in_returns_results_in_input_order_whatever_the_completion_order():
    run = Run(fan_out)
    run.start(fan_out, 20)
    order = list(range(19, -1, -1))
    for chunk in (order[:7], order[7:8]):
        d = run.feed(*[completed(i, i * i) for i in chunk])
        assert d.status is RUNNING and d.commands == ()
    d = run.feed(*[completed(i, i * i) for i in order[8:]])
    assert output_of(d) == [i * i for i in range(20)]


def test_when_all_of_nothing_completes_at_once_with_an_empty_list():
    def nothing(ctx, _):
        got = yield when_all([])
        return {"got": got}

    d = Run(nothing).start(nothing)
    assert d.status is COMPLETED
    assert output_of(d) == {"got": []}


def all_or_error(ctx, _):
    tasks = [ctx.call_activity("work", input=i) for i in range(3)]
    try:
        return (yield when_all(tasks))
    except TaskFailedError as e:
        return [e.details.error_type, e.details.message, [t.is_complete for t in tasks]]


def test_when_all_waits_for_every_child_then_raises_the_first_failure_to_complete():
    run = Run(all_or_error)
    run.start(all_or_error)
    d = run.feed(failed(2, ValueError("first")), failed(0, KeyError("second")))
    assert d.status is RUNNING  # task 1 is still running
    d = run.feed(completed(1, "ok"))
    assert output_of(d) == ["builtins.ValueError", "first", [True, True, True]]


def test_when_all_raises_the_first_failure_even_when_the_last_child_succeeds_first():
    run = Run(all_or_error)
    run.start(all_or_error)
    run.feed(completed(1))
    d = run.feed(failed(0, KeyError("only")), completed(2))
    assert output_of(d)[:2] == ["builtins.KeyError", "'only'"]


# -- when_any ---------------------------------------------------------------------------


def first_of(ctx, _):
    a = ctx.call_activity("a")
    b = ctx.call_activity("b")
    winner = yield when_any([a, b])
    if winner.is_failed:
        return ["b" if winner is b else "a", "failed", winner.get_exception().details.message]
    return ["b" if winner is b else "a", winner.get_result()]


def test_when_any_returns_the_first_task_to_complete():
    run = Run(first_of)
    run.start(first_of)
    d = run.feed(completed(1, "B"), completed(0, "A"))
    assert output_of(d) == ["b", "B"]


def test_when_any_returns_a_failed_task_without_raising():
    run = Run(first_of)
    run.start(first_of)
    d = run.feed(failed(0, ValueError("nope")))
    assert output_of(d) == ["a", "failed", "nope"]


def test_when_any_of_an_already_completed_task_completes_at_once():
    def buffered(ctx, _):
        yield ctx.create_timer(timedelta(seconds=1))
        wait = ctx.wait_for_external_event("e")
        winner = yield when_any([ctx.create_timer(timedelta(days=1)), wait])
        return winner.get_result()

    run = Run(buffered)
    run.start(buffered)
    d = run.feed(raised("e", "early"), fired(0))
    assert output_of(d) == "early"


def test_when_any_of_nothing_raises_value_error():
    with pytest.raises(ValueError):
        when_any([])

    def empty_any(ctx, _):
        try:
            yield when_any([])
        except ValueError as e:
            return str(e)

    d = Run(empty_any).start(empty_any)
    assert d.status is COMPLETED and "at least one task" in output_of(d)


def test_composites_reject_things_that_are_not_tasks():
    with pytest.raises(TypeError):
        when_all([1])  # type: ignore[list-item]


# -- child orchestrations ---------------------------------------------------------------


def parent(ctx, _):
    first = yield ctx.call_sub_orchestrator("child", input=1)
    try:
        second = yield ctx.call_sub_orchestrator(child, input=2, instance_id="named-child")
    except TaskFailedError as e:
        d = e.details
        second = [str(e), d.error_type, d.message, d.is_caused_by("KeyError")]
    return [first, second]


def child(ctx, n: int) -> str:
    return f"{ctx.instance_id} of {ctx.parent_instance_id}: {n}"


def test_child_orchestration_gets_a_deterministic_default_id():
    run = Run(parent)
    d = run.start(parent, instance_id="order-7")
    assert d.commands == (
        StartChildOrchestration(task_id=0, name="child", instance_id="order-7:0000", input="1"),
    )


def test_child_default_id_uses_four_hex_digits_of_the_sequence_number():
    def many(ctx, _):
        for i in range(11):
            ctx.send_event("x", "e", data=i)
        yield ctx.call_sub_orchestrator("child")

    d = Run(many).start(many, instance_id="p")
    assert d.commands[-1] == StartChildOrchestration(task_id=11, name="child", instance_id="p:000b")


def test_child_completion_and_failure_reach_the_parent():
    run = Run(parent)
    run.start(parent, instance_id="p")
    d = run.feed(ChildOrchestrationCompleted(timestamp=T0, task_id=0, result=enc("one")))
    assert d.commands == (
        StartChildOrchestration(task_id=1, name="child", instance_id="named-child", input="2"),
    )
    failure = details_of(KeyError("gone"))
    d = run.feed(ChildOrchestrationFailed(timestamp=T0, task_id=1, failure=failure))
    assert output_of(d) == [
        "one",
        [
            "orchestrator 'child' failed: builtins.KeyError: 'gone'",
            "builtins.KeyError",
            "'gone'",
            True,
        ],
    ]


def test_child_result_is_decoded_by_the_child_return_annotation():
    run = Run(parent)
    run.start(parent, instance_id="p")
    run.feed(ChildOrchestrationCompleted(timestamp=T0, task_id=0, result=enc("one")))
    d = run.feed(ChildOrchestrationCompleted(timestamp=T0, task_id=1, result="5"))
    # `child` declares `-> str`: a number does not fit, so the parent sees a failure.
    assert output_of(d)[1][1] == "durable.PayloadDecodeError"


def test_a_child_knows_its_parent():
    run = Run(child)
    d = run.start(
        child,
        3,
        instance_id="p:0000",
        parent=ParentInstance(instance_id="p", execution_id="e", task_id=0),
    )
    assert output_of(d) == "p:0000 of p: 3"


def test_a_retried_child_gets_a_fresh_default_id_per_attempt():
    def retried(ctx, _):
        policy = RetryPolicy(timedelta(seconds=1), max_number_of_attempts=2)
        return (yield ctx.call_sub_orchestrator("child", retry_policy=policy))

    run = Run(retried)
    run.start(retried, instance_id="p")
    run.feed(ChildOrchestrationFailed(timestamp=T0, task_id=0, failure=details_of(ValueError())))
    d = run.feed(fired(1))
    assert d.commands == (StartChildOrchestration(task_id=2, name="child", instance_id="p:0002"),)


# -- continue_as_new --------------------------------------------------------------------


def counter(ctx, n: int):
    got = yield ctx.wait_for_external_event("tick")
    ctx.send_event("watcher", "progress", data=n)
    ctx.continue_as_new(n + got, save_events=n % 2 == 1)
    yield ctx.wait_for_external_event("never")  # the restart takes effect at this yield
    return "unreachable"


def test_continue_as_new_restarts_with_the_new_input_and_drops_buffered_events():
    run = Run(counter)
    run.start(counter, 10)
    d = run.feed(raised("tick", 5), raised("tick", 6), raised("other", 7))
    assert d.status is OrchestrationStatus.CONTINUED_AS_NEW
    assert d.commands == (
        SendEvent(task_id=0, instance_id="watcher", name="progress", input="10"),
        ContinueAsNew(input="15"),
    )
    assert d.events[-1] == ContinuedAsNew(timestamp=run.now, input="15")


def test_continue_as_new_with_save_events_carries_unconsumed_events_in_arrival_order():
    run = Run(counter)
    run.start(counter, 11)
    d = run.feed(raised("b", 1), raised("c", 2), raised("B", 3), raised("tick", 2))
    carried = (raised("b", 1), raised("c", 2), raised("B", 3))
    assert d.commands[-1] == ContinueAsNew(input="13", carried_events=carried)
    assert d.events[-1] == ContinuedAsNew(timestamp=run.now, input="13", carried_events=carried)


def test_a_continued_execution_does_not_restart_twice():
    run = Run(counter)
    run.start(counter, 1)
    d = run.feed(raised("tick", 1))
    assert isinstance(d.commands[-1], ContinueAsNew)
    # A late message for the old execution decides nothing: no second new execution.
    d = run.feed(raised("tick", 2), completed(0))
    assert d.status is OrchestrationStatus.CONTINUED_AS_NEW
    assert d.events == () and d.commands == ()


def test_consumed_events_are_not_carried():
    run = Run(counter)
    run.start(counter, 1)
    d = run.feed(raised("tick", 1))
    assert d.commands[-1] == ContinueAsNew(input="2")


def test_events_arriving_in_the_same_batch_after_the_restart_are_carried_too():
    run = Run(counter)
    run.start(counter, 1)
    run.feed(raised("z", "early"))
    d = run.feed(raised("a", "x"), raised("tick", 4), raised("Tick", 5), raised("a", "y"))
    assert d.commands[-1] == ContinueAsNew(
        input="5",
        carried_events=(
            raised("z", "early"),
            raised("a", "x"),
            raised("Tick", 5),
            raised("a", "y"),
        ),
    )
    # The carried events after the restart are not part of this execution's history.
    assert raised("a", "y") not in d.events


def test_plain_function_may_continue_as_new():
    def plain(ctx, n: int):
        if n < 3:
            ctx.continue_as_new(n + 1)
        return "done"

    assert Run(plain).start(plain, 0).commands == (ContinueAsNew(input="1"),)
    assert Run(plain).start(plain, 3).commands == (
        CompleteOrchestration(status="COMPLETED", result='"done"'),
    )


def test_work_started_after_continue_as_new_is_not_sent() -> None:
    def restart(ctx: object, n: int) -> Any:
        assert isinstance(ctx, OrchestrationContext)
        ctx.send_event("other", "before", data=n)
        ctx.continue_as_new(n + 1)
        yield ctx.call_activity("charge", input=n)

    decision = Run(restart).start(restart, 1)
    kinds = [type(c).__name__ for c in decision.commands]
    assert kinds == ["SendEvent", "ContinueAsNew"]
