"""The client: start, watch, signal and manage orchestration instances."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from durable import tracing
from durable._records import entity_instance, entity_request
from durable.core.context import check_instance_id
from durable.core.entity import EntityInstanceId, EntityMetadata, entity_target, read_record
from durable.core.errors import OrchestrationNotFoundError, OrchestrationStateError
from durable.core.events import (
    EventRaised,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    InboundEvent,
    as_utc,
)
from durable.core.functions import orchestrator_spec
from durable.core.history import History, fork_history
from durable.core.payload import DEFAULT_MAX_PAYLOAD_BYTES, PayloadCodec
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import InstanceQuery, Message, NewInstance, Store

T = TypeVar("T")


class Client:
    """Starts orchestrations and asks about them; safe to share between tasks.

    Args:
        store: the store the workers use.
        max_payload_bytes: the cap on inputs and event data.
        poll_interval: how often waits look at the store when no notification arrives
            (a worker in another process cannot notify this one).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        poll_interval: float = 0.25,
    ) -> None:
        self.store = store
        self._codec = PayloadCodec(max_payload_bytes)
        self._poll = poll_interval

    async def schedule_new_orchestration(
        self,
        orchestrator: Callable[..., Any] | str,
        *,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        instance_id: str | None = None,
        start_at: datetime | None = None,
    ) -> str:
        """Create an orchestration instance; a worker runs it.

        Args:
            orchestrator: the orchestrator function or its registered name.
            input: its input (JSON-encodable).
            instance_id: the id; a random one by default.
            start_at: do not start before this time.

        Returns:
            The instance id.

        Raises:
            OrchestrationAlreadyExistsError: an unfinished instance has this id.
            PayloadEncodeError, PayloadTooLargeError: the input cannot be stored.
        """
        name = (
            orchestrator if isinstance(orchestrator, str) else orchestrator_spec(orchestrator).name
        )
        iid = check_instance_id(instance_id) if instance_id is not None else uuid.uuid4().hex
        encoded = self._codec.encode(input, f"input of orchestrator {name!r}")
        if start_at is not None:
            start_at = as_utc(start_at)
        attributes: tracing.Attributes = {"durable.instance_id": iid, "durable.orchestration": name}
        with tracing.step(f"schedule {name}", None, "producer", attributes) as step:
            start = ExecutionStarted(
                timestamp=self.store.clock(),
                name=name,
                instance_id=iid,
                execution_id=uuid.uuid4().hex,
                input=encoded,
                scheduled_start=start_at,
                trace=step.traceparent,
            )
            await self.store.create_instance(NewInstance(start=start, visible_at=start_at))
        return iid

    async def get_orchestration_state(self, instance_id: str) -> OrchestrationState | None:
        """The instance's state, or None if there is no such instance."""
        return await self.store.get_state(instance_id)

    async def wait_for_orchestration_start(
        self, instance_id: str, *, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance has started running (or finished).

        Returns:
            Its state, or None if there is no such instance.

        Raises:
            TimeoutError: it has not started within `timeout` seconds.
        """
        return await self._wait(
            instance_id, timeout, lambda s: s.runtime_status is not OrchestrationStatus.PENDING
        )

    async def wait_for_orchestration_completion(
        self, instance_id: str, *, timeout: float = 60
    ) -> OrchestrationState | None:
        """Wait until the instance completed, failed or was terminated.

        Returns:
            Its state, or None if there is no such instance.

        Raises:
            TimeoutError: it has not finished within `timeout` seconds.
        """
        return await self._wait(instance_id, timeout, lambda s: s.runtime_status.is_terminal)

    async def _wait(
        self, instance_id: str, timeout: float, done: Callable[[OrchestrationState], bool]
    ) -> OrchestrationState | None:
        deadline = time.monotonic() + timeout
        changes = self.store.instance_changes
        while True:
            seen = changes.version
            state = await self.store.get_state(instance_id)
            if state is None or done(state):
                return state
            left = deadline - time.monotonic()
            if left <= 0:
                hint = ""
                if state.runtime_status is OrchestrationStatus.PENDING:
                    hint = (
                        f"; no worker has started it: is a worker running with orchestrator "
                        f"{state.name!r} registered?"
                    )
                elif state.failure_details is not None:
                    hint = f"; it is blocked: {state.failure_details.message}"
                raise TimeoutError(
                    f"orchestration {instance_id!r} is still {state.runtime_status.value} "
                    f"after {timeout}s{hint}"
                )
            await changes.wait(min(left, self._poll), since=seen)

    async def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any = None
    ) -> None:
        """Send event `event_name` to the instance (finished instances ignore it).

        Raises:
            OrchestrationNotFoundError: there is no such instance.
        """
        encoded = self._codec.encode(data, f"data of event {event_name!r}")
        await self._send(
            instance_id, EventRaised(timestamp=self.store.clock(), name=event_name, input=encoded)
        )

    async def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, recursive: bool = True
    ) -> None:
        """Stop the instance (and, by default, its running children) as TERMINATED."""
        encoded = self._codec.encode(output, "termination output")
        await self._send(
            instance_id,
            ExecutionTerminated(timestamp=self.store.clock(), output=encoded, recurse=recursive),
        )

    async def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Pause the instance: events are kept but not acted on until it is resumed."""
        await self._send(
            instance_id, ExecutionSuspended(timestamp=self.store.clock(), reason=reason)
        )

    async def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Resume a suspended instance."""
        await self._send(instance_id, ExecutionResumed(timestamp=self.store.clock(), reason=reason))

    async def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        signal_time: datetime | None = None,
    ) -> None:
        """Send an entity a one-way operation (delivered at `signal_time` if given).

        The entity is created by its first operation; its operations run one at a time
        in the order they arrive.
        """
        target = entity_target(entity_instance_id, operation_name)
        encoded = self._codec.encode(input, f"input of operation {operation_name!r} on {target}")
        now = self.store.clock()
        when = None if signal_time is None else as_utc(signal_time)
        await self.store.create_instance(entity_instance(target, now))
        await self.store.send(
            entity_request(target, operation_name, encoded, now, signal_time=when)
        )

    async def get_entity(
        self, entity_instance_id: EntityInstanceId, include_state: bool = True
    ) -> EntityMetadata | None:
        """The entity's metadata (and state), or None if it was never sent an operation."""
        state = await self.store.get_state(str(entity_instance_id))
        return None if state is None else _entity_metadata(state, include_state)

    async def list_entities(
        self,
        name: str | None = None,
        *,
        key_prefix: str = "",
        include_state: bool = True,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[EntityMetadata, None]:
        """Entities, oldest first, fetched page by page: all of them, those of one entity
        name (any case), or those of one name whose keys start with `key_prefix`.

        Args:
            name: the entity name.
            key_prefix: with `name`, the start of the keys wanted.
            include_state: read each entity's state too.
            limit: stop after this many.
            page_size: entities fetched per store query.
        """
        if key_prefix and name is None:
            raise ValueError("key_prefix needs the entity name")
        prefix = "@" if name is None else f"@{EntityInstanceId(name, 'k').entity}@{key_prefix}"
        query = InstanceQuery(entities=True, id_prefix=prefix)
        async for state in self._instances(query, limit, page_size):
            yield _entity_metadata(state, include_state)

    async def _send(self, instance_id: str, event: InboundEvent) -> None:
        await self.store.send(Message(instance_id=instance_id, event=event))

    async def purge_orchestration(self, instance_id: str, *, recursive: bool = True) -> int:
        """Delete a finished instance and its history (and, by default, its children's).

        Returns:
            How many instances were deleted (0 if there was no such instance).

        Raises:
            OrchestrationStateError: the instance (or a child) has not finished; nothing
                was deleted.
        """
        return await self.store.purge([instance_id], recursive)

    async def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """Run a failed instance on from where it failed: only its failed steps run again.

        The failure that ended it (and the failed activities and child orchestrations
        behind it) are cancelled in its history; completed steps keep their results.
        Failed children are rewound too. Use it after fixing the cause (a bug, a quota).

        Raises:
            OrchestrationNotFoundError: there is no such instance.
            OrchestrationStateError: it has not failed.
        """
        state = await self.store.get_state(instance_id)
        if state is None:
            raise OrchestrationNotFoundError(f"no orchestration has id {instance_id!r}")
        if state.runtime_status is not OrchestrationStatus.FAILED:
            raise OrchestrationStateError(
                f"orchestration {instance_id!r} is {state.runtime_status.value}; only failed "
                "instances can be rewound (restart_orchestration runs any finished one anew)"
            )
        await self._send(instance_id, ExecutionRewound(timestamp=self.store.clock(), reason=reason))

    async def restart_orchestration(self, instance_id: str) -> str:
        """Run a finished instance again from its original input, under the same id.

        Raises:
            OrchestrationNotFoundError: there is no such instance.
            OrchestrationStateError: it has not finished.
        """
        state = await self.store.get_state(instance_id)
        if state is None:
            raise OrchestrationNotFoundError(f"no orchestration has id {instance_id!r}")
        if not state.runtime_status.is_terminal:
            raise OrchestrationStateError(
                f"orchestration {instance_id!r} is {state.runtime_status.value}; only finished "
                "instances can be restarted: terminate it first"
            )
        start = ExecutionStarted(
            timestamp=self.store.clock(),
            name=state.name,
            instance_id=instance_id,
            execution_id=uuid.uuid4().hex,
            input=state.serialized_input,
        )
        await self.store.create_instance(NewInstance(start=start))
        return instance_id

    async def fork_orchestration(
        self, instance_id: str, *, at: int, new_instance_id: str | None = None
    ) -> str:
        """Start a new instance that goes on from the first `at` events of another's history.

        The steps recorded in those events keep their results and are not run again;
        the work they were waiting for starts again, and the orchestrator (the code
        registered now, perhaps fixed) decides everything after. The original is not
        touched. Use it to re-run an agent from a chosen step with changed code.

        Args:
            instance_id: the original.
            at: how many of its history events to keep (1 keeps only the start).
            new_instance_id: the fork's id; a new one by default.

        Returns:
            The fork's instance id.

        Raises:
            OrchestrationNotFoundError: there is no such instance.
            ValueError: `at` is out of range.
            OrchestrationAlreadyExistsError: an unfinished instance has `new_instance_id`.
        """
        history = await self.store.get_history(instance_id)
        if not history:
            raise OrchestrationNotFoundError(f"no orchestration has id {instance_id!r}")
        new = new_instance_id or f"{instance_id}-fork-{uuid.uuid4().hex[:8]}"
        check_instance_id(new)
        events = fork_history(history, at, new, uuid.uuid4().hex)
        start = next(e for e in events if isinstance(e, ExecutionStarted))
        reason = f"forked from {instance_id!r} at event {at}"
        resume = ExecutionRewound(timestamp=self.store.clock(), reason=reason)
        await self.store.create_instance(
            NewInstance(start=start, history=tuple(events), resume=resume)
        )
        return new

    async def get_orchestration_history(self, instance_id: str) -> History:
        """The current execution's history as typed events (JSON via `History.to_json()`)."""
        return History(await self.store.get_history(instance_id))

    async def list_orchestrations(
        self,
        *,
        status: OrchestrationStatus | Sequence[OrchestrationStatus] | None = None,
        name: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[OrchestrationState, None]:
        """Instances matching the filters, oldest first, fetched page by page.

        Args:
            status: one status or several.
            name: the orchestrator name.
            created_from: only instances created at or after this time.
            created_to: only instances created at or before this time.
            limit: stop after this many.
            page_size: instances fetched per store query.
        """
        statuses = (
            ()
            if status is None
            else (status,)
            if isinstance(status, OrchestrationStatus)
            else tuple(status)
        )
        query = InstanceQuery(
            statuses=statuses,
            name=name,
            created_from=created_from,
            created_to=created_to,
            entities=False,
        )
        async for state in self._instances(query, limit, page_size):
            yield state

    async def _instances(
        self, query: InstanceQuery, limit: int | None, page_size: int
    ) -> AsyncGenerator[OrchestrationState, None]:
        """The instances `query` finds, fetched `page_size` at a time, at most `limit`."""
        token: str | None = None
        returned = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - returned)
            if size <= 0:
                return
            page = await self.store.list_instances(
                msgspec.structs.replace(query, limit=size, after=token)
            )
            for state in page.instances:
                yield state
                returned += 1
            token = page.next_token
            if token is None:
                return
            await asyncio.sleep(0)

    async def read_stream(
        self, instance_id: str, name: str, *, data_type: Any = Any, after: int = -1
    ) -> AsyncGenerator[StreamChunk, None]:
        """Read stream `name` of an instance from its start, while it is written.

        Every chunk comes once, in order. The iteration ends when the stream is closed,
        or when the instance has finished and every chunk it wrote has been read. A
        reader that connects late, or again, gets every chunk from the start (or from
        `after`).

        Args:
            instance_id: the orchestration instance.
            name: the stream's name.
            data_type: decode each chunk into this type (default: plain JSON).
            after: start after this index (-1: from the start).

        Raises:
            OrchestrationNotFoundError: there is no such instance.
        """
        store = self.store
        finished = False
        while True:
            seen = store.stream_writes.version
            read = await store.read_stream(instance_id, name, after)
            for c in read.chunks:
                data = self._codec.decode(c.data, data_type, f"chunk of stream {name!r}")
                yield StreamChunk(index=c.index, data=data, task_id=c.task_id, attempt=c.attempt)
                after = c.index
            if read.closed or (finished and not read.chunks):
                return
            if read.chunks:
                continue
            state = await store.get_state(instance_id)
            if state is None:
                raise OrchestrationNotFoundError(f"no orchestration with id {instance_id!r}")
            if state.runtime_status.is_terminal:
                finished = True  # one more read: chunks written just before the end
                continue
            await store.stream_writes.wait(self._poll, since=seen)


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of an orchestration's stream, as `read_stream` yields it.

    Attributes:
        index: its place in the stream, from 0.
        data: the value the activity wrote.
        task_id: the activity that wrote it.
        attempt: that activity's attempt; a retried activity writes again, so a reader
            that shows partial output may start over when it sees a new attempt.
    """

    index: int
    data: Any
    task_id: int
    attempt: int


class SyncClient:
    """The `Client` for code that is not async: each method blocks until it is done.

    It runs its own event loop in a background thread, so it also works where a loop is
    already running (a notebook). Use it as a context manager, or call `close()`.

    Args:
        store: the store the workers use.
        max_payload_bytes: the cap on inputs and event data.
        poll_interval: how often waits look at the store when no notification arrives.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        poll_interval: float = 0.25,
    ) -> None:
        self.store = store
        self._client = Client(
            store, max_payload_bytes=max_payload_bytes, poll_interval=poll_interval
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="durable-sync-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the client's thread (the store stays open: it is not the client's)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def schedule_new_orchestration(
        self,
        orchestrator: Callable[..., Any] | str,
        *,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        instance_id: str | None = None,
        start_at: datetime | None = None,
    ) -> str:
        """See `Client.schedule_new_orchestration`."""
        return self._run(
            self._client.schedule_new_orchestration(
                orchestrator, input=input, instance_id=instance_id, start_at=start_at
            )
        )

    def get_orchestration_state(self, instance_id: str) -> OrchestrationState | None:
        """See `Client.get_orchestration_state`."""
        return self._run(self._client.get_orchestration_state(instance_id))

    def wait_for_orchestration_start(
        self, instance_id: str, *, timeout: float = 60
    ) -> OrchestrationState | None:
        """See `Client.wait_for_orchestration_start`."""
        return self._run(self._client.wait_for_orchestration_start(instance_id, timeout=timeout))

    def wait_for_orchestration_completion(
        self, instance_id: str, *, timeout: float = 60
    ) -> OrchestrationState | None:
        """See `Client.wait_for_orchestration_completion`."""
        return self._run(
            self._client.wait_for_orchestration_completion(instance_id, timeout=timeout)
        )

    def raise_orchestration_event(
        self, instance_id: str, event_name: str, *, data: Any = None
    ) -> None:
        """See `Client.raise_orchestration_event`."""
        self._run(self._client.raise_orchestration_event(instance_id, event_name, data=data))

    def terminate_orchestration(
        self, instance_id: str, *, output: Any = None, recursive: bool = True
    ) -> None:
        """See `Client.terminate_orchestration`."""
        self._run(
            self._client.terminate_orchestration(instance_id, output=output, recursive=recursive)
        )

    def suspend_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `Client.suspend_orchestration`."""
        self._run(self._client.suspend_orchestration(instance_id, reason=reason))

    def resume_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `Client.resume_orchestration`."""
        self._run(self._client.resume_orchestration(instance_id, reason=reason))

    def purge_orchestration(self, instance_id: str, *, recursive: bool = True) -> int:
        """See `Client.purge_orchestration`."""
        return self._run(self._client.purge_orchestration(instance_id, recursive=recursive))

    def restart_orchestration(self, instance_id: str) -> str:
        """See `Client.restart_orchestration`."""
        return self._run(self._client.restart_orchestration(instance_id))

    def rewind_orchestration(self, instance_id: str, *, reason: str | None = None) -> None:
        """See `Client.rewind_orchestration`."""
        self._run(self._client.rewind_orchestration(instance_id, reason=reason))

    def fork_orchestration(
        self, instance_id: str, *, at: int, new_instance_id: str | None = None
    ) -> str:
        """See `Client.fork_orchestration`."""
        return self._run(
            self._client.fork_orchestration(instance_id, at=at, new_instance_id=new_instance_id)
        )

    def get_orchestration_history(self, instance_id: str) -> History:
        """See `Client.get_orchestration_history`."""
        return self._run(self._client.get_orchestration_history(instance_id))

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation_name: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        signal_time: datetime | None = None,
    ) -> None:
        """See `Client.signal_entity`."""
        signal = self._client.signal_entity(entity_instance_id, operation_name, input, signal_time)
        self._run(signal)

    def get_entity(
        self, entity_instance_id: EntityInstanceId, include_state: bool = True
    ) -> EntityMetadata | None:
        """See `Client.get_entity`."""
        return self._run(self._client.get_entity(entity_instance_id, include_state))

    def list_entities(
        self,
        name: str | None = None,
        *,
        key_prefix: str = "",
        include_state: bool = True,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[EntityMetadata]:
        """See `Client.list_entities`; pages are fetched as the iteration goes."""
        return self._iterate(
            self._client.list_entities(
                name,
                key_prefix=key_prefix,
                include_state=include_state,
                limit=limit,
                page_size=page_size,
            )
        )

    def read_stream(
        self, instance_id: str, name: str, *, data_type: Any = Any, after: int = -1
    ) -> Iterator[StreamChunk]:
        """See `Client.read_stream`."""
        chunks = self._client.read_stream(instance_id, name, data_type=data_type, after=after)
        return self._iterate(chunks)

    def list_orchestrations(
        self,
        *,
        status: OrchestrationStatus | Sequence[OrchestrationStatus] | None = None,
        name: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[OrchestrationState]:
        """See `Client.list_orchestrations`; pages are fetched as the iteration goes."""
        pages = self._client.list_orchestrations(
            status=status,
            name=name,
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            page_size=page_size,
        )
        return self._iterate(pages)

    def _iterate(self, items: AsyncGenerator[T, None]) -> Iterator[T]:
        """The async generator's items, each fetched on this client's loop."""
        try:
            while True:
                try:
                    yield self._run(_next(items))
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._run(items.aclose())


async def _next(items: AsyncGenerator[T, None]) -> T:
    return await anext(items)


def _entity_metadata(state: OrchestrationState, include_state: bool) -> EntityMetadata:
    """What a client reads of an entity, from its instance's state."""
    record = read_record(state.serialized_output)
    return EntityMetadata(
        EntityInstanceId.parse(state.instance_id),
        state.last_updated_at,
        includes_state=include_state,
        state=record.state,
        backlog_queue_size=len(record.waiting),
        locked_by=record.locked_by,
    )
