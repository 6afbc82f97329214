"""durable.testing.strategies: generated histories replay; outcomes and events are well formed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import durable
from durable import task
from durable.core.events import (
    EventRaised,
    ExecutionStarted,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
)
from durable.core.payload import PayloadCodec
from durable.testing import Replayer
from durable.testing.strategies import activity_outcomes, event_schedules, histories, payloads


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def agent(ctx: task.OrchestrationContext, n: int) -> Any:
    a = yield ctx.call_activity(double, input=n)
    go = ctx.wait_for_external_event("go")
    later = ctx.create_timer(timedelta(hours=1))
    winner = yield task.when_any([go, later])
    return [a, winner is go]


@settings(max_examples=30, deadline=None)
@given(histories(agent, activities=[double], inputs=st.integers(0, 9)))
def test_generated_histories_replay_against_their_code(history: durable.History) -> None:
    assert isinstance(history[0], OrchestratorStarted)
    assert isinstance(history[1], ExecutionStarted)
    status = Replayer([agent]).replay(history)
    assert status in (
        durable.OrchestrationStatus.RUNNING,
        durable.OrchestrationStatus.COMPLETED,
        durable.OrchestrationStatus.FAILED,
    )
    assert durable.History.from_json(history.to_json()) == history


@given(activity_outcomes(task_id=4, results=st.integers()))
def test_activity_outcomes_answer_the_given_task(event: TaskCompleted | TaskFailed) -> None:
    assert event.task_id == 4
    if isinstance(event, TaskFailed):
        assert event.failure.error_type.startswith("builtins.")


@given(event_schedules(["go", "stop"], max_size=6))
def test_event_schedules_come_in_arrival_order(
    schedule: list[tuple[timedelta, EventRaised]],
) -> None:
    delays = [delay for delay, _ in schedule]
    assert delays == sorted(delays)
    assert {e.name for _, e in schedule} <= {"go", "stop"}


@given(payloads())
def test_payloads_are_storable(value: Any) -> None:
    codec = PayloadCodec()
    assert codec.decode(codec.encode(value, "v"), Any, "v") == value
