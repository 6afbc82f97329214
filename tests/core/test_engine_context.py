"""The context's replay-safe services: uuids, random, custom status, replay awareness,
logging, history size and its cap."""

from __future__ import annotations

import logging
import uuid

import pytest
from engine_helpers import Run, completed, dec, output_of, raised, specs_of

from durable.core.commands import ContinueAsNew, ScheduleActivity
from durable.core.decision import EngineOptions
from durable.core.engine import Execution, replay
from durable.core.events import ExecutionSuspended, TaskCompleted
from durable.core.payload import PayloadCodec
from durable.core.state import OrchestrationStatus
from durable.core.tasks import when_all

RUNNING = OrchestrationStatus.RUNNING
FAILED = OrchestrationStatus.FAILED


def identities(ctx, _):
    first = [ctx.new_uuid(), ctx.new_uuid(), ctx.random().random()]
    yield ctx.call_activity("a")
    second = [ctx.new_uuid(), ctx.random().randint(0, 10**9)]
    return [first, second]


def run_identities(instance_id: str, execution_id: str = "e") -> list:
    run = Run(identities)
    run.start(identities, instance_id=instance_id, execution_id=execution_id)
    return output_of(run.feed(completed(0)))


def test_new_uuid_and_random_are_the_same_on_replay():
    run = Run(identities)
    run.start(identities, instance_id="x")
    live = output_of(run.feed(completed(0)))
    again, _ = run.replay_fresh()  # the whole history, from scratch
    assert again.events == ()
    # A run from scratch of the same events gives the same values.
    assert run_identities("x") == live


def test_new_uuids_are_distinct_valid_uuids():
    (a, b, _), (c, _) = run_identities("x")
    assert len({a, b, c}) == 3
    assert all(uuid.UUID(u).version == 5 for u in (a, b, c))


def test_other_instances_get_other_values():
    assert run_identities("x") != run_identities("y")
    assert run_identities("x", "e1")[0][2] != run_identities("x", "e2")[0][2]


def status_board(ctx, _):
    ctx.set_custom_status({"stage": "started"})
    yield ctx.call_activity("a")
    yield ctx.call_activity("b")
    ctx.set_custom_status(None)
    yield ctx.wait_for_external_event("go")
    ctx.set_custom_status("done")
    return 1


def test_custom_status_is_published_and_kept_between_steps():
    run = Run(status_board)
    assert dec(run.start(status_board).custom_status) == {"stage": "started"}
    assert dec(run.feed(completed(0)).custom_status) == {"stage": "started"}
    assert run.feed(completed(1)).custom_status is None
    d = run.feed(raised("go"))
    assert dec(d.custom_status) == "done"
    # A full replay recovers the custom status too.
    replayed, _ = run.replay_fresh()
    assert dec(replayed.custom_status) == "done"


# -- replay awareness -------------------------------------------------------------------


def test_is_replaying_is_true_only_while_recorded_steps_rerun():
    seen: list[tuple[str, bool]] = []

    def aware(ctx, _):
        seen.append(("start", ctx.is_replaying))
        yield ctx.call_activity("a")
        seen.append(("after a", ctx.is_replaying))
        yield ctx.call_activity("b")
        seen.append(("after b", ctx.is_replaying))

    run = Run(aware, check_replay=False)
    run.start(aware)
    run.feed(completed(0))
    assert seen == [("start", False), ("after a", False)]
    seen.clear()
    _, execution = replay(run.specs, run.history, [])
    assert seen == [("start", True), ("after a", True)]
    assert not execution.ctx.is_replaying
    seen.clear()
    execution.step([completed(1)])
    assert seen == [("after b", False)]


def test_replay_safe_logger_is_silent_during_replay(caplog):
    log = logging.getLogger("tests.core.orchestrator")

    def chatty(ctx, _):
        logger = ctx.create_replay_safe_logger(log)
        logger.info("starting %s", ctx.instance_id)
        yield ctx.call_activity("a")
        logger.warning("after a")
        yield ctx.call_activity("b")
        logger.error("after b")

    caplog.set_level(logging.INFO, logger=log.name)
    run = Run(chatty, check_replay=False)
    run.start(chatty)
    run.feed(completed(0))
    assert [r.getMessage() for r in caplog.records] == ["starting i", "after a"]
    caplog.clear()
    replay(run.specs, run.history, [TaskCompleted(timestamp=run.now, task_id=1)])
    assert [r.getMessage() for r in caplog.records] == ["after b"]
    assert caplog.records[0].levelno == logging.ERROR


def test_replay_safe_logger_respects_the_logger_level(caplog):
    log = logging.getLogger("tests.core.quiet")

    def quiet(ctx, _):
        ctx.create_replay_safe_logger(log).debug("hidden")
        return 1

    caplog.set_level(logging.INFO, logger=log.name)
    Run(quiet).start(quiet)
    assert caplog.records == []


# -- history size -----------------------------------------------------------------------


def counting(ctx, _):
    lengths = []
    for i in range(3):
        yield ctx.call_activity("a", input=i)
        lengths.append(ctx.history_length)
    return lengths


def test_history_length_counts_the_events_recorded_so_far():
    run = Run(counting)
    run.start(counting)
    for i in range(3):
        d = run.feed(completed(i))
    completions = [n + 1 for n, e in enumerate(run.history) if isinstance(e, TaskCompleted)]
    assert output_of(d) == completions


def looping(ctx, n: int):
    while not ctx.is_continue_as_new_suggested:
        n = yield ctx.call_activity("a", input=n)
    ctx.continue_as_new(n)


def test_continue_as_new_is_suggested_at_the_configured_event_count():
    run = Run(looping, options=EngineOptions(suggest_continue_as_new_events=10))
    d = run.start(looping, 0)
    step = 0
    while d.status is RUNNING:
        d = run.feed(completed(step, step + 1))
        step += 1
    assert d.commands[-1] == ContinueAsNew(input=str(step))
    # It turned true on the first decision that saw at least 10 events.
    before_last = len(run.history) - len(d.events)
    assert before_last < 10 <= before_last + 2


def test_continue_as_new_is_suggested_at_the_configured_size():
    run = Run(looping, options=EngineOptions(suggest_continue_as_new_bytes=2_000))
    run.start(looping, 0)
    d = run.feed(completed(0, "x" * 3_000))
    assert isinstance(d.commands[-1], ContinueAsNew)


def endless(ctx, _):
    i = 0
    while True:
        yield ctx.call_activity("a", input=i)
        i += 1


def test_history_cap_fails_the_orchestration_with_history_too_large_error():
    run = Run(endless, options=EngineOptions(max_history_events=12))
    d = run.start(endless)
    step = 0
    while d.status is RUNNING:
        d = run.feed(completed(step))
        step += 1
        assert len(run.history) <= 12
    assert d.status is FAILED
    assert d.failure is not None
    assert d.failure.error_type == "durable.HistoryTooLargeError"
    assert "continue_as_new" in d.failure.message
    assert not any(isinstance(c, ScheduleActivity) for c in d.commands)


def test_a_history_that_hit_the_cap_replays_cleanly():
    options = EngineOptions(max_history_events=12)
    run = Run(endless, options=options)
    d = run.start(endless)
    step = 0
    while d.status is RUNNING:
        d = run.feed(completed(step))
        step += 1
    for opts in (options, None):  # even after the cap was raised
        decision, execution = replay(specs_of(endless), run.history, [], options=opts)
        assert execution.is_finished
        assert decision.status is FAILED
        assert decision.events == () and decision.commands == ()


def test_a_history_that_hit_the_cap_while_suspended_replays_cleanly():
    options = EngineOptions(max_history_events=10)
    run = Run(endless, options=options)
    run.start(endless)
    d = run.feed(ExecutionSuspended(timestamp=run.now))
    while d.status is OrchestrationStatus.SUSPENDED:
        d = run.feed(raised("noise"))
    assert d.failure is not None and d.failure.error_type == "durable.HistoryTooLargeError"
    decision, execution = replay(specs_of(endless), run.history, [], options=options)
    assert execution.is_finished
    assert decision.events == () and decision.commands == ()


def fan_out(ctx, _):
    return (yield when_all([ctx.call_activity("a", input=i) for i in range(5)]))


def test_cap_counts_the_commands_of_the_decision():
    run = Run(fan_out, options=EngineOptions(max_history_events=6))
    d = run.start(fan_out)
    # 2 start events + 5 scheduled + the end would make 8 > 6.
    assert d.status is FAILED
    assert d.failure is not None and d.failure.error_type == "durable.HistoryTooLargeError"
    assert len(d.events) == 3
    assert (
        Run(fan_out, options=EngineOptions(max_history_events=8)).start(fan_out).status is RUNNING
    )


@pytest.mark.parametrize("bad", [0, -1])
def test_payload_codec_rejects_a_non_positive_cap(bad):
    with pytest.raises(ValueError):
        PayloadCodec(max_bytes=bad)


def test_the_live_execution_exposes_the_instance():
    run = Run(status_board)
    run.start(status_board, instance_id="inst", execution_id="exec")
    x: Execution = run.live
    assert (x.instance_id, x.execution_id, x.name) == ("inst", "exec", "status_board")
    assert not x.is_finished
