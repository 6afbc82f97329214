"""Tasks an orchestrator yields, their composition, and retry policies."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from durable.core.errors import (
    DurableError,
    InvalidTaskError,
    TaskCancelledError,
    TaskFailedError,
)
from durable.core.events import FailureDetails

T = TypeVar("T")


class Task(Generic[T]):
    """Something an orchestrator can `yield` and later get a result or an error from."""

    def __init__(self) -> None:
        self._is_complete = False
        self._result: T | None = None
        self._exception: DurableError | None = None
        self._parents: list[CompositeTask[Any]] = []

    @property
    def is_complete(self) -> bool:
        """True once the task has a result, an error, or was cancelled."""
        return self._is_complete

    @property
    def is_failed(self) -> bool:
        """True if the task failed (cancellation is not failure)."""
        return isinstance(self._exception, TaskFailedError)

    @property
    def result(self) -> T:
        """The result; the same as `get_result()`."""
        return self.get_result()

    def get_result(self) -> T:
        """The task's result.

        Raises:
            ValueError: the task is not complete yet.
            TaskFailedError: the task failed.
            TaskCancelledError: the task was cancelled.
        """
        if not self._is_complete:
            raise ValueError("the task has not completed")
        if self._exception is not None:
            raise self._exception
        return cast(T, self._result)

    def get_exception(self) -> TaskFailedError:
        """The error of a failed task.

        Raises:
            ValueError: the task has not failed.
        """
        if not isinstance(self._exception, TaskFailedError):
            raise ValueError("the task has not failed")
        return self._exception

    def _settle(self, result: T | None, exception: DurableError | None) -> None:
        if self._is_complete:
            return
        self._result = result
        self._exception = exception
        self._is_complete = True
        for parent in self._parents:
            parent.on_child_completed(self)


class CompletableTask(Task[T]):
    """A task completed by one history event (an activity, a child, an event, a timer)."""

    def complete(self, result: T) -> None:
        """Complete the task with `result`."""
        self._settle(result, None)

    def fail(self, message: str, details: FailureDetails) -> None:
        """Fail the task; the orchestrator sees `TaskFailedError(message)` with `details`."""
        self._settle(None, TaskFailedError(message, details))


class CancellableTask(CompletableTask[T]):
    """A task the orchestrator may give up on: a timer or an external event wait."""

    def __init__(self) -> None:
        super().__init__()
        self._is_cancelled = False
        self._on_cancel: Callable[[], None] | None = None

    @property
    def is_cancelled(self) -> bool:
        """True if `cancel()` took effect."""
        return self._is_cancelled

    def cancel(self) -> bool:
        """Give up on the task; its result raises `TaskCancelledError` from now on.

        Returns:
            True if cancelled, False if the task had already completed.
        """
        if self._is_complete:
            return False
        self._is_cancelled = True
        if self._on_cancel is not None:
            self._on_cancel()
        self._settle(None, TaskCancelledError("the task was cancelled"))
        return True


class TimerTask(CancellableTask[None]):
    """A durable timer; completes with None at its `fire_at` time."""

    def __init__(self, fire_at: datetime) -> None:
        super().__init__()
        self.fire_at = fire_at


class RetryableTask(CompletableTask[T]):
    """An activity or child orchestration that is retried by its `RetryPolicy`."""

    def __init__(self, policy: RetryPolicy, started_at: datetime) -> None:
        super().__init__()
        self.policy = policy
        self.started_at = started_at
        self.attempt = 1


class CompositeTask(Task[T]):
    """A task made of other tasks."""

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        super().__init__()
        self._tasks = list(tasks)
        for t in self._tasks:
            if not isinstance(t, Task):
                raise TypeError(f"expected tasks, got {t!r}")
        self._completed = 0
        for t in self._tasks:
            t._parents.append(self)
        for t in self._tasks:
            if t.is_complete:
                self.on_child_completed(t)

    def get_tasks(self) -> list[Task[Any]]:
        """The child tasks, in the order given."""
        return list(self._tasks)

    def on_child_completed(self, task: Task[Any]) -> None:
        """Called once for each child when it completes."""
        raise NotImplementedError


class WhenAllTask(CompositeTask[list[T]]):
    """Completes when every child has; then fails with the first failure, if any."""

    def __init__(self, tasks: Sequence[Task[T]]) -> None:
        self._first_error: DurableError | None = None
        super().__init__(tasks)
        if not self._tasks:
            self._settle([], None)

    @property
    def pending_tasks(self) -> int:
        """How many children have not completed."""
        return len(self._tasks) - self._completed

    def on_child_completed(self, task: Task[Any]) -> None:
        self._completed += 1
        if task._exception is not None and self._first_error is None:
            self._first_error = task._exception
        if self._completed == len(self._tasks):
            if self._first_error is not None:
                self._settle(None, self._first_error)
            else:
                self._settle([cast(T, t._result) for t in self._tasks], None)


class WhenAnyTask(CompositeTask[Task[T]]):
    """Completes with the first child to complete (successfully or not)."""

    def __init__(self, tasks: Sequence[Task[T]]) -> None:
        if not tasks:
            raise ValueError("when_any() needs at least one task; it would never complete")
        super().__init__(tasks)

    def on_child_completed(self, task: Task[Any]) -> None:
        self._completed += 1
        self._settle(cast(Task[T], task), None)


def when_all(tasks: Sequence[Task[T]]) -> WhenAllTask[T]:
    """A task whose result is the list of the children's results, in input order.

    It waits for every child, then raises the first failure (in completion order), if any.
    `when_all([])` completes at once with `[]`.
    """
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[T]]) -> WhenAnyTask[T]:
    """A task whose result is the first child task to complete.

    Raises:
        ValueError: `tasks` is empty.
    """
    return WhenAnyTask(tasks)


@dataclass(frozen=True, init=False)
class RetryPolicy:
    """How an activity or child orchestration is retried after a failure.

    The delay before attempt n+1 is `first_retry_interval * backoff_coefficient**(n-1)`,
    capped by `max_retry_interval`. Retries wait on durable timers, and every decision
    uses history time, never the wall clock.

    Args:
        first_retry_interval: the delay before the second attempt.
        max_number_of_attempts: attempts in all, the first included (1 = no retry).
        backoff_coefficient: growth of the delay per attempt (>= 1).
        max_retry_interval: the largest delay.
        retry_timeout: no retry starts later than this after the first attempt began.
        non_retryable_error_types: errors (types or names) that fail at once.
    """

    first_retry_interval: timedelta
    max_number_of_attempts: int
    backoff_coefficient: float
    max_retry_interval: timedelta | None
    retry_timeout: timedelta | None
    non_retryable_error_types: tuple[type[BaseException] | str, ...]

    def __init__(  # noqa: PLR0917 - API.md gives these positionally
        self,
        first_retry_interval: timedelta,
        max_number_of_attempts: int,
        backoff_coefficient: float | None = 1.0,
        max_retry_interval: timedelta | None = None,
        retry_timeout: timedelta | None = None,
        non_retryable_error_types: Sequence[type[BaseException] | str] = (),
    ) -> None:
        coefficient = 1.0 if backoff_coefficient is None else backoff_coefficient
        zero = timedelta(0)
        if first_retry_interval < zero:
            raise ValueError("first_retry_interval must be >= 0")
        if max_number_of_attempts < 1:
            raise ValueError("max_number_of_attempts must be >= 1")
        if not coefficient >= 1.0:
            raise ValueError("backoff_coefficient must be >= 1")
        if max_retry_interval is not None and max_retry_interval < zero:
            raise ValueError("max_retry_interval must be >= 0")
        if retry_timeout is not None and retry_timeout < zero:
            raise ValueError("retry_timeout must be >= 0")
        if isinstance(non_retryable_error_types, (str, type)):
            raise TypeError("non_retryable_error_types must be a sequence of types or names")
        put = object.__setattr__
        put(self, "first_retry_interval", first_retry_interval)
        put(self, "max_number_of_attempts", max_number_of_attempts)
        put(self, "backoff_coefficient", coefficient)
        put(self, "max_retry_interval", max_retry_interval)
        put(self, "retry_timeout", retry_timeout)
        put(self, "non_retryable_error_types", tuple(non_retryable_error_types))

    def delay_before(self, attempt: int) -> timedelta:
        """The delay after failed attempt `attempt` (1-based) before the next one."""
        seconds = self.first_retry_interval.total_seconds() * math.pow(
            self.backoff_coefficient, attempt - 1
        )
        if self.max_retry_interval is not None:
            seconds = min(seconds, self.max_retry_interval.total_seconds())
        # Large exponents overflow timedelta; the cap (or a century) bounds them.
        return timedelta(seconds=min(seconds, 100 * 365 * 86400.0))

    def next_delay(
        self, attempt: int, failure: FailureDetails, started_at: datetime, now: datetime
    ) -> timedelta | None:
        """The delay before retrying after `attempt` failed with `failure`, or None to stop.

        Args:
            attempt: the attempt that failed, 1-based.
            failure: how it failed.
            started_at: history time when the first attempt was scheduled.
            now: history time when the failure was seen.
        """
        if attempt >= self.max_number_of_attempts:
            return None
        if any(failure.is_caused_by(t) for t in self.non_retryable_error_types):
            return None
        delay = self.delay_before(attempt)
        if self.retry_timeout is not None and now + delay > started_at + self.retry_timeout:
            return None
        return delay


def invalid_yield(name: str, yielded: object) -> InvalidTaskError:
    """The error thrown into an orchestrator that yielded something other than a task."""
    return InvalidTaskError(
        f"orchestrator {name!r} yielded {yielded!r} ({type(yielded).__qualname__}); yield "
        "only tasks: ctx.call_activity(...), ctx.create_timer(...), "
        "ctx.wait_for_external_event(...), ctx.call_sub_orchestrator(...), when_all(...) "
        "or when_any(...)"
    )


# -- resuming a generator with a task's outcome ----------------------------------------


def sender(gen: Generator[Any, Any, Any], value: object) -> Callable[[], Any]:
    return lambda: gen.send(value)


def thrower(gen: Generator[Any, Any, Any], error: BaseException) -> Callable[[], Any]:
    return lambda: gen.throw(error)


def fresh(error: BaseException) -> BaseException:
    # Each throw gets its own exception object so tracebacks never accumulate across throws.
    if isinstance(error, TaskFailedError):
        return TaskFailedError(str(error), error.details)
    if isinstance(error, TaskCancelledError):
        return TaskCancelledError(str(error))
    return error
