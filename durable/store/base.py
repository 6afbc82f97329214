"""The `Store` protocol every backend implements, and the records that cross it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol, runtime_checkable

import msgspec

from durable.core.commands import ScheduleActivity
from durable.core.errors import LeaseLostError, OrchestrationAlreadyExistsError
from durable.core.events import (
    EventRaised,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    InboundEvent,
)
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.flow import FlowLimit

INSTANCE_MESSAGES = (EventRaised, ExecutionSuspended, ExecutionResumed, ExecutionTerminated)
"""Messages that concern the instance rather than one execution: they survive
continue-as-new (every store keeps them for the next execution)."""

STARTERS = (ExecutionStarted, ExecutionTerminated)
"""Messages that may be claimed before the instance's (delayed) start is due."""

Clock = Callable[[], datetime]
"""Returns the current time, tz-aware UTC."""


def utc_now() -> datetime:
    """The wall clock, tz-aware UTC."""
    return datetime.now(UTC)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def us(t: datetime) -> int:
    """A time as the integer microseconds since 1970 that the SQL stores keep (naive: UTC)."""
    return ((t if t.tzinfo else t.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND


def dt(micros: int) -> datetime:
    """The inverse of `us`."""
    return _EPOCH + timedelta(microseconds=micros)


def opt_dt(micros: int | None) -> datetime | None:
    return None if micros is None else dt(micros)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """An event on its way into an instance's history.

    Attributes:
        instance_id: the target instance.
        event: the event.
        execution_id: if set, the message is dropped unless the target's current
            execution is this one (results of work started by an earlier execution).
        visible_at: not delivered before this time (timers, delayed starts).
    """

    instance_id: str
    event: InboundEvent
    execution_id: str | None = None
    visible_at: datetime | None = None


class NewInstance(msgspec.Struct, frozen=True, kw_only=True):
    """An orchestration instance to create; its `start` event is its first message.

    Attributes:
        start: the first event of its history.
        visible_at: not started before this time.
        rerun: a child started again by a rewind or a fork. One that exists and is still
            running, or failed (the rewind sent with it reaches it), is left as it is; a
            completed or terminated one is replaced by a new run, like a missing one.
        history: for a fork, the events already recorded (`start` first); the instance
            then begins with `resume` instead of its start.
        resume: the first message of a forked instance.
    """

    start: ExecutionStarted
    visible_at: datetime | None = None
    rerun: bool = False
    history: tuple[HistoryEvent, ...] = ()
    resume: ExecutionRewound | None = None

    @property
    def instance_id(self) -> str:
        return self.start.instance_id


class OrchestrationWorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """An instance claimed by a worker, with the messages it has to decide on.

    Attributes:
        history_length: the length of the stored history; the commit must match it.
        messages: the new events, oldest first.
        message_ids: store-private identities of the messages, removed on commit.
        lease_owner: the worker holding the lease.
    """

    instance_id: str
    execution_id: str
    name: str
    history_length: int
    messages: tuple[InboundEvent, ...]
    message_ids: tuple[int, ...]
    lease_owner: str


class OrchestrationCommit(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one decision changes, written in one transaction or not at all.

    Attributes:
        item: the claim this commit answers (lease and expected history length).
        events: history events to append.
        status: the instance's new status.
        custom_status, output, failure: the instance's new values.
        activities: activity work items to create.
        messages: messages to this and other instances (timers, events, results to a
            parent, starts of nothing: children go in `children`).
        children: child instances to create.
        new_execution: for continue-as-new, the next execution's start; its history is
            emptied and `carried` messages are delivered to it.
        carried: messages delivered to the next execution (continue-as-new).
        results: activity results decided on directly, not claimed as messages (only for
            a store whose `direct_results` is true). `item` was then not claimed: its
            `message_ids` are empty and its `messages` are these results' events. The
            store writes the commit only if the instance is idle and unchanged (no lease,
            no waiting messages, running, the same execution and history length) and
            every result's work item is still there; otherwise it records the results
            as `complete_activities` does, and the commit gets `LeaseLostError` (the
            instance was busy, or the decision stale: the history moved on, or another
            worker completed the activity). Expected now and then; nothing is lost.
        trace: the decision's traceparent (`durable.tracing`): its activities' work
            items carry it.
    """

    item: OrchestrationWorkItem
    events: tuple[HistoryEvent, ...]
    status: OrchestrationStatus
    custom_status: str | None = None
    output: str | None = None
    failure: FailureDetails | None = None
    activities: tuple[ScheduleActivity, ...] = ()
    messages: tuple[Message, ...] = ()
    children: tuple[NewInstance, ...] = ()
    new_execution: ExecutionStarted | None = None
    carried: tuple[Message, ...] = ()
    results: tuple[ActivityResult, ...] = ()
    trace: str | None = None


class ActivityWorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """An activity claimed by a worker."""

    id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None
    attempt: int
    lease_owner: str
    trace: str | None = None
    """The traceparent of the decision that scheduled it (`durable.tracing`)."""


@dataclass(slots=True)
class ActivityTake:
    """A worker's offer to run, at once, activities that its own decisions schedule.

    A store that supports it leases up to `limit` of the activities a commit creates to
    `owner` in the commit's transaction, and lists them in `items`: the worker runs them
    without claiming them (no other worker can, until the lease runs out). The rest wait
    for any worker, as always. A store may take none.
    """

    owner: str
    limit: int
    lease_seconds: float
    items: list[ActivityWorkItem] = field(default_factory=list)


class ActivityResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished activity: its work item and the TaskCompleted or TaskFailed event."""

    item: ActivityWorkItem
    event: InboundEvent


class StoredChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of an orchestration's named stream.

    Attributes:
        index: its place in the stream, from 0.
        data: the chunk (JSON text in the store; decoded by `Client.read_stream`).
        task_id: the activity that wrote it.
        attempt: that activity's attempt: a retried activity writes its chunks again.
    """

    index: int
    data: str | None
    task_id: int
    attempt: int


class StreamRead(msgspec.Struct, frozen=True, kw_only=True):
    """Chunks read from a stream, and whether it is closed (no chunk comes after them)."""

    chunks: tuple[StoredChunk, ...]
    closed: bool


class InstanceQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters for listing instances (all optional); results are ordered by creation."""

    statuses: tuple[OrchestrationStatus, ...] = ()
    name: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 100
    after: str | None = None  # continuation token from the previous page
    entities: bool | None = None
    """True: entities only; False: orchestrations only; None: both."""
    id_prefix: str = ""
    """Only instances whose id starts with it."""


class InstancePage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of instances, and the token for the next page (None at the end)."""

    instances: tuple[OrchestrationState, ...]
    next_token: str | None = None


class Notifier:
    """Wakes waiters on any thread's event loop; a hint, never the only way work is found."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.version = 0
        """Counts notifications; pass the value read before a look for work to `wait`."""

    def notify(self) -> None:
        """Wake every current waiter."""
        with self._lock:
            self.version += 1
            waiters, self._waiters = self._waiters, []
        running = asyncio._get_running_loop()
        for loop, fut in waiters:
            if loop is running:
                _wake(fut)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    async def wait(self, timeout: float | None, since: int | None = None) -> bool:
        """Wait for the next `notify()` or `timeout` seconds; True if notified.

        Args:
            timeout: the longest wait, in seconds.
            since: a `version` read earlier: return at once if a notification came since.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if since is not None and since != self.version:
                return True
            self._waiters.append(entry)
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            return bool(done)
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@runtime_checkable
class Store(Protocol):
    """Where instances, histories and work items live.

    Every method is safe to call from several workers and clients at once. Writes that
    belong together happen in one transaction. Stores open lazily and are released by
    `close()`; workers and clients never close a store they were given.
    """

    clock: Clock
    direct_results: bool
    """Whether `commit_orchestrations` takes decisions made on activity results directly
    (`OrchestrationCommit.results`): one transaction per step instead of three."""
    orchestration_work: Notifier
    activity_work: Notifier
    instance_changes: Notifier
    stream_writes: Notifier

    async def close(self) -> None:
        """Release connections and files."""
        ...

    # -- instances -------------------------------------------------------------------
    async def create_instance(self, instance: NewInstance) -> None:
        """Create an instance (replacing a finished one with the same id).

        Raises:
            OrchestrationAlreadyExistsError: an unfinished instance has this id.
        """
        ...

    async def send(self, message: Message) -> None:
        """Deliver one message to an existing instance.

        Raises:
            OrchestrationNotFoundError: no instance has this id.
        """
        ...

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        """The instance's state, or None if unknown."""
        ...

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's history, oldest first (empty if unknown)."""
        ...

    async def list_instances(self, query: InstanceQuery) -> InstancePage:
        """Instances matching `query`, oldest first."""
        ...

    async def purge(self, instance_ids: Sequence[str], recursive: bool = False) -> int:
        """Delete finished instances whole; returns how many were deleted.

        Args:
            instance_ids: the instances.
            recursive: also delete their child orchestrations, and theirs.

        Raises:
            OrchestrationStateError: one of them has not finished (nothing is deleted).
        """
        ...

    # -- orchestration work ----------------------------------------------------------
    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        """Lease up to `limit` instances that have visible messages.

        An instance whose delayed start is not due yet is not claimed for its other
        messages (events wait for the start), except to terminate it.
        """
        ...

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        """Apply each commit atomically (group commit); per commit, None or the error.

        A commit whose lease was lost or whose history length moved gets `LeaseLostError`
        and changes nothing; the others are unaffected. With `take`, activities the
        commits create may be leased to the committing worker at once (`ActivityTake`).
        """
        ...

    async def abandon_orchestration(
        self, item: OrchestrationWorkItem, retry_after: float, error: FailureDetails | None
    ) -> None:
        """Give the claim back untouched; retry no sooner than `retry_after` seconds.

        A message that arrives meanwhile ends the wait (it may be what unblocks the
        instance: a terminate, or the result it waits for).

        `error`, if given, is shown in the instance's state (its status is unchanged).
        """
        ...

    async def load_history(self, instance_id: str, execution_id: str) -> list[HistoryEvent]:
        """The history of the given execution (empty if it is not current)."""
        ...

    # -- activity work ---------------------------------------------------------------
    async def claim_activities(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[ActivityWorkItem]:
        """Lease up to `limit` activity work items."""
        ...

    async def complete_activities(self, results: Sequence[ActivityResult]) -> None:
        """Remove the work items and deliver their results, all in one transaction.

        A result whose work item is gone (completed by another worker) is dropped.
        """
        ...

    async def abandon_activities(
        self, items: Sequence[ActivityWorkItem], retry_after: float = 0.0
    ) -> None:
        """Release leases so that other workers may run these activities.

        Args:
            items: the claimed activities.
            retry_after: no worker claims them again sooner than this, in seconds.
        """
        ...

    async def renew_leases(
        self,
        owner: str,
        instance_ids: Sequence[str],
        activity_ids: Sequence[int],
        lease_seconds: float,
    ) -> None:
        """Extend the owner's leases."""
        ...

    async def next_wake_time(self, owner: str | None = None) -> datetime | None:
        """When `owner` (a worker; None: anyone) may next find work to claim, if ever.

        Work that is due but held by another's lease counts from when the lease ends.
        """
        ...

    # -- flow control ----------------------------------------------------------------
    async def acquire_flow(
        self, key: str, holder: str, limit: FlowLimit, tokens: int, lease_seconds: float
    ) -> float:
        """Start one unit of work under `key`'s budget, or say how long to wait.

        Every worker of the store shares the budget. On success the holder takes a
        concurrency slot (if limited) until `release_flow` or until `lease_seconds` pass
        without `renew_leases`, and its start and `tokens` count in the window.

        Args:
            key: the budget's name (an activity name).
            holder: `flow_holder(item)`: the work item's id and its lease owner, so a
                stale worker's late release never frees a slot its successor holds.
            limit: the budget.
            tokens: the start's estimated token use.

        Returns:
            0.0 if granted, else the seconds to wait before asking again.
        """
        ...

    async def release_flow(self, key: str, holder: str, tokens: int | None) -> None:
        """Free the holder's slot; if `tokens` is given, it replaces the estimate."""
        ...

    # -- streams ---------------------------------------------------------------------
    async def append_stream(
        self,
        instance_id: str,
        name: str,
        chunk: StoredChunk | None,
        close: bool,
    ) -> None:
        """Append `chunk` (its `index` is assigned here) and/or close stream `name`.

        Writes to a closed stream, or to an instance that does not exist, are dropped.
        """
        ...

    async def read_stream(
        self, instance_id: str, name: str, after: int, limit: int = 1000
    ) -> StreamRead:
        """Chunks with index > `after` (-1: from the start), oldest first."""
        ...


_FAILURE_ROWS = msgspec.json.Decoder(FailureDetails)


def state_from_row(row: Sequence[Any]) -> OrchestrationState:
    """An `OrchestrationState` from the SQL stores' state columns, in their shared order:
    instance_id, name, status, created_at, updated_at, input, output, custom_status,
    failure (JSON), parent_id, execution_id, scheduled_start (times in `us`)."""
    failure = _FAILURE_ROWS.decode(row[8]) if row[8] is not None else None
    return OrchestrationState(
        instance_id=row[0],
        name=row[1],
        runtime_status=OrchestrationStatus(row[2]),
        created_at=dt(row[3]),
        last_updated_at=dt(row[4]),
        serialized_input=row[5],
        serialized_output=row[6],
        serialized_custom_status=row[7],
        failure_details=failure,
        parent_instance_id=row[9],
        execution_id=row[10],
        scheduled_start_at=opt_dt(row[11]),
    )


# -- the rules every SQL store applies (rows hold statuses and message kinds by name) -------

_TERMINAL_NAMES: Final = frozenset(s.value for s in OrchestrationStatus if s.is_terminal)
_FAILED_NAME: Final = OrchestrationStatus.FAILED.value
_STARTER_NAMES: Final = frozenset(c.__name__ for c in STARTERS)
_REWOUND_NAME: Final = ExecutionRewound.__name__

Delivery = Literal["drop", "keep", "wake"]


def results_refused(instance_id: str, current: bool) -> LeaseLostError:
    """Why a decision made on activity results directly was not written: the instance was
    busy (`current`: the decision itself was up to date), or the decision was stale."""
    if current:
        return LeaseLostError(f"{instance_id!r} is busy: the activity results were queued")
    return LeaseLostError(
        f"the decision on {instance_id!r} is stale: the activity results were queued (or"
        " dropped, if completed elsewhere)"
    )


def merge_outcomes(
    refused: Sequence[Exception | None], written: Sequence[Exception | None]
) -> list[Exception | None]:
    """The outcomes of all decisions: those `refused` up front, and `written`, in order,
    for the places left open."""
    rest = iter(written)
    return [o if o is not None else next(rest) for o in refused]


def delivery(status: str, execution_id: str, length: int, message: Message) -> Delivery:
    """What becomes of `message` at an instance with this status, execution and history
    length: "drop" it, "keep" it (stored; no work for the instance yet), or "wake" the
    instance (stored; it has work). A rewind that is kept makes the failed instance
    RUNNING again: the caller writes that."""
    terminal = status in _TERMINAL_NAMES
    rewind = isinstance(message.event, ExecutionRewound)
    if (terminal and status != _FAILED_NAME) or (rewind and not terminal):
        return "drop"  # a failed instance keeps what arrives, for a rewind; only it rewinds
    if message.execution_id is not None and message.execution_id != execution_id:
        return "drop"
    if terminal and not rewind:
        return "keep"  # nothing to do until a rewind
    if length == 0 and not isinstance(message.event, STARTERS):
        return "keep"  # a delayed start: other messages wait for it (or a terminate)
    return "wake"


def claimable(status: str, length: int, kinds: set[str]) -> bool:
    """Whether an instance whose visible messages have these kinds has work to decide."""
    if not kinds:
        return False
    if status in _TERMINAL_NAMES:
        return status == _FAILED_NAME and _REWOUND_NAME in kinds
    return length > 0 or not kinds.isdisjoint(_STARTER_NAMES)


def replaces(instance: NewInstance, status: str) -> bool:
    """Creating `instance` over one with this status: True to replace it (it finished),
    False to leave it be (a rerun finds it running, or failed: the rewind sent with the
    rerun reaches it).

    Raises:
        OrchestrationAlreadyExistsError: it has not finished.
    """
    terminal = status in _TERMINAL_NAMES
    if instance.rerun and (not terminal or status == _FAILED_NAME):
        return False
    if not terminal:
        raise OrchestrationAlreadyExistsError(
            f"an orchestration with id {instance.start.instance_id!r} already exists and is "
            f"{status}; pick another id, or wait for it to finish"
        )
    return True


def activity_from_row(row: Sequence[Any], owner: str, trace: str | None = None) -> ActivityWorkItem:
    """An activity work item from the SQL stores' columns: id, instance_id, execution_id,
    task_id, name, input, attempt."""
    return ActivityWorkItem(
        trace=trace,
        id=row[0],
        instance_id=row[1],
        execution_id=row[2],
        task_id=row[3],
        name=row[4],
        input=row[5],
        attempt=row[6],
        lease_owner=owner,
    )
