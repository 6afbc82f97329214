"""What an orchestration's commands become in the store (messages and new instances), and
what an activity's stream writes do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, assert_never

from durable.core.commands import (
    CallEntity,
    CompleteOrchestration,
    ContinueAsNew,
    CreateTimer,
    LockEntities,
    ScheduleActivity,
    SendEvent,
    SignalEntity,
    StartChildOrchestration,
    UnlockEntities,
)
from durable.core.context import StreamSink
from durable.core.decision import Decision
from durable.core.engine import Execution
from durable.core.entity import EntityInstanceId, EntityOperationFailedException
from durable.core.errors import CorruptHistoryError, TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityRequest,
    EventRaised,
    ExecutionCompleted,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    InboundEvent,
    OrchestratorStarted,
    ParentInstance,
    TimerFired,
    qualified_name,
)
from durable.core.payload import PayloadCodec
from durable.core.state import OrchestrationStatus
from durable.store.base import (
    ActivityResult,
    ActivityWorkItem,
    Message,
    NewInstance,
    OrchestrationCommit,
    OrchestrationWorkItem,
    Store,
    StoredChunk,
)


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
    trace: str | None = None,
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
        trace=trace,
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
    holder: str | None = None,
) -> Message:
    """An operation for `entity` (`@name@key`): a call when it has a `caller`; from the
    critical section `holder`, if given."""
    request = EntityRequest(
        timestamp=now,
        request_id=uuid.uuid4().hex,
        operation=operation,
        input=input,
        caller=caller,
        holder=holder,
    )
    return Message(instance_id=entity, event=request, visible_at=signal_time)


def lock_request(
    entities: Sequence[str], holder: str, caller: ParentInstance, now: datetime
) -> tuple[NewInstance, Message]:
    """The request that locks the first of `entities` for `holder`, then the others."""
    request = EntityRequest(
        timestamp=now,
        request_id=uuid.uuid4().hex,
        operation="",
        caller=caller,
        lock_action="lock",
        holder=holder,
        lock_next=tuple(entities[1:]),
    )
    return entity_instance(entities[0], now), Message(instance_id=entities[0], event=request)


def entity_command(
    item: OrchestrationWorkItem,
    command: CallEntity | SignalEntity | LockEntities | UnlockEntities,
    now: datetime,
) -> list[tuple[NewInstance, Message]]:
    """What an orchestration's call, signal, lock or unlock of entities becomes in the
    store: each entity it goes to (created if new), and the message."""
    caller = ParentInstance(
        instance_id=item.instance_id, execution_id=item.execution_id, task_id=command.task_id
    )
    match command:
        case CallEntity(entity=e, operation=o, input=x, holder=h):
            return [
                (entity_instance(e, now), entity_request(e, o, x, now, caller=caller, holder=h))
            ]
        case SignalEntity(entity=e, operation=o, input=x, signal_time=w, holder=h):
            message = entity_request(e, o, x, now, signal_time=w, holder=h)
            return [(entity_instance(e, now), message)]
        case LockEntities(entities=es, holder=h):
            return [lock_request(es, h, caller, now)]
        case UnlockEntities(entities=es, holder=h):
            unlock = [
                EntityRequest(
                    timestamp=now,
                    request_id=uuid.uuid4().hex,
                    operation="",
                    lock_action="unlock",
                    holder=h,
                )
                for _ in es
            ]
            return [
                (entity_instance(e, now), Message(instance_id=e, event=u))
                for e, u in zip(es, unlock, strict=True)
            ]
        case _:
            assert_never(command)


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


def commit_for(
    item: OrchestrationWorkItem,
    execution: Execution,
    decision: Decision,
    now: datetime,
    results: tuple[ActivityResult, ...] = (),
    *,
    trace: str | None = None,
) -> OrchestrationCommit:
    """What one decision writes: the commit of `item`, with the commands as store records;
    its activities and children carry `trace`, the decision's traceparent."""
    iid = item.instance_id
    activities: list[ScheduleActivity] = []
    messages: list[Message] = []
    children: list[NewInstance] = []
    new_execution: ExecutionStarted | None = None
    carried: list[Message] = []
    parent = execution.parent
    for command in decision.commands:
        match command:
            case ScheduleActivity():
                activities.append(command)
            case CreateTimer():
                messages.append(timer_message(item, command))
            case SendEvent(instance_id=target, name=n, input=x):
                raised = EventRaised(timestamp=now, name=n, input=x)
                messages.append(Message(instance_id=target, event=raised))
            case CallEntity() | SignalEntity() | LockEntities() | UnlockEntities():
                for entity, request in entity_command(item, command, now):
                    children.append(entity)
                    messages.append(request)
            case StartChildOrchestration():
                children.append(child_instance(item, command, now, trace=trace))
            case CompleteOrchestration(status=status, result=result, failure=failure):
                if parent is not None:
                    messages.append(report_to_parent(parent, status, result, failure, now))
                if status == "TERMINATED" and terminates_children(decision):
                    for child in execution.open_children():
                        stop = ExecutionTerminated(timestamp=now, output=None)
                        messages.append(Message(instance_id=child, event=stop))
            case ContinueAsNew(input=x, carried_events=events):
                new_execution = ExecutionStarted(
                    timestamp=now,
                    name=execution.name,
                    instance_id=iid,
                    execution_id=uuid.uuid4().hex,
                    input=x,
                    parent=parent,
                    trace=execution.trace,  # (one trace, across executions)
                )
                carried = [Message(instance_id=iid, event=e) for e in events]
            case _:
                assert_never(command)
    for rerun in decision.reruns:  # after a rewind, or in a fork: start awaited work again
        match rerun:
            case ScheduleActivity():
                activities.append(rerun)  # the store skips one already waiting
            case CreateTimer():
                messages.append(timer_message(item, rerun))  # a second firing is ignored
            case StartChildOrchestration():
                # A running child is left as it is, a failed one rewound, a terminated
                # one run anew.
                children.append(child_instance(item, rerun, now, rerun=True, trace=trace))
                again = ExecutionRewound(timestamp=now, reason="its parent was rewound")
                messages.append(Message(instance_id=rerun.instance_id, event=again))
            case _:
                assert_never(rerun)
    return OrchestrationCommit(
        item=item,
        events=decision.events,
        status=decision.status,
        custom_status=decision.custom_status,
        output=decision.output,
        failure=decision.failure,
        activities=tuple(activities),
        messages=tuple(messages),
        children=tuple(children),
        new_execution=new_execution,
        carried=tuple(carried),
        results=results,
        trace=trace,
    )


async def terminate_blocked(
    store: Store, item: OrchestrationWorkItem, stop: ExecutionTerminated
) -> OrchestrationCommit:
    """Terminate an instance whose code cannot replay its history (a blocked one): the
    history itself says whom to tell (unless it cannot be read either: then the parent is
    not told)."""
    try:
        history = await store.load_history(item.instance_id, item.execution_id)
    except CorruptHistoryError:
        history = []
    state = await store.get_state(item.instance_id)
    now = store.clock()
    events = (*history, *item.messages)
    start = next((e for e in events if isinstance(e, ExecutionStarted)), None)
    messages: list[Message] = []
    if start is not None and start.parent is not None:
        messages.append(report_to_parent(start.parent, "TERMINATED", stop.output, None, now))
    if stop.recurse:
        ended = {
            e.task_id
            for e in events
            if isinstance(e, ChildOrchestrationCompleted | ChildOrchestrationFailed)
        }
        for e in history:
            if isinstance(e, ChildOrchestrationCreated) and e.task_id not in ended:
                halt = ExecutionTerminated(timestamp=now, output=None)
                messages.append(Message(instance_id=e.instance_id, event=halt))
    done = ExecutionCompleted(timestamp=now, status="TERMINATED", result=stop.output)
    return OrchestrationCommit(
        item=item,
        events=(OrchestratorStarted(timestamp=now), stop, done),
        status=OrchestrationStatus.TERMINATED,
        custom_status=state.serialized_custom_status if state is not None else None,
        output=stop.output,
        messages=tuple(messages),
    )


class ActivityStreams(StreamSink):
    """Stream writes of one activity attempt, stored before each write returns."""

    def __init__(
        self,
        store: Store,
        codec: PayloadCodec,
        item: ActivityWorkItem,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._store = store
        self._codec = codec
        self._item = item
        self._loop = loop

    async def write(self, name: str, data: Any, close: bool) -> None:
        chunk = None
        if not close or data is not None:
            encoded = self._codec.encode(data, f"chunk of stream {name!r}")
            chunk = StoredChunk(
                index=0, data=encoded, task_id=self._item.task_id, attempt=self._item.attempt
            )
        await self._store.append_stream(self._item.instance_id, name, chunk, close)

    def write_sync(self, name: str, data: Any, close: bool) -> None:
        asyncio.run_coroutine_threadsafe(self.write(name, data, close), self._loop).result()
