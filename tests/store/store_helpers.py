"""Helpers for the store conformance suite: a fake clock, records, and claim/commit steps.

Everything here goes through the `Store` protocol only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from durable.core.events import (
    EventRaised,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    InboundEvent,
    OrchestratorStarted,
    ParentInstance,
)
from durable.core.state import OrchestrationStatus
from durable.store.base import (
    Message,
    NewInstance,
    OrchestrationCommit,
    OrchestrationWorkItem,
    Store,
)

S = OrchestrationStatus

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""Where every fake clock starts."""

LEASE = 30.0
"""The lease, in seconds, every claim in the suite asks for."""

PAST_LEASE = LEASE + 1.5
"""How far to move the clock for a lease to be over. MemoryStore looks for expired leases
at most once a second (by its clock), so a lease is reclaimable up to a second after its
end; this margin keeps the suite about the contract, not that scan."""

OpenStore = Callable[..., Store]
"""The `open_store` fixture: `open_store(clock, path=None)` opens a new store of the kind
under test (for a file-backed store, on `path` if given); it is closed after the test."""

BOOM = FailureDetails(message="boom", error_type="builtins.ValueError")


class FakeClock:
    """A tz-aware UTC clock that moves only when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward; returns the new time."""
        self.now += timedelta(seconds=seconds)
        return self.now

    def at(self, seconds: float) -> datetime:
        """The time `seconds` from now (the clock does not move)."""
        return self.now + timedelta(seconds=seconds)


# -- records ---------------------------------------------------------------------------


def started(
    iid: str,
    *,
    execution_id: str = "e1",
    name: str = "orch",
    input: str | None = None,
    parent: ParentInstance | None = None,
    at: datetime = T0,
) -> ExecutionStarted:
    return ExecutionStarted(
        timestamp=at,
        name=name,
        instance_id=iid,
        execution_id=execution_id,
        input=input,
        parent=parent,
    )


def new_instance(
    iid: str,
    *,
    execution_id: str = "e1",
    name: str = "orch",
    input: str | None = None,
    parent: ParentInstance | None = None,
    visible_at: datetime | None = None,
    at: datetime = T0,
) -> NewInstance:
    start = started(iid, execution_id=execution_id, name=name, input=input, parent=parent, at=at)
    return NewInstance(start=start, visible_at=visible_at)


def raised(name: str, input: str | None = None, at: datetime = T0) -> EventRaised:
    return EventRaised(timestamp=at, name=name, input=input)


def to(
    iid: str,
    event: InboundEvent,
    *,
    execution_id: str | None = None,
    visible_at: datetime | None = None,
) -> Message:
    """A message for `iid`."""
    return Message(instance_id=iid, event=event, execution_id=execution_id, visible_at=visible_at)


# -- claims and commits ----------------------------------------------------------------


async def claim(
    store: Store, owner: str = "w1", limit: int = 100, lease: float = LEASE
) -> dict[str, OrchestrationWorkItem]:
    """Claim orchestration work; the items by instance id (each instance at most once)."""
    items = await store.claim_orchestrations(owner, limit, lease)
    by_id = {i.instance_id: i for i in items}
    assert len(by_id) == len(items), f"an instance was claimed twice: {items}"
    for item in items:
        assert item.lease_owner == owner
        assert item.messages, f"a work item without messages: {item}"
        assert len(item.message_ids) == len(item.messages)
    return by_id


async def claim_one(
    store: Store, iid: str, owner: str = "w1", lease: float = LEASE
) -> OrchestrationWorkItem:
    """Claim work, expecting exactly the instance `iid`."""
    items = await claim(store, owner, lease=lease)
    assert list(items) == [iid], f"expected to claim {iid!r} alone, got {list(items)}"
    return items[iid]


def decision(
    item: OrchestrationWorkItem,
    *,
    events: Iterable[HistoryEvent] | None = None,
    status: OrchestrationStatus = S.RUNNING,
    **fields: Any,
) -> OrchestrationCommit:
    """A commit for `item`; its events default to an OrchestratorStarted and the messages."""
    if events is None:
        events = (OrchestratorStarted(timestamp=T0), *item.messages)
    return OrchestrationCommit(item=item, events=tuple(events), status=status, **fields)


async def commit(
    store: Store,
    item: OrchestrationWorkItem,
    *,
    events: Iterable[HistoryEvent] | None = None,
    status: OrchestrationStatus = S.RUNNING,
    **fields: Any,
) -> OrchestrationCommit:
    """Commit one decision for `item`, expecting it to be accepted."""
    c = decision(item, events=events, status=status, **fields)
    outcomes = await store.commit_orchestrations([c])
    assert outcomes == [None], f"commit for {item.instance_id!r} rejected: {outcomes}"
    return c


async def start(
    store: Store,
    iid: str,
    *,
    status: OrchestrationStatus = S.RUNNING,
    execution_id: str = "e1",
    name: str = "orch",
    input: str | None = None,
    parent: ParentInstance | None = None,
    **fields: Any,
) -> list[HistoryEvent]:
    """Create `iid` and commit its first decision (RUNNING unless told otherwise).

    Returns:
        its history after that decision.
    """
    await store.create_instance(
        new_instance(iid, execution_id=execution_id, name=name, input=input, parent=parent)
    )
    item = await claim_one(store, iid)
    c = await commit(store, item, status=status, **fields)
    return list(c.events)
