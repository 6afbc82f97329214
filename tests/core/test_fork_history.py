"""fork_history: the prefix of a history, as the start of a new instance's own history."""

from __future__ import annotations

import pytest
from engine_helpers import Run, completed, failed

from durable.core.events import (
    ChildOrchestrationCreated,
    EventSent,
    ExecutionCompleted,
    ExecutionStarted,
    ParentInstance,
)
from durable.core.history import fork_history


def family(ctx, _):
    ctx.send_event(ctx.instance_id, "note")
    a = yield ctx.call_sub_orchestrator("kid")
    b = yield ctx.call_sub_orchestrator("kid", instance_id="named")
    return [a, b]


def run_family() -> Run:
    run = Run(family)
    run.start(
        family,
        instance_id="orig",
        parent=ParentInstance(instance_id="p", execution_id="e", task_id=1),
    )
    run.feed(completed(0))
    return run


def test_ids_that_name_the_original_become_the_fork_s() -> None:
    run = run_family()
    events = fork_history(run.history, len(run.history), "new", "x1")
    start = next(e for e in events if isinstance(e, ExecutionStarted))
    assert (start.instance_id, start.execution_id, start.parent) == ("new", "x1", None)
    sent = [e for e in events if isinstance(e, EventSent)]
    assert [e.instance_id for e in sent] == ["new"]
    children = [e.instance_id for e in events if isinstance(e, ChildOrchestrationCreated)]
    assert children == ["new:0001"]  # a default child id; explicit ones stay as they were


def test_the_start_is_always_kept_and_at_is_checked() -> None:
    run = run_family()
    assert any(isinstance(e, ExecutionStarted) for e in fork_history(run.history, 1, "n", "x"))
    for at in (0, len(run.history) + 1):
        with pytest.raises(ValueError, match="between 1 and"):
            fork_history(run.history, at, "n", "x")


def chain(ctx, _):
    a = yield ctx.call_activity("a")
    return a


def test_a_finished_end_at_the_cut_is_dropped_but_a_failed_one_stays() -> None:
    ok = Run(chain)
    ok.start(chain)
    ok.feed(completed(0, 1))
    assert not isinstance(
        fork_history(ok.history, len(ok.history), "n", "x")[-1], ExecutionCompleted
    )
    bad = Run(chain)
    bad.start(chain)
    bad.feed(failed(0, ValueError("no")))
    end = fork_history(bad.history, len(bad.history), "n", "x")[-1]
    assert isinstance(end, ExecutionCompleted) and end.status == "FAILED"
