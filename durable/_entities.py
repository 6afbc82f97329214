"""How a worker runs a batch of an entity's operations: one commit for the whole batch.

An entity is an instance with the id `@name@key`. Its history holds only its start; what
it keeps between batches (its state) is its instance's output. A claim brings its waiting
requests; they run in arrival order (`core.entity.run_operations`), and the new state, the
answers to callers, the signals and the orchestrations the operations start are committed
together, fenced by the claim's lease: a batch takes effect once, or not at all.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import msgspec

from durable._records import entity_instance, entity_reply, entity_request, lock_request
from durable.core.entity import (
    EntityInstanceId,
    Operation,
    admit,
    read_record,
    run_operations,
    write_record,
)
from durable.core.errors import NotRegisteredError
from durable.core.events import (
    EntityLockGranted,
    EntityRequest,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
)
from durable.core.functions import Registry
from durable.core.payload import PayloadCodec
from durable.core.state import OrchestrationStatus
from durable.store.base import (
    Message,
    NewInstance,
    OrchestrationCommit,
    OrchestrationWorkItem,
)

log = logging.getLogger("durable.worker")


def decide_entity(
    item: OrchestrationWorkItem,
    stored: str | None,
    registry: Registry,
    codec: PayloadCodec,
    now: datetime,
) -> OrchestrationCommit:
    """The commit for one batch of `item`'s requests, from the record `stored`."""
    iid = item.instance_id
    eid = EntityInstanceId.parse(iid)
    events: tuple[HistoryEvent, ...] = ()
    if item.history_length == 0:  # its first batch records its start
        events = tuple(m for m in item.messages if isinstance(m, ExecutionStarted))[:1]
    # What runs now: a locked entity runs its holder's requests; the others wait in the
    # record. Lock requests it grants go on to the next entity, or to the orchestration.
    arrived = [m for m in item.messages if isinstance(m, EntityRequest)]
    acted, record = admit(read_record(stored), arrived)
    messages: list[Message] = []
    children: list[NewInstance] = []
    for lock in (r for r in acted if r.lock_action == "lock"):
        assert lock.holder is not None and lock.caller is not None
        if lock.lock_next:
            target, forward = lock_request(lock.lock_next, lock.holder, lock.caller, now)
            children.append(target)
            messages.append(forward)
        else:
            caller = lock.caller
            granted = EntityLockGranted(timestamp=now, task_id=caller.task_id)
            messages.append(
                Message(
                    instance_id=caller.instance_id,
                    event=granted,
                    execution_id=caller.execution_id,
                )
            )
    requests = [r for r in acted if r.lock_action is None]
    try:
        entity = registry.entity(eid.entity)
    except NotRegisteredError as e:
        failure = FailureDetails.from_exception(e)
        for request in requests:
            reply = entity_reply(request, iid, None, failure, now)
            if reply is None:
                log.warning("entity %s: dropped signal %r: %s", iid, request.operation, e)
            else:
                messages.append(reply)
    else:
        operations = [
            Operation(operation=r.operation, input=r.input, tag=str(n))
            for n, r in enumerate(requests)
        ]
        outcome = run_operations(entity, eid, record.state, operations, codec, _new_id)
        record = msgspec.structs.replace(record, state=outcome.state)
        for request, result in zip(requests, outcome.results, strict=True):
            reply = entity_reply(request, iid, result.result, result.failure, now)
            if reply is not None:
                messages.append(reply)
        for signal in outcome.signals:
            children.append(entity_instance(signal.entity, now))
            messages.append(
                entity_request(
                    signal.entity,
                    signal.operation,
                    signal.input,
                    now,
                    signal_time=signal.signal_time,
                )
            )
        for start in outcome.starts:
            started = ExecutionStarted(
                timestamp=now,
                name=start.name,
                instance_id=start.instance_id,
                execution_id=uuid.uuid4().hex,
                input=start.input,
            )
            children.append(NewInstance(start=started))
    return OrchestrationCommit(
        item=item,
        events=events,
        status=OrchestrationStatus.RUNNING,
        output=write_record(record),
        messages=tuple(messages),
        children=tuple(children),
    )


def _new_id() -> str:
    return uuid.uuid4().hex
