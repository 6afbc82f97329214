"""History events: the append-only record of everything that happened to an instance."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def qualified_name(cls: type) -> str:
    """The `module.QualName` of a type, as failure details record it."""
    return f"{cls.__module__}.{cls.__qualname__}"


class FailureDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a task or an orchestration failed.

    Attributes:
        message: the error's message.
        error_type: the fully qualified type name, like `builtins.ValueError`.
        stack_trace: the formatted traceback, if any.
        base_types: qualified names of the error type's bases, nearest first, so that
            `is_caused_by` matches subclasses without importing anything.
        inner: the failure that caused this one (a task failure inside an orchestration).
    """

    message: str
    error_type: str
    stack_trace: str | None = None
    base_types: tuple[str, ...] = ()
    inner: FailureDetails | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> FailureDetails:
        """Describe `exc`, including its traceback and, for task failures, the cause."""
        mro = type(exc).__mro__
        inner = getattr(exc, "details", None)
        return cls(
            message=str(exc),
            error_type=qualified_name(type(exc)),
            stack_trace="".join(traceback.format_exception(exc)) or None,
            base_types=tuple(qualified_name(b) for b in mro[1:] if b is not object),
            inner=inner if isinstance(inner, FailureDetails) else None,
        )

    def is_caused_by(self, error_type: type[BaseException] | str) -> bool:
        """Whether this failure is of `error_type` or a subclass of it.

        Args:
            error_type: an exception type, or its name, qualified (`builtins.KeyError`)
                or not (`KeyError`).

        Returns:
            True if the failed error's type or one of its bases matches.
        """
        names = (self.error_type, *self.base_types)
        if isinstance(error_type, str):
            if "." in error_type:
                return error_type in names
            return any(n.rsplit(".", 1)[-1] == error_type for n in names)
        if not (isinstance(error_type, type) and issubclass(error_type, BaseException)):
            raise TypeError(f"is_caused_by expects an exception type or a name, got {error_type!r}")
        return qualified_name(error_type) in names


class _Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    timestamp: datetime


class ParentInstance(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a child orchestration reports its result."""

    instance_id: str
    execution_id: str
    task_id: int


class ExecutionStarted(_Event, tag=True, frozen=True):
    """The first event of every execution: what runs, with which input."""

    name: str
    instance_id: str
    execution_id: str
    input: str | None = None
    parent: ParentInstance | None = None
    scheduled_start: datetime | None = None
    trace: str | None = None
    """The W3C traceparent of the span that started it (`durable.tracing`), if any."""


class OrchestratorStarted(_Event, tag=True, frozen=True):
    """Opens a decision; its timestamp is the orchestrator's `current_utc_datetime`."""


class TaskScheduled(_Event, tag=True, frozen=True):
    task_id: int
    name: str
    input: str | None = None
    attempt: int = 1


class TaskCompleted(_Event, tag=True, frozen=True):
    task_id: int
    result: str | None = None


class TaskFailed(_Event, tag=True, frozen=True):
    task_id: int
    failure: FailureDetails


class TimerCreated(_Event, tag=True, frozen=True):
    task_id: int
    fire_at: datetime


class TimerFired(_Event, tag=True, frozen=True):
    task_id: int
    fire_at: datetime


class ChildOrchestrationCreated(_Event, tag=True, frozen=True):
    task_id: int
    name: str
    instance_id: str
    input: str | None = None


class ChildOrchestrationCompleted(_Event, tag=True, frozen=True):
    task_id: int
    result: str | None = None


class ChildOrchestrationFailed(_Event, tag=True, frozen=True):
    task_id: int
    failure: FailureDetails


class EventRaised(_Event, tag=True, frozen=True):
    name: str
    input: str | None = None


class EventSent(_Event, tag=True, frozen=True):
    task_id: int
    instance_id: str
    name: str
    input: str | None = None


class EntityOperationCalled(_Event, tag=True, frozen=True):
    """An orchestration called an operation of an entity (`entity`: `@name@key`) and waits
    for its result."""

    task_id: int
    entity: str
    operation: str
    input: str | None = None


class EntityOperationSignaled(_Event, tag=True, frozen=True):
    """An orchestration sent an entity a one-way operation (delivered at `signal_time`)."""

    task_id: int
    entity: str
    operation: str
    input: str | None = None
    signal_time: datetime | None = None


class EntityOperationCompleted(_Event, tag=True, frozen=True):
    """The result of an entity operation an orchestration called."""

    task_id: int
    result: str | None = None


class EntityOperationFailed(_Event, tag=True, frozen=True):
    """An entity operation an orchestration called raised; `failure.inner` is its error."""

    task_id: int
    failure: FailureDetails


class EntityLockRequested(_Event, tag=True, frozen=True):
    """An orchestration asked for the locks of `entities` (`@name@key`, sorted: the one
    order every lock is taken in)."""

    task_id: int
    entities: tuple[str, ...]


class EntityLockGranted(_Event, tag=True, frozen=True):
    """Every entity of a lock request is locked for the orchestration that asked."""

    task_id: int


class EntityUnlockSent(_Event, tag=True, frozen=True):
    """An orchestration released the locks of `entities` (held, or still asked for)."""

    task_id: int
    entities: tuple[str, ...]


class EntityRequest(_Event, tag=True, frozen=True):
    """An operation for an entity, from a client, an orchestration or an entity: its
    message, never part of an orchestration's history. `caller` waits for the result;
    without one it is a signal.

    A lock request (`lock_action="lock"`) locks the entity for the critical section `holder`,
    then goes on to the next of `lock_next`, or, from the last, tells `caller` that it
    holds them all. While an entity is locked it runs only the requests of its holder
    (the operations an orchestration sends from inside its critical section carry it);
    the others wait, in order, until the holder's unlock request (`lock_action="unlock"`).
    """

    request_id: str
    operation: str
    input: str | None = None
    caller: ParentInstance | None = None
    lock_action: Literal["lock", "unlock"] | None = None
    holder: str | None = None
    lock_next: tuple[str, ...] = ()


class ExecutionSuspended(_Event, tag=True, frozen=True):
    reason: str | None = None


class ExecutionResumed(_Event, tag=True, frozen=True):
    reason: str | None = None


class ExecutionTerminated(_Event, tag=True, frozen=True):
    output: str | None = None
    recurse: bool = True


class ExecutionRewound(_Event, tag=True, frozen=True):
    """Cancels the failure that ended the execution, so its failed steps run again.

    Attributes:
        reason: why, as the client gave it.
        cancels: positions in this history of the events replay skips from now on: the
            FAILED end and the task and child failures that caused it (filled in by the
            engine when it records the event).
    """

    reason: str | None = None
    cancels: tuple[int, ...] = ()


class PatchApplied(_Event, tag=True, frozen=True):
    """Records that this execution took the new branch of `ctx.is_patched(patch_id)`."""

    patch_id: str


class ContinuedAsNew(_Event, tag=True, frozen=True):
    """The last event of an execution that restarts with `input` and carried events."""

    input: str | None = None
    carried_events: tuple[EventRaised, ...] = ()


TerminalStatus = Literal["COMPLETED", "FAILED", "TERMINATED"]


class ExecutionCompleted(_Event, tag=True, frozen=True):
    """The last event of a finished execution."""

    status: TerminalStatus
    result: str | None = None
    failure: FailureDetails | None = None


HistoryEvent = (
    ExecutionStarted
    | OrchestratorStarted
    | TaskScheduled
    | TaskCompleted
    | TaskFailed
    | TimerCreated
    | TimerFired
    | ChildOrchestrationCreated
    | ChildOrchestrationCompleted
    | ChildOrchestrationFailed
    | EventRaised
    | EventSent
    | EntityOperationCalled
    | EntityOperationSignaled
    | EntityOperationCompleted
    | EntityOperationFailed
    | EntityLockRequested
    | EntityLockGranted
    | EntityUnlockSent
    | ExecutionSuspended
    | ExecutionResumed
    | ExecutionTerminated
    | ExecutionRewound
    | PatchApplied
    | ContinuedAsNew
    | ExecutionCompleted
)
"""Every kind of history event, as one tagged union."""

# Events that arrive from outside an orchestrator (as opposed to those recording its commands).
InboundEvent = (
    ExecutionStarted
    | TaskCompleted
    | TaskFailed
    | TimerFired
    | ChildOrchestrationCompleted
    | ChildOrchestrationFailed
    | EventRaised
    | EntityOperationCompleted
    | EntityOperationFailed
    | EntityLockGranted
    | EntityRequest
    | ExecutionSuspended
    | ExecutionResumed
    | ExecutionTerminated
    | ExecutionRewound
)


def orchestration_events(messages: Sequence[InboundEvent]) -> list[HistoryEvent]:
    """The messages an orchestration acts on (an entity's requests are never sent to one)."""
    events: list[HistoryEvent] = []
    for m in messages:
        if not isinstance(m, EntityRequest):
            events.append(m)
    return events
