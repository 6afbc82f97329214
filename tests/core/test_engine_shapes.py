"""What an orchestrator may be: generators, plain functions, ctx-only; what it may not."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from engine_helpers import T0, Run, completed, output_of

from durable.core.commands import CompleteOrchestration, ScheduleActivity
from durable.core.engine import Execution
from durable.core.errors import InvalidTaskError
from durable.core.events import ExecutionStarted, OrchestratorStarted
from durable.core.functions import Registry, orchestrator_spec
from durable.core.state import OrchestrationStatus

COMPLETED = OrchestrationStatus.COMPLETED
FAILED = OrchestrationStatus.FAILED
RUNNING = OrchestrationStatus.RUNNING


def test_plain_function_completes_at_once():
    def plain(ctx, x: int) -> int:
        return x * 3

    d = Run(plain).start(plain, 4)
    assert d.status is COMPLETED
    assert d.commands == (CompleteOrchestration(status="COMPLETED", result="12"),)


def test_plain_function_that_raises_fails_at_once():
    def plain(ctx, x):
        raise RuntimeError(f"bad {x}")

    d = Run(plain).start(plain, 1)
    assert d.status is FAILED
    assert d.failure is not None
    assert (d.failure.error_type, d.failure.message) == ("builtins.RuntimeError", "bad 1")
    assert "RuntimeError: bad 1" in (d.failure.stack_trace or "")


def test_orchestrator_taking_only_the_context():
    def no_input(ctx):
        value = yield ctx.call_activity("a")
        return [ctx.instance_id, value]

    run = Run(no_input)
    d = run.start(no_input, instance_id="solo")
    assert d.commands == (ScheduleActivity(task_id=0, name="a"),)
    assert output_of(run.feed(completed(0, 1))) == ["solo", 1]


def test_generator_returning_at_once_completes():
    def returns_early(ctx, _):
        if True:
            return "quick"
        yield ctx.call_activity("never")

    d = Run(returns_early).start(returns_early)
    assert d.status is COMPLETED and output_of(d) == "quick"


def test_async_orchestrators_are_rejected():
    async def coroutine(ctx, _):
        return 1

    async def async_gen(ctx, _):
        yield 1

    for fn in (coroutine, async_gen):
        with pytest.raises(TypeError, match="generator"):
            orchestrator_spec(fn)


def test_lambdas_need_a_name():
    with pytest.raises(ValueError):
        orchestrator_spec(lambda ctx, x: x)
    assert orchestrator_spec(lambda ctx, x: x, name="named").name == "named"


def test_unregistered_orchestrator_fails_with_not_registered_error():
    def known(ctx, _):
        return 1

    run = Run(known)
    d = run.start("unknown")
    assert d.status is FAILED
    assert d.failure is not None
    assert d.failure.error_type == "durable.NotRegisteredError"
    assert "unknown" in d.failure.message
    assert d.failure.is_caused_by(LookupError)


def test_unregistered_orchestrator_through_a_registry_lookup():
    registry = Registry()
    d = Execution(registry.orchestrator).step(
        [
            OrchestratorStarted(timestamp=T0),
            ExecutionStarted(timestamp=T0, name="nope", instance_id="i", execution_id="e"),
        ]
    )
    assert d.failure is not None and d.failure.error_type == "durable.NotRegisteredError"


# -- yielding something that is not a task ----------------------------------------------


def test_yielding_a_non_task_throws_invalid_task_error_into_the_generator():
    def confused(ctx, _):
        a = yield ctx.call_activity("a")
        try:
            yield "not a task"
        except InvalidTaskError as e:
            message = str(e)
            caught = [
                message.startswith("orchestrator 'confused' yielded 'not a task'"),
                type(e).__name__,
            ]
        b = yield ctx.call_activity("b")
        return [a, caught, b]

    run = Run(confused)
    run.start(confused)
    d = run.feed(completed(0, "A"))
    assert d.commands == (ScheduleActivity(task_id=1, name="b"),)
    assert output_of(run.feed(completed(1, "B"))) == ["A", [True, "InvalidTaskError"], "B"]


def test_an_uncaught_invalid_yield_fails_the_orchestration():
    def confused(ctx, _):
        yield ctx.call_activity("a")
        yield 42
        yield ctx.call_activity("never")

    run = Run(confused)
    run.start(confused)
    d = run.feed(completed(0))
    assert d.status is FAILED
    assert d.failure is not None
    assert d.failure.error_type == "durable.InvalidTaskError"
    assert d.failure.is_caused_by(TypeError)
    assert not any(isinstance(c, ScheduleActivity) for c in d.commands)


def test_a_non_task_first_yield_fails_the_orchestration():
    def first_yield_bad(ctx, _):
        yield None

    d = Run(first_yield_bad).start(first_yield_bad)
    assert d.status is FAILED
    assert d.failure is not None and d.failure.error_type == "durable.InvalidTaskError"


def test_a_non_task_first_yield_can_be_caught():
    def first_yield_caught(ctx, _):
        with contextlib.suppress(InvalidTaskError):
            yield [ctx.call_activity("a")]  # a list of tasks is not a task
        return "recovered"

    d = Run(first_yield_caught).start(first_yield_caught)
    assert d.status is COMPLETED and output_of(d) == "recovered"
    # The activity was still scheduled: the call itself is valid.
    assert d.commands[0] == ScheduleActivity(task_id=0, name="a")


def test_yielding_a_non_task_twice_in_a_row_is_thrown_each_time():
    def stubborn(ctx, _):
        caught = 0
        for value in (1, "two", 3.0):
            try:
                yield value
            except InvalidTaskError:
                caught += 1
        return caught

    d = Run(stubborn).start(stubborn)
    assert output_of(d) == 3


def test_an_orchestrator_that_keeps_yielding_non_tasks_fails_instead_of_hanging() -> None:
    def stubborn(ctx: object, _: object) -> Any:
        while True:
            with contextlib.suppress(InvalidTaskError):
                yield 42

    decision = Run(stubborn).start(stubborn)
    assert decision.status is OrchestrationStatus.FAILED
    assert decision.failure is not None
    assert decision.failure.error_type == "durable.InvalidTaskError"
    assert "keeps yielding non-tasks" in decision.failure.message
