"""What an orchestration's commands become in the store: messages and new instances."""

from __future__ import annotations

import uuid
from datetime import datetime

from durable.core.commands import CreateTimer, StartChildOrchestration
from durable.core.decision import Decision
from durable.core.errors import TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationFailed,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    InboundEvent,
    ParentInstance,
    TimerFired,
)
from durable.store.base import Message, NewInstance, OrchestrationWorkItem


def timer_message(item: OrchestrationWorkItem, timer: CreateTimer) -> Message:
    """The timer as a message to its instance, invisible until it is due."""
    fired = TimerFired(timestamp=timer.fire_at, task_id=timer.task_id, fire_at=timer.fire_at)
    return Message(
        instance_id=item.instance_id,
        event=fired,
        execution_id=item.execution_id,
        visible_at=timer.fire_at,
    )


def child_instance(
    item: OrchestrationWorkItem,
    command: StartChildOrchestration,
    now: datetime,
    *,
    rerun: bool = False,
) -> NewInstance:
    """The child instance a StartChildOrchestration command creates."""
    start = ExecutionStarted(
        timestamp=now,
        name=command.name,
        instance_id=command.instance_id,
        execution_id=uuid.uuid4().hex,
        input=command.input,
        parent=ParentInstance(
            instance_id=item.instance_id, execution_id=item.execution_id, task_id=command.task_id
        ),
    )
    return NewInstance(start=start, rerun=rerun)


def report_to_parent(
    parent: ParentInstance,
    status: str,
    result: str | None,
    failure: FailureDetails | None,
    now: datetime,
) -> Message:
    """What a finished child tells its parent."""
    event: InboundEvent
    if status == "COMPLETED":
        event = ChildOrchestrationCompleted(timestamp=now, task_id=parent.task_id, result=result)
    else:
        if failure is None:
            failure = FailureDetails.from_exception(
                TaskFailedError(
                    f"the child orchestration was {status.lower()}", terminated_failure()
                )
            )
        event = ChildOrchestrationFailed(timestamp=now, task_id=parent.task_id, failure=failure)
    return Message(instance_id=parent.instance_id, event=event, execution_id=parent.execution_id)


def terminates_children(decision: Decision) -> bool:
    """Whether a termination reaches the children (`recursive=False` leaves them)."""
    stop = next((e for e in decision.events if isinstance(e, ExecutionTerminated)), None)
    return stop is None or stop.recurse


def terminated_failure() -> FailureDetails:
    """The failure a terminated child reports to its parent."""
    return FailureDetails(message="terminated", error_type="durable.OrchestrationTerminated")
