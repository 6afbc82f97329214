"""What an orchestration's commands become in the store: messages and new instances."""

from __future__ import annotations

import uuid
from datetime import datetime

from durable.core.commands import CallEntity, CreateTimer, SignalEntity, StartChildOrchestration
from durable.core.decision import Decision
from durable.core.entity import EntityInstanceId, EntityOperationFailedException
from durable.core.errors import TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationFailed,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    InboundEvent,
    ParentInstance,
    TimerFired,
    qualified_name,
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


# -- entities ----------------------------------------------------------------------------


def entity_instance(entity: str, now: datetime) -> NewInstance:
    """The entity's instance, created with its first message, left as it is if it exists."""
    eid = EntityInstanceId.parse(entity)
    start = ExecutionStarted(
        timestamp=now, name=eid.entity, instance_id=entity, execution_id=uuid.uuid4().hex
    )
    return NewInstance(start=start, rerun=True)


def entity_request(
    entity: str,
    operation: str,
    input: str | None,  # noqa: A002 - the operation's input
    now: datetime,
    *,
    caller: ParentInstance | None = None,
    signal_time: datetime | None = None,
) -> Message:
    """An operation for `entity` (`@name@key`): a call when it has a `caller`."""
    request = EntityRequest(
        timestamp=now,
        request_id=uuid.uuid4().hex,
        operation=operation,
        input=input,
        caller=caller,
    )
    return Message(instance_id=entity, event=request, visible_at=signal_time)


def entity_command(
    item: OrchestrationWorkItem, command: CallEntity | SignalEntity, now: datetime
) -> tuple[NewInstance, Message]:
    """What an orchestration's call or signal of an entity becomes in the store."""
    if isinstance(command, CallEntity):
        caller = ParentInstance(
            instance_id=item.instance_id, execution_id=item.execution_id, task_id=command.task_id
        )
        message = entity_request(
            command.entity, command.operation, command.input, now, caller=caller
        )
    else:
        message = entity_request(
            command.entity, command.operation, command.input, now, signal_time=command.signal_time
        )
    return entity_instance(command.entity, now), message


def entity_reply(
    request: EntityRequest,
    entity: str,
    result: str | None,
    failure: FailureDetails | None,
    now: datetime,
) -> Message | None:
    """The answer to a call (None for a signal): its result, or why it failed."""
    caller = request.caller
    if caller is None:
        return None
    event: InboundEvent
    if failure is None:
        event = EntityOperationCompleted(timestamp=now, task_id=caller.task_id, result=result)
    else:
        error = EntityOperationFailedException(
            EntityInstanceId.parse(entity), request.operation, failure
        )
        details = FailureDetails(
            message=str(error), error_type=qualified_name(type(error)), inner=failure
        )
        event = EntityOperationFailed(timestamp=now, task_id=caller.task_id, failure=details)
    return Message(instance_id=caller.instance_id, event=event, execution_id=caller.execution_id)
