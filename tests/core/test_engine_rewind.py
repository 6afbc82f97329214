"""Rewind: a failed execution runs on from its failure; only the failed steps run again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine_helpers import T0, Run, completed, details_of, enc, failed, output_of, specs_of

from durable.core import tasks
from durable.core.commands import ScheduleActivity, StartChildOrchestration
from durable.core.decision import Decision
from durable.core.engine import Execution, replay
from durable.core.events import (
    ChildOrchestrationFailed,
    ExecutionCompleted,
    ExecutionRewound,
    HistoryEvent,
    OrchestratorStarted,
)
from durable.core.history import cancelled_events
from durable.core.state import OrchestrationStatus as S


def chain(ctx, _):
    a = yield ctx.call_activity("a")
    b = yield ctx.call_activity("b", input=a)
    return [a, b]


def fan_out(ctx, _):
    return (yield tasks.when_all([ctx.call_activity(n) for n in ("a", "b", "c")]))


def handles_a_failure(ctx, _):
    try:
        yield ctx.call_activity("flaky")
    except tasks.TaskFailedError:
        x = None  # handled: the code goes on
    x = x or (yield ctx.call_activity("fallback"))
    y = yield ctx.call_activity("last")
    return [x, y]


def parent(ctx, _):
    a = yield ctx.call_activity("a")
    child = yield ctx.call_sub_orchestrator("worker", input=a, instance_id="child")
    return [a, child]


def rewind(run: Run) -> Decision:
    """Rewind a failed run as a worker does: full replay, then the rewound event."""
    execution = Execution(run.specs)
    execution.replay(run.history, rewinding=True)
    batch: list[HistoryEvent] = [OrchestratorStarted(timestamp=T0), ExecutionRewound(timestamp=T0)]
    decision = execution.step(batch)
    run.history.extend(decision.events)
    run.live = execution
    return decision


def names(decision: Decision) -> list[tuple[int, str]]:
    return [
        (c.task_id, c.name if isinstance(c, ScheduleActivity) else f"child:{c.instance_id}")
        for c in decision.reruns
    ]


def finish_checks(run: Run, final: Decision, *code: Callable[..., Any]) -> None:
    # A later full replay of the history, failure and rewind included, agrees.
    again, _ = replay(specs_of(*code) if code else run.specs, run.history, [])
    assert again.status is final.status
    assert again.commands == ()


def test_a_failed_step_runs_again_and_the_completed_ones_keep_their_results() -> None:
    run = Run(chain)
    run.start(chain)
    run.feed(completed(0, "A"))
    assert run.feed(failed(1, ValueError("quota"))).status is S.FAILED
    decision = rewind(run)
    assert decision.status is S.RUNNING
    assert names(decision) == [(1, "b")]
    assert decision.commands == ()  # recorded already: no new TaskScheduled
    assert [type(e) for e in decision.events] == [OrchestratorStarted, ExecutionRewound]
    final = run.feed(completed(1, "B"))
    assert final.status is S.COMPLETED and output_of(final) == ["A", "B"]
    finish_checks(run, final)


def test_the_history_keeps_the_failure_it_cancels() -> None:
    run = Run(chain)
    run.start(chain)
    run.feed(completed(0, "A"))
    run.feed(failed(1, ValueError("quota")))
    before = list(run.history)
    rewind(run)
    assert run.history[: len(before)] == before  # append-only
    ends = [i for i, e in enumerate(run.history) if isinstance(e, ExecutionCompleted)]
    assert cancelled_events(run.history) == {ends[0], ends[0] - 1}
    rewound = run.history[-1]
    assert isinstance(rewound, ExecutionRewound) and rewound.cancels == (ends[0] - 1, ends[0])


def test_siblings_without_results_run_again_with_the_failed_one() -> None:
    run = Run(fan_out)
    run.start(fan_out)
    # when_all waits for every child, then fails with the first failure
    assert run.feed(completed(0, "A"), failed(1, KeyError("b"))).status is S.RUNNING
    assert run.feed(failed(2, KeyError("c"))).status is S.FAILED
    decision = rewind(run)
    assert names(decision) == [(1, "b"), (2, "c")]
    final = run.feed(completed(1, "B"), completed(2, "C"))
    assert output_of(final) == ["A", "B", "C"]
    finish_checks(run, final)


def test_a_result_that_arrived_while_failed_is_used_not_rerun() -> None:
    def two_calls(ctx, _):
        a = ctx.call_activity("a")
        b = ctx.call_activity("b")
        return [(yield b), (yield a)]

    run = Run(two_calls)
    run.start(two_calls)
    assert run.feed(failed(1, KeyError("b"))).status is S.FAILED  # "a" still in flight
    execution = Execution(run.specs)
    execution.replay(run.history, rewinding=True)
    decision = execution.step(
        [OrchestratorStarted(timestamp=T0), completed(0, "A"), ExecutionRewound(timestamp=T0)]
    )
    assert names(decision) == [(1, "b")]


def test_failures_the_code_handled_earlier_stay_as_recorded() -> None:
    run = Run(handles_a_failure)
    run.start(handles_a_failure)
    run.feed(failed(0, RuntimeError("flaky")))
    run.feed(completed(1, "X"))
    assert run.feed(failed(2, RuntimeError("last"))).status is S.FAILED
    decision = rewind(run)
    assert names(decision) == [(2, "last")]
    final = run.feed(completed(2, "Y"))
    assert output_of(final) == ["X", "Y"]
    finish_checks(run, final)


def test_a_failed_child_is_rewound_too() -> None:
    run = Run(parent)
    run.start(parent)
    run.feed(completed(0, 1))
    child_failed = ChildOrchestrationFailed(
        timestamp=T0, task_id=1, failure=details_of(RuntimeError("child broke"))
    )
    assert run.feed(child_failed).status is S.FAILED
    decision = rewind(run)
    assert decision.reruns == (
        StartChildOrchestration(task_id=1, name="worker", instance_id="child", input=enc(1)),
    )


def test_fixed_code_carries_on_after_a_bug_failed_the_orchestration() -> None:
    def buggy(ctx, _):
        a = yield ctx.call_activity("a")
        raise ZeroDivisionError(a)

    def fixed(ctx, _):
        a = yield ctx.call_activity("a")
        b = yield ctx.call_activity("b")
        return [a, b]

    fixed.__name__ = buggy.__name__ = "agent"
    run = Run(buggy)
    run.start("agent")
    assert run.feed(completed(0, "A")).status is S.FAILED
    run.specs = specs_of(fixed)
    decision = rewind(run)
    assert decision.reruns == ()
    assert [c.name for c in decision.commands if isinstance(c, ScheduleActivity)] == ["b"]
    final = run.feed(completed(1, "B"))
    assert output_of(final) == ["A", "B"]
    finish_checks(run, final, fixed)


def test_it_can_fail_and_be_rewound_again() -> None:
    run = Run(chain)
    run.start(chain)
    run.feed(completed(0, "A"))
    run.feed(failed(1, ValueError("one")))
    rewind(run)
    assert run.feed(failed(1, ValueError("two"))).status is S.FAILED
    assert names(rewind(run)) == [(1, "b")]
    final = run.feed(completed(1, "B"))
    assert output_of(final) == ["A", "B"]
    finish_checks(run, final)


def test_a_rewind_after_a_completed_end_changes_nothing() -> None:
    run = Run(chain)
    run.start(chain)
    run.feed(completed(0, "A"))
    run.feed(completed(1, "B"))
    decision = rewind(run)
    assert cancelled_events(run.history) == set()
    assert decision.status is S.COMPLETED and decision.reruns == () and decision.commands == ()


def test_a_rewind_before_the_fix_records_the_new_failure_and_a_later_rewind_works() -> None:
    def buggy(ctx, _):
        a = yield ctx.call_activity("extract")
        return a / 0

    def fixed(ctx, _):
        a = yield ctx.call_activity("extract")
        return [a, (yield ctx.call_activity("transform"))]

    buggy.__name__ = fixed.__name__ = "pipeline"
    run = Run(buggy)
    run.start("pipeline")
    assert run.feed(completed(0, 5)).status is S.FAILED
    again = rewind(run)  # the fix is not deployed yet: it fails the same way
    assert again.status is S.FAILED
    kinds = [type(e) for e in again.events]
    assert kinds == [OrchestratorStarted, ExecutionRewound, ExecutionCompleted]
    run.specs = specs_of(fixed)
    decision = rewind(run)  # now with the fix
    assert decision.status is S.RUNNING
    final = run.feed(completed(1, "T"))
    assert output_of(final) == [5, "T"]
    finish_checks(run, final, fixed)


def test_a_result_that_did_not_decode_is_run_again_by_a_rewind() -> None:
    def typed(ctx, _):
        return (yield ctx.call_activity("price_of", return_type=int))

    run = Run(typed)
    run.start(typed)
    assert run.feed(completed(0, "twelve")).status is S.FAILED
    decision = rewind(run)
    assert names(decision) == [(0, "price_of")]
    final = run.feed(completed(0, 12))
    assert output_of(final) == 12
    finish_checks(run, final)
