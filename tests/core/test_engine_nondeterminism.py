"""Changed code replaying an old history raises NonDeterminismError naming what changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from engine_helpers import Run, completed, failed, fired, output_of, raised

from durable.core.commands import ScheduleActivity
from durable.core.errors import NonDeterminismError
from durable.core.events import PatchApplied
from durable.core.functions import orchestrator_spec
from durable.core.state import OrchestrationStatus


def as_orch(fn):
    return orchestrator_spec(fn, name="orch")


def recorded(*fns_and_feeds):
    """Run v1 (registered as 'orch') through the given batches; return the Run."""
    fn, *batches = fns_and_feeds
    run = Run(as_orch(fn))
    run.start("orch")
    for batch in batches:
        run.feed(*batch)
    return run


def diverges(run: Run, new_code) -> str:
    with pytest.raises(NonDeterminismError) as info:
        run.replay_fresh(as_orch(new_code))
    return str(info.value)


def v1(ctx, _):
    a = yield ctx.call_activity("a")
    yield ctx.create_timer(timedelta(hours=1))
    ctx.send_event("other", "ping", data=a)
    b = yield ctx.call_sub_orchestrator("child", instance_id="kid")
    return [a, b]


def v1_history():
    return recorded(v1, [completed(0, "A")], [fired(1)])


def test_the_unchanged_code_replays_cleanly():
    run = v1_history()
    decision, execution = run.replay_fresh()
    assert decision.commands == ()
    assert decision.status is OrchestrationStatus.RUNNING
    assert not execution.is_finished


def test_different_activity_name():
    def v2(ctx, _):
        yield ctx.call_activity("a_renamed")

    message = diverges(v1_history(), v2)
    assert "sequence number 0" in message
    assert "call_activity('a')" in message
    assert "call_activity('a_renamed')" in message


def test_different_command_kind_at_the_same_sequence_number():
    def v2(ctx, _):
        yield ctx.call_activity("a")
        yield ctx.call_activity("instead_of_timer")

    message = diverges(v1_history(), v2)
    assert "sequence number 1" in message
    assert "create_timer(2026-01-01T01:00:01+00:00)" in message
    assert "call_activity('instead_of_timer')" in message


def test_recorded_command_missing_from_the_code():
    def v2(ctx, _):
        yield ctx.call_activity("a")
        yield ctx.wait_for_external_event("instead_of_timer")

    message = diverges(v1_history(), v2)
    assert "sequence number 1" in message
    assert "create_timer(" in message
    assert "does not make that call" in message


def test_recorded_command_missing_because_the_code_finished_early():
    def v2(ctx, _):
        yield ctx.call_activity("a")
        return "early"

    message = diverges(v1_history(), v2)
    assert "sequence number 1" in message and "create_timer(" in message


def test_changed_child_instance_id():
    def v2(ctx, _):
        a = yield ctx.call_activity("a")
        yield ctx.create_timer(timedelta(hours=1))
        ctx.send_event("other", "ping", data=a)
        yield ctx.call_sub_orchestrator("child", instance_id="kid-2")

    message = diverges(v1_history(), v2)
    assert "sequence number 3" in message
    assert "call_sub_orchestrator('child', instance_id='kid')" in message
    assert "call_sub_orchestrator('child', instance_id='kid-2')" in message


def test_changed_send_event_target():
    def v2(ctx, _):
        a = yield ctx.call_activity("a")
        yield ctx.create_timer(timedelta(hours=1))
        ctx.send_event("somebody-else", "ping", data=a)
        yield ctx.call_sub_orchestrator("child", instance_id="kid")

    message = diverges(v1_history(), v2)
    assert "sequence number 2" in message
    assert "send_event('other', 'ping')" in message
    assert "send_event('somebody-else', 'ping')" in message


def test_changed_send_event_name():
    def v2(ctx, _):
        a = yield ctx.call_activity("a")
        yield ctx.create_timer(timedelta(hours=1))
        ctx.send_event("other", "pong", data=a)
        yield ctx.call_sub_orchestrator("child", instance_id="kid")

    message = diverges(v1_history(), v2)
    assert "send_event('other', 'ping')" in message
    assert "send_event('other', 'pong')" in message


def short(ctx, _):
    a = yield ctx.call_activity("a")
    return a


def test_history_says_completed_but_the_code_is_still_running():
    def v2(ctx, _):
        a = yield ctx.call_activity("a")
        b = yield ctx.call_activity("b")
        return [a, b]

    run = recorded(short, [completed(0, "A")])
    message = diverges(run, v2)
    assert "COMPLETED" in message and "RUNNING" in message


def test_history_says_failed_but_the_code_completes():
    def v2(ctx, _):
        try:
            yield ctx.call_activity("a")
        except Exception:
            return "recovered"

    run = recorded(short, [failed(0, ValueError("x"))])
    message = diverges(run, v2)
    assert "FAILED" in message and "COMPLETED" in message


def test_new_calls_after_the_recorded_ones_are_not_a_divergence():
    def v2(ctx, _):
        a = yield ctx.call_activity("a")
        extra = yield ctx.call_activity("new_step")
        return [a, extra]

    run = recorded(short)
    decision, live = run.replay_fresh(as_orch(v2))
    assert decision.commands == ()
    d = live.step([completed(0, "A")])
    assert d.commands == (ScheduleActivity(task_id=1, name="new_step"),)


def test_a_second_execution_started_event_is_rejected():
    run = recorded(short)
    with pytest.raises(NonDeterminismError, match="second ExecutionStarted"):
        run.live.replay([run.history[1]])


# -- versioning with is_patched ---------------------------------------------------------


def patched(ctx, _):
    if ctx.is_patched("use-b"):
        a = yield ctx.call_activity("b")
    else:
        a = yield ctx.call_activity("a")
    again = ctx.is_patched("use-b")
    return [a, again]


def test_patch_keeps_old_histories_on_the_old_branch():
    run = recorded(short)  # recorded before the patch existed: called "a"
    decision, live = run.replay_fresh(as_orch(patched))
    assert decision.events == ()
    d = live.step([completed(0, "A")])
    assert output_of(d) == ["A", False]


def test_patch_takes_the_new_branch_in_new_runs_and_records_it():
    run = Run(as_orch(patched))
    d = run.start("orch")
    assert d.commands == (ScheduleActivity(task_id=0, name="b"),)
    assert [e for e in d.events if isinstance(e, PatchApplied)] == [
        PatchApplied(timestamp=run.now, patch_id="use-b")
    ]
    d = run.feed(completed(0, "B"))
    assert output_of(d) == ["B", True]
    # Replaying the patched history takes the new branch again and records nothing new.
    decision, _ = run.replay_fresh()
    assert decision.events == ()


def test_patch_is_decided_once_per_execution_even_when_first_seen_after_replay():
    def late_patch(ctx, _):
        a = yield ctx.call_activity("a")
        first = ctx.is_patched("p")
        yield ctx.wait_for_external_event("go")
        return [a, first, ctx.is_patched("p")]

    run = Run(as_orch(late_patch))
    run.start("orch")
    d = run.feed(completed(0, "A"))
    assert sum(isinstance(e, PatchApplied) for e in d.events) == 1
    d = run.feed(raised("go"))
    assert output_of(d) == ["A", True, True]
    assert not any(isinstance(e, PatchApplied) for e in d.events)
