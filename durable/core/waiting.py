"""What the engine keeps for each awaited call, retry and ending: plain records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable.core.commands import TaskCommand
from durable.core.events import EventRaised, FailureDetails, TerminalStatus
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
