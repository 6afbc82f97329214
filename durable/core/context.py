"""The orchestration context: what an orchestrator can do, all of it replay-safe."""

from __future__ import annotations

import hashlib
import random as _random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from durable.core.commands import (
    CallEntity,
    ScheduleActivity,
    SendEvent,
    SignalEntity,
    StartChildOrchestration,
)
from durable.core.entity import EntityInstanceId, entity_target, lock_targets
from durable.core.errors import LockingRulesViolationError
from durable.core.events import as_utc
from durable.core.functions import declared_output_type, get_name
from durable.core.tasks import (
    CancellableTask,
    CompletableTask,
    RetryPolicy,
    TimerTask,
)

if TYPE_CHECKING:
    import logging

    from durable.core.engine import Execution
    from durable.core.logger import ReplaySafeLogger

T = TypeVar("T")

_UUID_NAMESPACE = uuid.UUID("6b0f7c44-53c5-4f7e-9d0a-3c0c1d6e2a51")


class ReplaySafeRandom(_random.Random):
    """The generator `ctx.random()` returns: seeded by the instance, the same on replay."""


class StreamSink(Protocol):
    """Where an activity's stream writes go; the runtime provides it."""

    async def write(self, name: str, data: Any, close: bool) -> None:
        """Append `data` to stream `name` (unless `close` and data is None); maybe close it."""
        ...

    def write_sync(self, name: str, data: Any, close: bool) -> None:
        """The same, from a sync activity's thread; returns once the chunk is stored."""
        ...


class ActivityStream:
    """A named stream of the activity's orchestration, written chunk by chunk.

    Clients read it while the orchestration runs (`client.read_stream`). Chunks are
    stored in order and never enter history. A retried activity writes again: each chunk
    carries the attempt that wrote it.
    """

    def __init__(self, sink: StreamSink | None, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a stream name must be a non-empty string")
        self.name = name
        self._sink = sink

    async def write(self, data: Any) -> None:
        """Append one chunk (any JSON value), stored before this returns."""
        if self._sink is not None:
            await self._sink.write(self.name, data, False)

    async def close(self) -> None:
        """Mark the stream finished: readers end after its last chunk."""
        if self._sink is not None:
            await self._sink.write(self.name, None, True)

    def write_sync(self, data: Any) -> None:
        """`write` for sync activities (they run in a thread)."""
        if self._sink is not None:
            self._sink.write_sync(self.name, data, False)

    def close_sync(self) -> None:
        """`close` for sync activities."""
        if self._sink is not None:
            self._sink.write_sync(self.name, None, True)


class ActivityContext:
    """What an activity knows of its invocation.

    Attributes:
        orchestration_id: the instance that scheduled it (with `task_id`, an idempotency key).
        task_id: the call's sequence number in that instance.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        name: the activity's registered name.
    """

    def __init__(
        self,
        orchestration_id: str,
        task_id: int,
        attempt: int = 1,
        name: str = "",
        streams: StreamSink | None = None,
    ) -> None:
        self.orchestration_id = orchestration_id
        self.task_id = task_id
        self.attempt = attempt
        self.name = name
        self._streams = streams

    def stream(self, name: str) -> ActivityStream:
        """The orchestration's stream `name`, to send partial output to clients as it comes.

        Outside a worker (a plain call in a unit test) writes go nowhere.
        """
        return ActivityStream(self._streams, name)

    def __repr__(self) -> str:
        return (
            f"ActivityContext(orchestration_id={self.orchestration_id!r}, "
            f"task_id={self.task_id}, attempt={self.attempt}, name={self.name!r})"
        )


MAX_INSTANCE_ID_BYTES = 1000
"""The longest instance id, in UTF-8 bytes, that every store can index."""


def check_instance_id(instance_id: str) -> str:
    """`instance_id` if every store can keep it, else ValueError: it must be a non-empty
    string of at most 1,000 UTF-8 bytes, with no NUL character."""
    if not isinstance(instance_id, str) or not instance_id:
        raise ValueError(f"an instance id must be a non-empty string, not {instance_id!r}")
    if "\x00" in instance_id:
        raise ValueError(f"an instance id cannot contain a NUL character: {instance_id!r}")
    if len(instance_id.encode("utf-8", "surrogatepass")) > MAX_INSTANCE_ID_BYTES:
        raise ValueError(
            f"an instance id may have at most {MAX_INSTANCE_ID_BYTES} UTF-8 bytes:"
            f" {instance_id[:40]!r}... is longer"
        )
    return instance_id


def _name_of(target: Callable[..., Any] | str) -> str:
    return target if isinstance(target, str) else get_name(target)


class OrchestrationContext:
    """The orchestrator's handle on the runtime, passed as its first argument.

    Everything here is deterministic: on replay it returns what it returned the first time.
    """

    def __init__(self, execution: Execution) -> None:
        self._x = execution
        self._uuid_counter = 0
        self._random: ReplaySafeRandom | None = None

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return self._x.instance_id

    @property
    def parent_instance_id(self) -> str | None:
        """The parent's id for a child orchestration, else None."""
        parent = self._x.parent
        return parent.instance_id if parent else None

    @property
    def current_utc_datetime(self) -> datetime:
        """History time: when the current step was first decided (tz-aware UTC)."""
        return self._x.now

    @property
    def is_replaying(self) -> bool:
        """True while re-running steps that are already recorded."""
        return self._x.replaying

    @property
    def history_length(self) -> int:
        """The number of history events of this execution so far."""
        return self._x.history_length

    @property
    def is_continue_as_new_suggested(self) -> bool:
        """True once the history is long or large enough that `continue_as_new` is wise."""
        return self._x.continue_as_new_suggested

    def call_activity(
        self,
        activity: Callable[..., Any] | str,
        *,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        retry_policy: RetryPolicy | None = None,
        return_type: Any = None,
    ) -> CompletableTask[Any]:
        """Schedule an activity.

        Args:
            activity: the activity function or its registered name.
            input: its input, encoded as JSON.
            retry_policy: how to retry it when it fails.
            return_type: decode the result into this type (default: the function's
                return annotation, else plain JSON).

        Returns:
            A task completed with the activity's result, or failed with `TaskFailedError`.

        Raises:
            PayloadEncodeError, PayloadTooLargeError: the input cannot be sent.
        """
        name = _name_of(activity)
        encoded = self._x.codec.encode(input, f"input of activity {name!r}")
        result_type = _result_type(activity, return_type)

        def command(task_id: int, attempt: int) -> ScheduleActivity:
            return ScheduleActivity(task_id=task_id, name=name, input=encoded, attempt=attempt)

        return self._x.schedule(command, result_type, f"activity {name!r}", retry_policy)

    def call_sub_orchestrator(
        self,
        orchestrator: Callable[..., Any] | str,
        *,
        input: Any = None,  # noqa: A002
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        return_type: Any = None,
    ) -> CompletableTask[Any]:
        """Start a child orchestration and wait for its result.

        Args:
            orchestrator: the orchestrator function or its registered name.
            input: its input.
            instance_id: the child's id; by default `<parent id>:<sequence number, hex>`.
            retry_policy: how to retry it when it fails.
            return_type: decode the result into this type.
        """
        name = _name_of(orchestrator)
        if instance_id is not None:
            check_instance_id(instance_id)
        encoded = self._x.codec.encode(input, f"input of orchestrator {name!r}")
        result_type = _result_type(orchestrator, return_type)
        parent = self.instance_id

        def command(task_id: int, attempt: int) -> StartChildOrchestration:
            child = instance_id if instance_id is not None else f"{parent}:{task_id:04x}"
            return StartChildOrchestration(
                task_id=task_id, name=name, instance_id=child, input=encoded
            )

        return self._x.schedule(command, result_type, f"orchestrator {name!r}", retry_policy)

    def create_timer(self, fire_at: datetime | timedelta) -> TimerTask:
        """A durable timer firing at `fire_at` (or after the delay, from history time).

        Naive datetimes are taken as UTC.
        """
        if isinstance(fire_at, timedelta):
            when = self.current_utc_datetime + fire_at
        elif isinstance(fire_at, datetime):
            when = as_utc(fire_at)
        else:
            raise TypeError(f"create_timer() takes a datetime or a timedelta, got {fire_at!r}")
        return self._x.start_timer(when)

    @overload
    def wait_for_external_event(self, name: str) -> CancellableTask[Any]: ...
    @overload
    def wait_for_external_event(self, name: str, *, data_type: type[T]) -> CancellableTask[T]: ...
    def wait_for_external_event(self, name: str, *, data_type: Any = None) -> CancellableTask[Any]:
        """Wait for the next event named `name` (case-insensitive).

        Events raised before the wait are buffered and delivered first in, first out.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("the event name must be a non-empty string")
        return self._x.wait_for_event(name, Any if data_type is None else data_type)

    def send_event(self, instance_id: str, event_name: str, *, data: Any = None) -> None:
        """Raise event `event_name` on another instance (one way; unknown targets drop it)."""
        check_instance_id(instance_id)
        encoded = self._x.codec.encode(data, f"data of event {event_name!r}")
        self._x.add_command(
            lambda task_id: SendEvent(
                task_id=task_id, instance_id=instance_id, name=event_name, input=encoded
            )
        )

    def call_entity(
        self,
        entity: EntityInstanceId,
        operation: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        *,
        return_type: Any = None,
    ) -> CompletableTask[Any]:
        """Run `operation` on an entity and wait for its result.

        The entity runs its operations one at a time, in the order they arrive; the
        request is sent when this decision is committed, exactly once.

        Returns:
            A task completed with the operation's result (decoded into `return_type` if
            given), or failed with `TaskFailedError` if the operation raised (its details
            name the entity and the operation; `details.inner` is the entity's error).
        """
        target = entity_target(entity, operation)
        holder = self._holder(target)
        if holder is None and self._x.locks is not None and self._x.locks.granted:
            raise LockingRulesViolationError(
                f"call_entity({target!r}, {operation!r}) inside a critical section that did "
                f"not lock it (it locked {', '.join(self._x.locks.entities)}): lock every "
                "entity the section calls"
            )
        encoded = self._x.codec.encode(input, f"input of operation {operation!r} on {target}")
        result_type = Any if return_type is None else return_type

        def command(task_id: int, attempt: int) -> CallEntity:
            return CallEntity(
                task_id=task_id, entity=target, operation=operation, input=encoded, holder=holder
            )

        return self._x.schedule(command, result_type, f"entity operation {operation!r}", None)

    def signal_entity(
        self,
        entity_id: EntityInstanceId,
        operation_name: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        signal_time: datetime | None = None,
    ) -> None:
        """Send an entity a one-way operation (not awaited), at `signal_time` if given."""
        target = entity_target(entity_id, operation_name)
        what = f"input of operation {operation_name!r} on {target}"
        encoded = self._x.codec.encode(input, what)
        when = None if signal_time is None else as_utc(signal_time)
        holder = self._holder(target)
        self._x.add_command(
            lambda task_id: SignalEntity(
                task_id=task_id,
                entity=target,
                operation=operation_name,
                input=encoded,
                signal_time=when,
                holder=holder,
            )
        )

    def lock_entities(self, entities: Sequence[EntityInstanceId]) -> CompletableTask[Any]:
        """Lock entities for a critical section: `with (yield ctx.lock_entities([...])):`.

        The locks are taken one entity after another in one global order (the sorted
        ids), so two sections that lock overlapping sets never wait on each other in a
        circle. While the section holds them, the locked entities run only its
        operations; the others' wait. Leaving the `with` block releases them all, as
        does the orchestration's end (completion, failure, termination, continue-as-new).
        Inside the section the orchestration may call only the entities it locked, and
        may not lock again.

        Returns:
            A task completed, once every lock is held, with the critical section (a
            context manager).

        Raises:
            LockingRulesViolationError: locks are held or asked for already.
        """
        targets = lock_targets(entities)
        held = self._x.locks
        if held is not None:
            raise LockingRulesViolationError(
                "lock_entities was called while this orchestration holds or asks for entity "
                f"locks ({', '.join(held.entities)}): critical sections do not nest"
            )
        return self._x.lock(targets)

    def _holder(self, target: str) -> str | None:
        """The critical section an operation on `target` belongs to (it locked target)."""
        locks = self._x.locks
        if locks is not None and locks.granted and target in locks.entities:
            return locks.holder
        return None

    def continue_as_new(self, new_input: Any, *, save_events: bool = False) -> None:
        """Restart this instance with `new_input` and an empty history.

        It takes effect when the orchestrator next yields or returns.

        Args:
            new_input: the next execution's input.
            save_events: carry events not yet consumed over to the next execution.
        """
        encoded = self._x.codec.encode(new_input, "input of continue_as_new")
        self._x.request_continue_as_new(encoded, save_events)

    def set_custom_status(self, custom_status: Any) -> None:
        """Publish a JSON value for clients to read (None clears it)."""
        self._x.custom_status = self._x.codec.encode(custom_status, "custom status")

    def new_uuid(self) -> str:
        """A UUID that is the same on every replay."""
        name = f"{self.instance_id}_{self.current_utc_datetime.isoformat()}_{self._uuid_counter}"
        self._uuid_counter += 1
        return str(uuid.uuid5(_UUID_NAMESPACE, name))

    def random(self) -> ReplaySafeRandom:
        """A random generator seeded by the instance, so that replays draw the same values."""
        if self._random is None:
            seed = f"{self.instance_id}/{self._x.execution_id}".encode()
            self._random = ReplaySafeRandom(int.from_bytes(hashlib.sha256(seed).digest()[:8]))
        return self._random

    def is_patched(self, patch_id: str) -> bool:
        """Whether to take the new branch of a code change named `patch_id`.

        True in executions that reach this call for the first time with this code (and
        recorded so later replays agree); False while replaying a history recorded before
        the patch existed. The answer never changes within an execution.
        """
        return self._x.is_patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Mark `patch_id` as always applied; histories that recorded it still replay."""
        del patch_id  # markers never take part in the command matching

    def create_replay_safe_logger(self, logger: logging.Logger) -> ReplaySafeLogger:
        """A logger adapter that logs only when not replaying."""
        # Imported on use: `logging` loads `threading`, which the core must not load.
        from durable.core.logger import ReplaySafeLogger  # noqa: PLC0415

        return ReplaySafeLogger(logger, lambda: self._x.replaying)


def _result_type(target: Callable[..., Any] | str, return_type: Any) -> object:
    if return_type is not None:
        return return_type
    if isinstance(target, str):
        return Any
    return declared_output_type(target)
