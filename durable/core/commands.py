"""Commands: the work an orchestrator's decision asks the runtime to start."""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import msgspec

from durable.core.events import (
    ChildOrchestrationCreated,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    FailureDetails,
    TaskScheduled,
    TerminalStatus,
    TimerCreated,
)


class _Command(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="kind"):
    pass


class ScheduleActivity(_Command, tag=True, frozen=True):
    task_id: int
    name: str
    input: str | None = None
    attempt: int = 1


class CreateTimer(_Command, tag=True, frozen=True):
    task_id: int
    fire_at: datetime


class StartChildOrchestration(_Command, tag=True, frozen=True):
    task_id: int
    name: str
    instance_id: str
    input: str | None = None


class SendEvent(_Command, tag=True, frozen=True):
    task_id: int
    instance_id: str
    name: str
    input: str | None = None


class CallEntity(_Command, tag=True, frozen=True):
    task_id: int
    entity: str
    operation: str
    input: str | None = None
    holder: str | None = None  # called from inside this critical section


class SignalEntity(_Command, tag=True, frozen=True):
    task_id: int
    entity: str
    operation: str
    input: str | None = None
    signal_time: datetime | None = None
    holder: str | None = None  # sent from inside this critical section


class LockEntities(_Command, tag=True, frozen=True):
    """Lock `entities` (sorted) for the critical section `holder`."""

    task_id: int
    entities: tuple[str, ...]
    holder: str


class UnlockEntities(_Command, tag=True, frozen=True):
    """Release the locks of `entities` that `holder` holds or asked for."""

    task_id: int
    entities: tuple[str, ...]
    holder: str


class CompleteOrchestration(_Command, tag=True, frozen=True):
    status: TerminalStatus
    result: str | None = None
    failure: FailureDetails | None = None


class ContinueAsNew(_Command, tag=True, frozen=True):
    input: str | None = None
    carried_events: tuple[EventRaised, ...] = ()


TaskCommand = (
    ScheduleActivity
    | CreateTimer
    | StartChildOrchestration
    | SendEvent
    | CallEntity
    | SignalEntity
    | LockEntities
    | UnlockEntities
)
"""Commands that carry a sequence number and are recorded by one history event each."""

Command = TaskCommand | CompleteOrchestration | ContinueAsNew
"""Every kind of command, as one tagged union."""

TaskCommandEvent = (
    TaskScheduled
    | TimerCreated
    | ChildOrchestrationCreated
    | EventSent
    | EntityOperationCalled
    | EntityOperationSignaled
    | EntityLockRequested
    | EntityUnlockSent
)
"""The history events that record task commands."""

TASK_COMMAND_EVENTS = (
    TaskScheduled,
    TimerCreated,
    ChildOrchestrationCreated,
    EventSent,
    EntityOperationCalled,
    EntityOperationSignaled,
    EntityLockRequested,
    EntityUnlockSent,
)
"""The same, for isinstance."""


def command_event(command: TaskCommand, timestamp: datetime) -> TaskCommandEvent:
    """The history event that records `command`."""
    match command:
        case ScheduleActivity(task_id=i, name=n, input=x, attempt=a):
            return TaskScheduled(timestamp=timestamp, task_id=i, name=n, input=x, attempt=a)
        case CreateTimer(task_id=i, fire_at=f):
            return TimerCreated(timestamp=timestamp, task_id=i, fire_at=f)
        case StartChildOrchestration(task_id=i, name=n, instance_id=c, input=x):
            return ChildOrchestrationCreated(
                timestamp=timestamp, task_id=i, name=n, instance_id=c, input=x
            )
        case SendEvent(task_id=i, instance_id=t, name=n, input=x):
            return EventSent(timestamp=timestamp, task_id=i, instance_id=t, name=n, input=x)
        case CallEntity(task_id=i, entity=e, operation=o, input=x):
            return EntityOperationCalled(
                timestamp=timestamp, task_id=i, entity=e, operation=o, input=x
            )
        case SignalEntity(task_id=i, entity=e, operation=o, input=x, signal_time=w):
            return EntityOperationSignaled(
                timestamp=timestamp, task_id=i, entity=e, operation=o, input=x, signal_time=w
            )
        case LockEntities(task_id=i, entities=es):
            return EntityLockRequested(timestamp=timestamp, task_id=i, entities=es)
        case UnlockEntities(task_id=i, entities=es):
            return EntityUnlockSent(timestamp=timestamp, task_id=i, entities=es)
        case _:
            assert_never(command)


def describe_command(command: TaskCommand) -> str:
    """A short human description used in non-determinism messages."""
    match command:
        case ScheduleActivity(name=n):
            return f"call_activity({n!r})"
        case CreateTimer(fire_at=f):
            return f"create_timer({f.isoformat()})"
        case StartChildOrchestration(name=n, instance_id=c):
            return f"call_sub_orchestrator({n!r}, instance_id={c!r})"
        case SendEvent(instance_id=t, name=n):
            return f"send_event({t!r}, {n!r})"
        case CallEntity(entity=e, operation=o):
            return f"call_entity({e!r}, {o!r})"
        case SignalEntity(entity=e, operation=o):
            return f"signal_entity({e!r}, {o!r})"
        case LockEntities(entities=es):
            return f"lock_entities({list(es)!r})"
        case UnlockEntities(entities=es):
            return f"unlock of {list(es)!r}"
        case _:
            assert_never(command)


def describe_event(event: TaskCommandEvent) -> str:
    """A short human description of a recorded command, matching `describe_command`."""
    match event:
        case TaskScheduled(name=n):
            return f"call_activity({n!r})"
        case TimerCreated(fire_at=f):
            return f"create_timer({f.isoformat()})"
        case ChildOrchestrationCreated(name=n, instance_id=c):
            return f"call_sub_orchestrator({n!r}, instance_id={c!r})"
        case EventSent(instance_id=t, name=n):
            return f"send_event({t!r}, {n!r})"
        case EntityOperationCalled(entity=e, operation=o):
            return f"call_entity({e!r}, {o!r})"
        case EntityOperationSignaled(entity=e, operation=o):
            return f"signal_entity({e!r}, {o!r})"
        case EntityLockRequested(entities=es):
            return f"lock_entities({list(es)!r})"
        case EntityUnlockSent(entities=es):
            return f"unlock of {list(es)!r}"
        case _:
            assert_never(event)


def same_call(command: TaskCommand, event: TaskCommandEvent) -> bool:
    """Whether `event` records `command` (kind, name, and the target for children/events)."""
    match command:
        case ScheduleActivity(name=n):
            return isinstance(event, TaskScheduled) and event.name == n
        case CreateTimer():
            return isinstance(event, TimerCreated)
        case StartChildOrchestration(name=n, instance_id=c):
            return isinstance(event, ChildOrchestrationCreated) and (
                event.name,
                event.instance_id,
            ) == (n, c)
        case SendEvent(instance_id=t, name=n):
            return isinstance(event, EventSent) and (event.instance_id, event.name) == (t, n)
        case CallEntity(entity=e, operation=o):
            return isinstance(event, EntityOperationCalled) and (event.entity, event.operation) == (
                e,
                o,
            )
        case SignalEntity(entity=e, operation=o):
            return isinstance(event, EntityOperationSignaled) and (
                event.entity,
                event.operation,
            ) == (e, o)
        case LockEntities(entities=es):
            return isinstance(event, EntityLockRequested) and event.entities == es
        case UnlockEntities(entities=es):
            return isinstance(event, EntityUnlockSent) and event.entities == es
        case _:
            assert_never(command)


def describe_arguments(event: TaskCommandEvent) -> str:
    """The arguments a recorded call was made with, for non-determinism messages."""
    match event:
        case TimerCreated(fire_at=f):
            return f"fire_at={f.isoformat()}"
        case TaskScheduled(input=x, attempt=a):
            return f"input={x}, attempt={a}"
        case (
            ChildOrchestrationCreated(input=x) | EventSent(input=x) | EntityOperationCalled(input=x)
        ):
            return f"input={x}"
        case EntityOperationSignaled(input=x, signal_time=w):
            return f"input={x}, signal_time={w.isoformat() if w else None}"
        case EntityLockRequested(entities=es) | EntityUnlockSent(entities=es):
            return f"entities={list(es)}"
        case _:
            assert_never(event)
