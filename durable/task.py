"""The durabletask-compatible programming model: `from durable import task`."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeAlias, TypeVar

from durable.core.context import ActivityContext, OrchestrationContext
from durable.core.errors import (
    NonDeterminismError,
    OrchestrationStateError,
    TaskCancelledError,
    TaskFailedError,
)
from durable.core.events import FailureDetails
from durable.core.functions import get_name
from durable.core.logger import ReplaySafeLogger
from durable.core.tasks import (
    CancellableTask,
    CompletableTask,
    CompositeTask,
    RetryableTask,
    RetryPolicy,
    Task,
    TimerTask,
    WhenAllTask,
    WhenAnyTask,
    when_all,
    when_any,
)

TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")

Orchestrator: TypeAlias = Callable[
    [OrchestrationContext, TInput], Generator[Task[Any], Any, TOutput] | TOutput
]
"""An orchestrator: a generator function of a context and an input."""

Activity: TypeAlias = Callable[[ActivityContext, TInput], TOutput]
"""An activity: a function (plain or async) of a context and an input."""

__all__ = [
    "Activity",
    "ActivityContext",
    "CancellableTask",
    "CompletableTask",
    "CompositeTask",
    "FailureDetails",
    "NonDeterminismError",
    "OrchestrationContext",
    "OrchestrationStateError",
    "Orchestrator",
    "ReplaySafeLogger",
    "RetryPolicy",
    "RetryableTask",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TimerTask",
    "WhenAllTask",
    "WhenAnyTask",
    "get_name",
    "when_all",
    "when_any",
]
