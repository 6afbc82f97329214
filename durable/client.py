"""The client: start, watch, signal and manage orchestration instances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from durable.core.errors import OrchestrationNotFoundError, OrchestrationStateError
from durable.core.events import (
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    InboundEvent,
)
from durable.core.functions import orchestrator_spec
from durable.core.history import History
from durable.core.payload import DEFAULT_MAX_PAYLOAD_BYTES, PayloadCodec
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import InstanceQuery, Message, NewInstance, Store


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
        iid = instance_id if instance_id is not None else uuid.uuid4().hex
        if not iid:
            raise ValueError("instance_id must not be empty")
        encoded = self._codec.encode(input, f"input of orchestrator {name!r}")
        if start_at is not None and start_at.tzinfo is None:
            start_at = start_at.replace(tzinfo=UTC)
        start = ExecutionStarted(
            timestamp=self.store.clock(),
            name=name,
            instance_id=iid,
            execution_id=uuid.uuid4().hex,
            input=encoded,
            scheduled_start=start_at,
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
            await changes.wait(min(left, self._poll))

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

    async def _send(self, instance_id: str, event: InboundEvent) -> None:
        await self.store.send(Message(instance_id=instance_id, event=event))

    async def purge_orchestration(self, instance_id: str) -> int:
        """Delete a finished instance and its history; returns how many were deleted.

        Raises:
            OrchestrationStateError: the instance has not finished.
        """
        return await self.store.purge([instance_id])

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
    ) -> AsyncIterator[OrchestrationState]:
        """Instances matching the filters, oldest first, fetched page by page.

        Args:
            status: one status or several.
            name: the orchestrator name.
            created_from, created_to: creation time bounds (inclusive).
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
        token: str | None = None
        returned = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - returned)
            if size <= 0:
                return
            page = await self.store.list_instances(
                InstanceQuery(
                    statuses=statuses,
                    name=name,
                    created_from=created_from,
                    created_to=created_to,
                    limit=size,
                    after=token,
                )
            )
            for state in page.instances:
                yield state
                returned += 1
            token = page.next_token
            if token is None:
                return
            await asyncio.sleep(0)
