"""Timers, external events, races between them, and suspend / resume / terminate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
from engine_helpers import T0, Run, completed, enc, fired, output_of, raised

from durable.core.commands import CompleteOrchestration, CreateTimer, ScheduleActivity
from durable.core.errors import TaskCancelledError, TaskFailedError
from durable.core.events import ExecutionResumed, ExecutionSuspended, ExecutionTerminated
from durable.core.state import OrchestrationStatus
from durable.core.tasks import when_any

RUNNING = OrchestrationStatus.RUNNING
SUSPENDED = OrchestrationStatus.SUSPENDED
COMPLETED = OrchestrationStatus.COMPLETED
TERMINATED = OrchestrationStatus.TERMINATED


# -- timers -----------------------------------------------------------------------------


def long_sleep(ctx, days: int):
    yield ctx.create_timer(timedelta(days=days))
    return ctx.current_utc_datetime.isoformat()


def test_a_ninety_day_timer_is_one_timer():
    run = Run(long_sleep)
    d = run.start(long_sleep, 90)
    assert d.commands == (CreateTimer(task_id=0, fire_at=T0 + timedelta(days=90)),)
    later = T0 + timedelta(days=90, seconds=1)
    d = run.feed(fired(0, T0 + timedelta(days=90)), at=later)
    assert d.status is COMPLETED
    assert output_of(d) == later.isoformat()


def test_timer_at_an_absolute_time_and_naive_datetimes_are_utc():
    def absolute(ctx, _):
        yield ctx.create_timer(datetime(2026, 3, 1, 12, 0))
        return "done"

    run = Run(absolute)
    d = run.start(absolute)
    (timer,) = d.commands
    assert isinstance(timer, CreateTimer)
    assert timer.fire_at == datetime(2026, 3, 1, 12, 0, tzinfo=T0.tzinfo)
    assert timer.fire_at.tzinfo is not None


def test_a_timer_completes_only_when_it_fires_not_when_history_time_passes():
    run = Run(long_sleep)
    run.start(long_sleep, 1)
    d = run.feed(raised("noise"), at=T0 + timedelta(days=2))
    assert d.status is RUNNING
    assert d.commands == ()


# -- races ------------------------------------------------------------------------------


def approval(ctx, _):
    wait = ctx.wait_for_external_event("Approve")
    timer = ctx.create_timer(timedelta(hours=1))
    winner = yield when_any([wait, timer])
    if winner is wait:
        timer.cancel()
        try:
            timer.get_result()
        except TaskCancelledError:
            pass
        else:
            raise AssertionError("a cancelled timer has no result")
        outcome = f"approved {wait.get_result()} cancelled={timer.is_cancelled}"
    else:
        cancelled = wait.cancel()
        outcome = f"timed out cancelled={cancelled}"
    # After the race, wait again for the same event name.
    second = yield ctx.wait_for_external_event("approve")
    return [outcome, second]


def test_event_wins_the_race_and_the_timer_is_cancelled():
    run = Run(approval)
    d = run.start(approval)
    assert d.commands == (CreateTimer(task_id=0, fire_at=T0 + timedelta(hours=1)),)
    d = run.feed(raised("Approve", "yes"))
    assert d.status is RUNNING and d.commands == ()
    # The cancelled timer firing later changes nothing.
    d = run.feed(fired(0))
    assert d.status is RUNNING
    d = run.feed(raised("APPROVE", "again"))
    assert output_of(d) == ["approved yes cancelled=True", "again"]


def test_timer_wins_the_race_and_the_event_wait_is_cancelled():
    run = Run(approval)
    run.start(approval)
    d = run.feed(fired(0))
    assert d.status is RUNNING
    # The event raised after the race goes to the new wait, not the cancelled one.
    d = run.feed(raised("approve", "late"))
    assert output_of(d) == ["timed out cancelled=True", "late"]


def test_when_both_arrive_in_one_batch_the_first_applied_wins():
    run = Run(approval)
    run.start(approval)
    d = run.feed(fired(0), raised("Approve", "1"), raised("Approve", "2"))
    assert output_of(d) == ["timed out cancelled=True", "1"]


# -- external events --------------------------------------------------------------------


def collect(ctx, names: list[str]):
    got = []
    for name in names:
        got.append((yield ctx.wait_for_external_event(name)))
    return got


def test_events_raised_before_the_wait_are_buffered():
    run = Run(collect)
    run.start(collect, ["a"])
    run.feed(raised("b", "other"))
    d = run.feed(raised("a", 1))
    assert output_of(d) == [1]


def test_buffered_events_are_delivered_first_in_first_out_per_name():
    def late_waiter(ctx, _):
        yield ctx.create_timer(timedelta(seconds=1))
        first = yield ctx.wait_for_external_event("x")
        other = yield ctx.wait_for_external_event("y")
        second = yield ctx.wait_for_external_event("x")
        return [first, other, second]

    run = Run(late_waiter)
    run.start(late_waiter)
    run.feed(raised("x", 1), raised("y", "why"))
    run.feed(raised("x", 2))
    d = run.feed(fired(0))
    assert output_of(d) == [1, "why", 2]


def test_event_names_are_case_insensitive():
    run = Run(collect)
    run.start(collect, ["Approval", "approval"])
    d = run.feed(raised("APPROVAL", 1), raised("aPpRoVaL", 2))
    assert output_of(d) == [1, 2]


def test_events_of_another_name_do_not_complete_the_wait():
    run = Run(collect)
    run.start(collect, ["a"])
    d = run.feed(raised("ab", 1), raised("b", 2))
    assert d.status is RUNNING


class Vote(msgspec.Struct):
    voter: str
    yes: bool


@dataclass
class Point:
    x: int
    y: int


def typed_events(ctx, _):
    vote = yield ctx.wait_for_external_event("vote", data_type=Vote)
    point = yield ctx.wait_for_external_event("point", data_type=Point)
    return [type(vote).__name__, vote.voter, vote.yes, type(point).__name__, point.x + point.y]


def test_event_data_is_decoded_into_data_type():
    run = Run(typed_events)
    run.start(typed_events)
    d = run.feed(raised("vote", {"voter": "ann", "yes": True}), raised("point", {"x": 1, "y": 2}))
    assert output_of(d) == ["Vote", "ann", True, "Point", 3]


def test_event_data_that_does_not_fit_fails_the_wait():
    def strict(ctx, _):
        try:
            yield ctx.wait_for_external_event("vote", data_type=Vote)
        except TaskFailedError as e:
            return e.details.error_type
        return "decoded"

    run = Run(strict)
    run.start(strict)
    assert output_of(run.feed(raised("vote", {"voter": 3}))) == "durable.PayloadDecodeError"


# -- suspend, resume, terminate ---------------------------------------------------------


def two_steps(ctx, _):
    a = yield ctx.call_activity("a")
    got = yield ctx.wait_for_external_event("go")
    b = yield ctx.call_activity("b")
    return [a, got, b]


def test_suspended_instance_holds_events_until_resumed():
    run = Run(two_steps)
    run.start(two_steps)
    d = run.feed(ExecutionSuspended(timestamp=T0, reason="maintenance"))
    assert d.status is SUSPENDED
    d = run.feed(completed(0, "A"), raised("go", "G"))
    assert d.status is SUSPENDED
    assert d.commands == ()  # nothing ran while suspended
    d = run.feed(ExecutionResumed(timestamp=T0))
    assert d.status is RUNNING
    assert d.commands == (ScheduleActivity(task_id=1, name="b"),)
    d = run.feed(completed(1, "B"))
    assert output_of(d) == ["A", "G", "B"]


def test_events_before_the_suspension_in_one_batch_still_apply():
    run = Run(two_steps)
    run.start(two_steps)
    d = run.feed(completed(0, "A"), ExecutionSuspended(timestamp=T0), raised("go", "G"))
    assert d.status is SUSPENDED
    assert d.commands == ()
    d = run.feed(ExecutionResumed(timestamp=T0))
    assert d.commands == (ScheduleActivity(task_id=1, name="b"),)


def test_suspend_and_resume_in_one_batch_releases_held_events_in_order():
    run = Run(collect)
    run.start(collect, ["x", "x"])
    d = run.feed(
        ExecutionSuspended(timestamp=T0),
        raised("x", 1),
        raised("x", 2),
        ExecutionResumed(timestamp=T0),
    )
    assert output_of(d) == [1, 2]


def test_terminate_drops_pending_commands_and_records_the_output():
    run = Run(two_steps)
    run.start(two_steps)
    d = run.feed(
        completed(0, "A"), raised("go", "G"), ExecutionTerminated(timestamp=T0, output=enc("stop"))
    )
    assert d.status is TERMINATED
    assert output_of(d) == "stop"
    assert d.commands == (CompleteOrchestration(status="TERMINATED", result=enc("stop")),)
    assert not any(isinstance(c, ScheduleActivity) for c in d.commands)
    # Events after the end are ignored, and the end is not recorded twice.
    d = run.feed(completed(1, "B"))
    assert d.status is TERMINATED
    assert d.events == () and d.commands == ()


def test_terminate_while_suspended():
    run = Run(two_steps)
    run.start(two_steps)
    run.feed(ExecutionSuspended(timestamp=T0))
    d = run.feed(completed(0, "A"), ExecutionTerminated(timestamp=T0))
    assert d.status is TERMINATED
    assert d.output is None
    assert d.commands == (CompleteOrchestration(status="TERMINATED"),)
