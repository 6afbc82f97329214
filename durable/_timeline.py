"""A history as people read it: one line per event, and the steps as spans of time.

Used by the command line (`durable history`, `durable show`) and the dashboard. Every
history event kind has a case below; the type checker proves none is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple, assert_never

from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorStarted,
    PatchApplied,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)

Category = Literal["run", "activity", "timer", "child", "event", "entity", "control"]

PAYLOAD_CHARS = 120
"""How much of a payload a timeline line shows."""


class Line(NamedTuple):
    """One history event, described."""

    number: int
    at: datetime
    category: Category
    kind: str
    text: str
    failed: bool


class Span(NamedTuple):
    """A step that took time: an activity, a timer, a child, an entity call, a wait for
    an event. `end` is None while it is under way."""

    category: Category
    label: str
    start: datetime
    end: datetime | None
    failed: bool


def cut(payload: str | None, limit: int = PAYLOAD_CHARS) -> str:
    """A payload (JSON text) shortened for display; '-' if there is none."""
    if payload is None:
        return "-"
    text = " ".join(payload.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_text(failure: FailureDetails) -> str:
    return f"{failure.error_type}: {cut(failure.message)}"


def describe(event: HistoryEvent) -> tuple[Category, str, bool]:
    """The event's category, a one-line text, and whether it records a failure."""
    match event:
        case ExecutionStarted():
            return "run", f"started {event.name} with input {cut(event.input)}", False
        case OrchestratorStarted():
            return "run", "orchestrator ran", False
        case ExecutionCompleted():
            if event.failure is not None:
                return "run", f"{event.status}: {failure_text(event.failure)}", True
            return "run", f"{event.status} with output {cut(event.result)}", False
        case ContinuedAsNew():
            return "run", f"continued as new with input {cut(event.input)}", False
        case PatchApplied():
            return "run", f"patch {event.patch_id!r} applied", False
        case TaskScheduled():
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            text = f"activity {event.name}#{event.task_id} scheduled{attempt}"
            return "activity", f"{text} with input {cut(event.input)}", False
        case TaskCompleted():
            return "activity", f"activity #{event.task_id} returned {cut(event.result)}", False
        case TaskFailed():
            text = f"activity #{event.task_id} failed: {failure_text(event.failure)}"
            return "activity", text, True
        case TimerCreated():
            return "timer", f"timer #{event.task_id} set for {event.fire_at.isoformat()}", False
        case TimerFired():
            return "timer", f"timer #{event.task_id} fired", False
        case ChildOrchestrationCreated():
            text = f"child {event.name}#{event.task_id} started as {event.instance_id!r}"
            return "child", f"{text} with input {cut(event.input)}", False
        case ChildOrchestrationCompleted():
            return "child", f"child #{event.task_id} returned {cut(event.result)}", False
        case ChildOrchestrationFailed():
            return "child", f"child #{event.task_id} failed: {failure_text(event.failure)}", True
        case EventRaised():
            return "event", f"event {event.name!r} received: {cut(event.input)}", False
        case EventSent():
            text = f"event {event.name!r} sent to {event.instance_id!r}"
            return "event", f"{text}: {cut(event.input)}", False
        case EntityOperationCalled():
            text = f"entity {event.entity} {event.operation}#{event.task_id} called"
            return "entity", f"{text} with input {cut(event.input)}", False
        case EntityOperationSignaled():
            text = f"entity {event.entity} {event.operation} signaled"
            return "entity", f"{text} with input {cut(event.input)}", False
        case EntityOperationCompleted():
            return "entity", f"entity call #{event.task_id} returned {cut(event.result)}", False
        case EntityOperationFailed():
            text = f"entity call #{event.task_id} failed: {failure_text(event.failure)}"
            return "entity", text, True
        case EntityLockRequested():
            return "entity", f"locks #{event.task_id} asked for {', '.join(event.entities)}", False
        case EntityLockGranted():
            return "entity", f"locks #{event.task_id} granted", False
        case EntityUnlockSent():
            return "entity", f"locks released on {', '.join(event.entities)}", False
        case ExecutionSuspended():
            return "control", _with_reason("suspended", event.reason), False
        case ExecutionResumed():
            return "control", _with_reason("resumed", event.reason), False
        case ExecutionTerminated():
            return "control", f"terminated with output {cut(event.output)}", False
        case ExecutionRewound():
            ids = ", ".join(f"#{i}" for i in event.cancels)
            cancelled = f", cancelling {ids}" if ids else ""
            return "control", _with_reason("rewound", event.reason) + cancelled, False
        case _:
            assert_never(event)


def _with_reason(what: str, reason: str | None) -> str:
    return what if reason is None else f"{what}: {cut(reason)}"


def lines(history: Sequence[HistoryEvent]) -> list[Line]:
    """Each event, described, oldest first."""
    described = []
    for index, event in enumerate(history):
        category, text, failed = describe(event)
        described.append(Line(index, event.timestamp, category, type(event).__name__, text, failed))
    return described


def spans(history: Sequence[HistoryEvent]) -> list[Span]:
    """The steps that took time, in the order they began: each activity, timer, child and
    entity call from its scheduling to its outcome, and each wait that ended with an
    event (from the orchestrator's previous run to the event's arrival is not known, so
    an event is a point: start == end)."""
    found: list[Span] = []
    open_: dict[int, int] = {}  # task id -> index in `found`

    def begin(task_id: int, category: Category, label: str, at: datetime) -> None:
        open_[task_id] = len(found)
        found.append(Span(category, label, at, None, False))

    def finish(task_id: int, at: datetime, failed: bool) -> None:
        i = open_.pop(task_id, None)
        if i is not None:
            found[i] = found[i]._replace(end=at, failed=failed)

    for event in history:
        at = event.timestamp
        match event:
            case TaskScheduled():
                begin(event.task_id, "activity", event.name, at)
            case TimerCreated():
                begin(event.task_id, "timer", f"timer until {event.fire_at.isoformat()}", at)
            case ChildOrchestrationCreated():
                begin(event.task_id, "child", f"{event.name} ({event.instance_id})", at)
            case EntityOperationCalled():
                begin(event.task_id, "entity", f"{event.entity} {event.operation}", at)
            case EntityLockRequested():
                begin(event.task_id, "entity", f"locks on {', '.join(event.entities)}", at)
            case TaskCompleted() | TimerFired() | ChildOrchestrationCompleted():
                finish(event.task_id, at, False)
            case EntityOperationCompleted() | EntityLockGranted():
                finish(event.task_id, at, False)
            case TaskFailed() | ChildOrchestrationFailed() | EntityOperationFailed():
                finish(event.task_id, at, True)
            case EventRaised():
                found.append(Span("event", event.name, at, at, False))
            case ExecutionRewound():
                for task_id in event.cancels:  # ended by the rewind: they run again
                    finish(task_id, at, True)
            case _:
                pass
    return found
