"""What the engine keeps for each awaited call, retry and ending: plain records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable.core.commands import Command, CompleteOrchestration, ContinueAsNew, TaskCommand
from durable.core.events import (
    ContinuedAsNew,
    EventRaised,
    ExecutionCompleted,
    FailureDetails,
    HistoryEvent,
    TerminalStatus,
)
from durable.core.state import OrchestrationStatus
from durable.core.tasks import CompletableTask, RetryPolicy


@dataclass(slots=True)
class Retry:
    """The retry state of a call made with a RetryPolicy."""

    policy: RetryPolicy
    started_at: datetime
    make: Callable[[int, int], TaskCommand]
    attempt: int = 1


@dataclass(slots=True)
class Waiting:
    """A task waiting for the event that completes its sequence number."""

    task: CompletableTask[Any]
    result_type: object = Any
    what: str = ""
    retry: Retry | None = None
    retry_of: Waiting | None = None  # set on the timer that delays a retry
    command: TaskCommand | None = None  # what started it, for a rewind to run it again


@dataclass(slots=True)
class Finish:
    """How an execution ended (or is ending), before the end is recorded."""

    status: TerminalStatus | None  # None: continued as new
    output: str | None = None
    failure: FailureDetails | None = None
    new_input: str | None = None
    save_events: bool = False
    carried: list[EventRaised] = field(default_factory=list)

    def end(self, now: datetime) -> tuple[Command, HistoryEvent, OrchestrationStatus]:
        """The command, the history event and the status that record this end."""
        if self.status is None:
            carried = tuple(self.carried)
            return (
                ContinueAsNew(input=self.new_input, carried_events=carried),
                ContinuedAsNew(timestamp=now, input=self.new_input, carried_events=carried),
                OrchestrationStatus.CONTINUED_AS_NEW,
            )
        output, failure = self.output, self.failure
        return (
            CompleteOrchestration(status=self.status, result=output, failure=failure),
            ExecutionCompleted(timestamp=now, status=self.status, result=output, failure=failure),
            OrchestrationStatus(self.status),
        )


@dataclass(slots=True)
class HeldLocks:
    """The entity locks an execution asked for (`granted`: holds) in a critical section."""

    holder: str
    entities: tuple[str, ...]
    task_id: int
    granted: bool = False
