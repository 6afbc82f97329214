"""Activities: scheduling, completion, failures as TaskFailedError, retries, payloads."""

from __future__ import annotations

from datetime import timedelta

import pytest
from engine_helpers import T0, Run, completed, failed, fired, output_of

from durable.core.commands import CompleteOrchestration, CreateTimer, ScheduleActivity
from durable.core.errors import PayloadTooLargeError, TaskFailedError
from durable.core.events import TaskScheduled, TimerCreated
from durable.core.payload import PayloadCodec
from durable.core.state import OrchestrationStatus
from durable.core.tasks import RetryPolicy

RUNNING = OrchestrationStatus.RUNNING
COMPLETED = OrchestrationStatus.COMPLETED
FAILED = OrchestrationStatus.FAILED


def double(ctx, x: int) -> int:
    return 2 * x


class QuotaError(LookupError):
    pass


# -- scheduling and completion ----------------------------------------------------------


def chain(ctx, n: int):
    a = yield ctx.call_activity(double, input=n)
    b = yield ctx.call_activity("double", input=a)
    return [a, b]


def test_activity_is_scheduled_with_its_name_and_encoded_input():
    run = Run(chain)
    d = run.start(chain, 5)
    assert d.status is RUNNING
    assert d.commands == (ScheduleActivity(task_id=0, name="double", input="5", attempt=1),)
    assert d.events[-1] == TaskScheduled(timestamp=T0, task_id=0, name="double", input="5")


def test_activity_result_is_sent_back_and_the_orchestration_completes():
    run = Run(chain)
    run.start(chain, 5)
    d = run.feed(completed(0, 10))
    assert d.commands == (ScheduleActivity(task_id=1, name="double", input="10"),)
    d = run.feed(completed(1, 20))
    assert d.status is COMPLETED
    assert output_of(d) == [10, 20]
    assert d.commands == (CompleteOrchestration(status="COMPLETED", result="[10,20]"),)


def test_completions_of_unknown_or_duplicate_tasks_are_ignored():
    run = Run(chain)
    run.start(chain, 5)
    d = run.feed(completed(7, "stray"), completed(0, 10), completed(0, 99))
    assert d.commands == (ScheduleActivity(task_id=1, name="double", input="10"),)
    assert output_of(run.feed(completed(1, 1))) == [10, 1]


def test_activity_result_is_decoded_into_the_declared_return_type():
    def typed(ctx, _):
        value = yield ctx.call_activity("a", return_type=tuple[int, int])
        return type(value).__name__

    run = Run(typed)
    run.start(typed)
    assert output_of(run.feed(completed(0, [1, 2]))) == "tuple"


def test_result_that_does_not_fit_the_type_fails_the_task():
    def typed(ctx, _):
        try:
            yield ctx.call_activity("a", return_type=int)
        except TaskFailedError as e:
            return e.details.error_type
        return "no error"

    run = Run(typed)
    run.start(typed)
    assert output_of(run.feed(completed(0, "not an int"))) == "durable.PayloadDecodeError"


# -- failures ---------------------------------------------------------------------------


def catch_failure(ctx, _):
    try:
        yield ctx.call_activity("fetch")
    except TaskFailedError as e:
        d = e.details
        return {
            "message": str(e),
            "type": d.error_type,
            "detail_message": d.message,
            "trace": d.stack_trace,
            "by_type": d.is_caused_by(QuotaError),
            "by_base": d.is_caused_by(LookupError),
            "by_exception": d.is_caused_by(Exception),
            "by_other": d.is_caused_by(ValueError),
            "by_short_name": d.is_caused_by("QuotaError"),
            "by_base_name": d.is_caused_by("builtins.LookupError"),
            "by_other_name": d.is_caused_by("builtins.KeyError"),
        }
    return None


def test_activity_failure_is_raised_as_task_failed_error_with_details():
    run = Run(catch_failure)
    run.start(catch_failure)
    d = run.feed(failed(0, QuotaError("over quota")))
    assert d.status is COMPLETED
    out = output_of(d)
    assert out["type"] == f"{QuotaError.__module__}.QuotaError"
    assert out["detail_message"] == "over quota"
    assert "QuotaError: over quota" in out["trace"]
    assert "over quota" in out["message"]
    assert out["by_type"] and out["by_base"] and out["by_exception"]
    assert out["by_short_name"] and out["by_base_name"]
    assert not out["by_other"] and not out["by_other_name"]


def test_builtin_errors_are_named_fully_qualified():
    run = Run(catch_failure)
    run.start(catch_failure)
    out = output_of(run.feed(failed(0, ValueError("bad"))))
    assert out["type"] == "builtins.ValueError"
    assert not out["by_base"]


def test_uncaught_task_failure_fails_the_orchestration_with_the_cause():
    run = Run(chain)
    run.start(chain, 1)
    d = run.feed(failed(0, ValueError("boom")))
    assert d.status is FAILED
    assert d.failure is not None
    assert d.failure.error_type == "durable.TaskFailedError"
    assert d.failure.inner is not None
    assert d.failure.inner.error_type == "builtins.ValueError"
    assert d.failure.inner.message == "boom"
    assert d.commands == (CompleteOrchestration(status="FAILED", failure=d.failure),)


def test_is_caused_by_rejects_what_is_not_an_error_type():
    run = Run(chain)
    run.start(chain, 1)
    failure = run.feed(failed(0, ValueError("boom"))).failure
    assert failure is not None and failure.inner is not None
    assert failure.is_caused_by("TaskFailedError")
    with pytest.raises(TypeError):
        failure.inner.is_caused_by(42)  # type: ignore[arg-type]


# -- retries ----------------------------------------------------------------------------


def with_retry(policy: RetryPolicy):
    def retried(ctx, _):
        try:
            return (yield ctx.call_activity("flaky", input="x", retry_policy=policy))
        except TaskFailedError as e:
            return f"gave up: {e.details.error_type}"

    return retried


def test_retry_waits_on_a_durable_timer_then_schedules_the_next_attempt():
    orch = with_retry(RetryPolicy(timedelta(seconds=5), max_number_of_attempts=3))
    run = Run(orch)
    run.start(orch)
    now = T0 + timedelta(minutes=1)
    d = run.feed(failed(0, ValueError("1")), at=now)
    assert d.commands == (CreateTimer(task_id=1, fire_at=now + timedelta(seconds=5)),)
    assert d.events[-1] == TimerCreated(
        timestamp=now, task_id=1, fire_at=now + timedelta(seconds=5)
    )
    d = run.feed(fired(1, now + timedelta(seconds=5)))
    assert d.commands == (ScheduleActivity(task_id=2, name="flaky", input='"x"', attempt=2),)
    d = run.feed(completed(2, "ok"))
    assert output_of(d) == "ok"


def test_retry_gives_up_after_max_attempts_with_the_last_failure():
    orch = with_retry(RetryPolicy(timedelta(seconds=1), max_number_of_attempts=2))
    run = Run(orch)
    run.start(orch)
    run.feed(failed(0, ValueError("first")))
    d = run.feed(fired(1))
    assert d.commands[0].attempt == 2  # type: ignore[union-attr]
    d = run.feed(failed(2, KeyError("second")))
    assert output_of(d) == "gave up: builtins.KeyError"


def retry_delays(policy: RetryPolicy, failures: int) -> list[timedelta]:
    """Fail every attempt at one-second spacing; return each retry timer's delay."""
    orch = with_retry(policy)
    run = Run(orch)
    run.start(orch)
    delays = []
    task = 0
    for _ in range(failures):
        d = run.feed(failed(task, ValueError("again")))
        timers = [c for c in d.commands if isinstance(c, CreateTimer)]
        if not timers:
            break
        delays.append(timers[0].fire_at - run.now)
        d = run.feed(fired(timers[0].task_id))
        task = d.commands[0].task_id  # type: ignore[union-attr]
    return delays


def test_backoff_coefficient_grows_the_delay_geometrically():
    policy = RetryPolicy(timedelta(seconds=2), max_number_of_attempts=5, backoff_coefficient=3)
    assert retry_delays(policy, 5) == [timedelta(seconds=s) for s in (2, 6, 18, 54)]


def test_max_retry_interval_caps_the_delay():
    policy = RetryPolicy(
        timedelta(seconds=2),
        max_number_of_attempts=5,
        backoff_coefficient=3,
        max_retry_interval=timedelta(seconds=10),
    )
    assert retry_delays(policy, 5) == [timedelta(seconds=s) for s in (2, 6, 10, 10)]


def test_retry_timeout_is_measured_in_history_time():
    policy = RetryPolicy(
        timedelta(seconds=10), max_number_of_attempts=10, retry_timeout=timedelta(minutes=1)
    )
    orch = with_retry(policy)
    run = Run(orch)
    run.start(orch)  # first attempt scheduled at T0
    d = run.feed(failed(0, ValueError("1")), at=T0 + timedelta(seconds=40))
    assert d.commands == (CreateTimer(task_id=1, fire_at=T0 + timedelta(seconds=50)),)
    run.feed(fired(1), at=T0 + timedelta(seconds=50))
    # 51 s + 10 s would start the next attempt after T0 + 60 s: no more retries.
    d = run.feed(failed(2, ValueError("2")), at=T0 + timedelta(seconds=51))
    assert output_of(d) == "gave up: builtins.ValueError"


def test_retry_timeout_allows_a_retry_ending_exactly_at_the_deadline():
    policy = RetryPolicy(
        timedelta(seconds=10), max_number_of_attempts=10, retry_timeout=timedelta(minutes=1)
    )
    orch = with_retry(policy)
    run = Run(orch)
    run.start(orch)
    d = run.feed(failed(0, ValueError("1")), at=T0 + timedelta(seconds=50))
    assert d.commands == (CreateTimer(task_id=1, fire_at=T0 + timedelta(seconds=60)),)


@pytest.mark.parametrize("kind", [QuotaError, "QuotaError", LookupError, "builtins.LookupError"])
def test_non_retryable_errors_fail_at_once(kind):
    policy = RetryPolicy(
        timedelta(seconds=1), max_number_of_attempts=5, non_retryable_error_types=[kind]
    )
    orch = with_retry(policy)
    run = Run(orch)
    run.start(orch)
    d = run.feed(failed(0, QuotaError("no")))
    assert output_of(d).startswith("gave up")
    assert not any(isinstance(c, CreateTimer) for c in d.commands)


def test_errors_not_listed_as_non_retryable_are_retried():
    policy = RetryPolicy(
        timedelta(seconds=1), max_number_of_attempts=5, non_retryable_error_types=[KeyError]
    )
    orch = with_retry(policy)
    run = Run(orch)
    run.start(orch)
    d = run.feed(failed(0, ValueError("retry me")))
    assert [type(c) for c in d.commands] == [CreateTimer]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_number_of_attempts": 0},
        {"max_number_of_attempts": 2, "backoff_coefficient": 0.5},
        {"max_number_of_attempts": 2, "max_retry_interval": timedelta(seconds=-1)},
        {"max_number_of_attempts": 2, "retry_timeout": timedelta(seconds=-1)},
    ],
)
def test_invalid_retry_policies_are_rejected(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(timedelta(seconds=1), **kwargs)


# -- payloads ---------------------------------------------------------------------------


def test_unencodable_output_fails_the_orchestration_with_payload_encode_error():
    def returns_object(ctx, _):
        yield ctx.call_activity("a")
        return object()

    run = Run(returns_object)
    run.start(returns_object)
    d = run.feed(completed(0))
    assert d.status is FAILED
    assert d.failure is not None
    assert d.failure.error_type == "durable.PayloadEncodeError"
    assert d.failure.is_caused_by(TypeError)


def test_oversize_activity_input_raises_inside_the_orchestrator():
    def too_big(ctx, _):
        try:
            yield ctx.call_activity("a", input="x" * 200)
        except PayloadTooLargeError as e:
            return f"caught: {'over the cap' in str(e)}"
        return "sent"

    run = Run(too_big, codec=PayloadCodec(max_bytes=100))
    d = run.start(too_big)
    assert d.status is COMPLETED
    assert output_of(d) == "caught: True"
    assert not any(isinstance(c, ScheduleActivity) for c in d.commands)


def test_uncaught_oversize_input_fails_the_orchestration():
    def too_big(ctx, _):
        yield ctx.call_activity("a", input="x" * 200)

    run = Run(too_big, codec=PayloadCodec(max_bytes=100))
    d = run.start(too_big)
    assert d.status is FAILED
    assert d.failure is not None and d.failure.error_type == "durable.PayloadTooLargeError"


def test_orchestrator_input_that_does_not_fit_its_annotation_fails_the_orchestration():
    def wants_int(ctx, n: int):
        return n + 1

    run = Run(wants_int)
    d = run.start(wants_int, raw_input='"seven"')
    assert d.status is FAILED
    assert d.failure is not None and d.failure.error_type == "durable.PayloadDecodeError"
    assert d.output is None
