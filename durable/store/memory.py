"""An in-memory store: fast and thread-safe, for tests and short-lived programs."""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from durable.core.errors import (
    LeaseLostError,
    OrchestrationAlreadyExistsError,
    OrchestrationNotFoundError,
    OrchestrationStateError,
)
from durable.core.events import (
    ChildOrchestrationFailed,
    ExecutionRewound,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    InboundEvent,
    ParentInstance,
)
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import (
    INSTANCE_MESSAGES,
    STARTERS,
    ActivityResult,
    ActivityTake,
    ActivityWorkItem,
    Clock,
    InstancePage,
    InstanceQuery,
    Message,
    NewInstance,
    Notifier,
    OrchestrationCommit,
    OrchestrationWorkItem,
    StoredChunk,
    StreamRead,
    utc_now,
)
from durable.store.flow import FlowLimit, flow_holder, wait_seconds


@dataclass(slots=True)
class _Message:
    seq: int
    event: InboundEvent
    visible_at: datetime | None


@dataclass(slots=True)
class _Instance:
    start: ExecutionStarted
    status: OrchestrationStatus
    created_at: datetime
    updated_at: datetime
    scheduled_start: datetime | None
    history: list[HistoryEvent] = field(default_factory=list)
    inbox: list[_Message] = field(default_factory=list)
    output: str | None = None
    custom_status: str | None = None
    failure: FailureDetails | None = None
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    not_before: datetime | None = None  # set by abandon: back off before the next claim
    order: int = 0

    def state(self) -> OrchestrationState:
        parent: ParentInstance | None = self.start.parent
        return OrchestrationState(
            instance_id=self.start.instance_id,
            name=self.start.name,
            runtime_status=self.status,
            created_at=self.created_at,
            last_updated_at=self.updated_at,
            serialized_input=self.start.input,
            serialized_output=self.output,
            serialized_custom_status=self.custom_status,
            failure_details=self.failure,
            parent_instance_id=parent.instance_id if parent else None,
            execution_id=self.start.execution_id,
            scheduled_start_at=self.scheduled_start,
        )


@dataclass(slots=True)
class _Activity:
    item: ActivityWorkItem
    lease_owner: str | None = None
    lease_expires: datetime | None = None


@dataclass(slots=True)
class _Flow:
    slots: dict[str, datetime] = field(default_factory=dict)  # holder -> lease expiry
    started: list[tuple[datetime, str, int]] = field(default_factory=list)  # (at, holder, tokens)


@dataclass(slots=True)
class _Stream:
    chunks: list[StoredChunk] = field(default_factory=list)
    closed: bool = False


class MemoryStore:
    """Keeps everything in this process's memory; nothing survives the process.

    Args:
        clock: the time source (a virtual clock in tests).
    """

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock
        self.direct_results = False
        self.orchestration_work = Notifier()
        self.activity_work = Notifier()
        self.instance_changes = Notifier()
        self.stream_writes = Notifier()
        self._lock = threading.RLock()
        self._instances: dict[str, _Instance] = {}
        self._ready: dict[str, None] = {}  # instances that may have visible messages, FIFO
        self._delayed: list[tuple[datetime, int, str]] = []  # (visible_at, seq, instance id)
        self._activities: dict[int, _Activity] = {}
        self._activity_queue: dict[int, None] = {}
        self._activity_keys: dict[tuple[str, str, int], int] = {}
        self._deferred: list[tuple[datetime, int]] = []  # (claimable from, activity id)
        self._leased: dict[str, None] = {}
        self._flows: dict[str, _Flow] = {}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._seq = itertools.count(1)
        self._order = itertools.count(1)
        self._next_sweep = datetime.min.replace(tzinfo=UTC)

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; the data stays until the store is garbage."""

    # -- instances -------------------------------------------------------------------

    async def create_instance(self, instance: NewInstance) -> None:
        with self._lock:
            self._create(instance, self.clock())
        self.orchestration_work.notify()
        self.instance_changes.notify()

    def _create(self, instance: NewInstance, now: datetime) -> None:
        iid = instance.instance_id
        old = self._instances.get(iid)
        if (
            old is not None
            and instance.rerun
            and (not old.status.is_terminal or old.status is OrchestrationStatus.FAILED)
        ):
            return  # running: it will report; failed: the rewind sent with it reaches it
        if old is not None and not old.status.is_terminal:
            raise OrchestrationAlreadyExistsError(
                f"an orchestration with id {iid!r} already exists and is {old.status.value}; "
                "pick another id, or wait for it to finish"
            )
        if old is not None:
            self._drop_activities(iid)
            self._drop_streams({iid})
        inst = _Instance(
            start=instance.start,
            status=OrchestrationStatus.PENDING,
            created_at=now,
            updated_at=now,
            scheduled_start=instance.visible_at,
            order=next(self._order),
        )
        self._instances[iid] = inst
        if instance.history:  # a fork: it goes on from the recorded events
            inst.history = list(instance.history)
            inst.status = OrchestrationStatus.RUNNING
        first = instance.resume if instance.history and instance.resume else instance.start
        self._enqueue(inst, first, instance.visible_at)

    def _enqueue(self, inst: _Instance, event: InboundEvent, visible_at: datetime | None) -> None:
        inst.not_before = None  # news ends a backoff: it may be what unblocks the instance
        seq = next(self._seq)
        inst.inbox.append(_Message(seq, event, visible_at))
        iid = inst.start.instance_id
        if visible_at is None:
            self._ready[iid] = None
        else:
            heapq.heappush(self._delayed, (visible_at, seq, iid))

    async def send(self, message: Message) -> None:
        with self._lock:
            inst = self._instances.get(message.instance_id)
            if inst is None:
                raise OrchestrationNotFoundError(
                    f"no orchestration has id {message.instance_id!r}; check the id, or "
                    "schedule the orchestration first"
                )
            self._deliver(inst, message)
        self.orchestration_work.notify()

    def _deliver(self, inst: _Instance, message: Message) -> None:
        rewind = isinstance(message.event, ExecutionRewound)
        failed = inst.status is OrchestrationStatus.FAILED
        # A failed instance keeps what arrives, for a rewind to use; others drop it.
        if (inst.status.is_terminal and not failed) or (rewind and not failed):
            return
        if message.execution_id is not None and message.execution_id != inst.start.execution_id:
            return
        if rewind:  # it runs again from now on (its history says how, once replayed)
            inst.status = OrchestrationStatus.RUNNING
            inst.failure = None
            inst.updated_at = self.clock()
        self._enqueue(inst, message.event, message.visible_at)

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return inst.state() if inst else None

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        with self._lock:
            inst = self._instances.get(instance_id)
            return list(inst.history) if inst else []

    async def load_history(self, instance_id: str, execution_id: str) -> list[HistoryEvent]:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None or inst.start.execution_id != execution_id:
                return []
            return list(inst.history)

    async def list_instances(self, query: InstanceQuery) -> InstancePage:
        with self._lock:
            rows = sorted(self._instances.values(), key=lambda i: i.order)
            after = int(query.after) if query.after else 0
            found = [i for i in rows if i.order > after and _matches(i, query)][: query.limit + 1]
            more = len(found) > query.limit
            page = found[: query.limit]
            return InstancePage(
                instances=tuple(i.state() for i in page),
                next_token=str(page[-1].order) if more else None,
            )

    async def purge(self, instance_ids: Sequence[str], recursive: bool = False) -> int:
        with self._lock:
            found: dict[str, _Instance] = {}
            queue = list(instance_ids)
            while queue:
                iid = queue.pop()
                inst = self._instances.get(iid)
                if inst is None or iid in found:
                    continue
                if not inst.status.is_terminal:
                    raise OrchestrationStateError(
                        f"orchestration {iid!r} is {inst.status.value}; "
                        "only finished instances can be purged: terminate it first"
                    )
                found[iid] = inst
                if recursive:
                    queue.extend(
                        c.start.instance_id
                        for c in self._instances.values()
                        if c.start.parent is not None and c.start.parent.instance_id == iid
                    )
            for iid in found:
                del self._instances[iid]
                self._drop_activities(iid)
            self._drop_streams(found.keys())
            return len(found)

    def _drop_streams(self, instance_ids: Collection[str]) -> None:
        for key in [k for k in self._streams if k[0] in instance_ids]:
            del self._streams[key]

    def _drop_activities(self, iid: str) -> None:
        for aid, act in list(self._activities.items()):
            if act.item.instance_id == iid:
                del self._activities[aid]
                self._activity_queue.pop(aid, None)
                item = act.item
                self._activity_keys.pop((iid, item.execution_id, item.task_id), None)

    # -- orchestration work ----------------------------------------------------------

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        items: list[OrchestrationWorkItem] = []
        with self._lock:
            self._sweep(now)
            while self._delayed and self._delayed[0][0] <= now:
                _, _, iid = heapq.heappop(self._delayed)
                self._ready[iid] = None
            own = [
                i
                for i in self._leased
                if (inst := self._instances.get(i)) is not None and inst.lease_owner == owner
            ]
            if own:  # the owner's earlier claims whose commit failed come first
                self._ready = {**dict.fromkeys(own), **self._ready}
            skipped: list[str] = []
            while self._ready and len(items) < limit:
                iid = next(iter(self._ready))
                del self._ready[iid]
                inst = self._instances.get(iid)
                if inst is None:
                    continue
                if inst.status.is_terminal and not any(
                    isinstance(m.event, ExecutionRewound) for m in inst.inbox
                ):
                    continue
                if (
                    inst.lease_owner not in (None, owner)
                    and inst.lease_expires
                    and inst.lease_expires > now
                ):
                    continue  # re-queued when the lease holder commits or the lease expires
                if inst.not_before is not None and inst.not_before > now:
                    skipped.append(iid)
                    continue
                visible = [m for m in inst.inbox if m.visible_at is None or m.visible_at <= now]
                if not visible:
                    continue
                if not inst.history and not any(isinstance(m.event, STARTERS) for m in visible):
                    continue  # a delayed start: other messages wait for it (or a terminate)
                inst.lease_owner, inst.lease_expires = owner, expires
                self._leased[iid] = None
                items.append(
                    OrchestrationWorkItem(
                        instance_id=iid,
                        execution_id=inst.start.execution_id,
                        name=inst.start.name,
                        history_length=len(inst.history),
                        messages=tuple(m.event for m in visible),
                        message_ids=tuple(m.seq for m in visible),
                        lease_owner=owner,
                    )
                )
            for iid in skipped:
                inst = self._instances[iid]
                assert inst.not_before is not None
                heapq.heappush(self._delayed, (inst.not_before, 0, iid))
        return items

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        queued = False
        if take is not None:
            take.items.clear()
        with self._lock:
            now = self.clock()
            for commit in commits:
                try:
                    queued |= self._commit(commit, now, take)
                    outcomes.append(None)
                except LeaseLostError as e:
                    outcomes.append(e)
        if queued:
            self.activity_work.notify()
        self.orchestration_work.notify()
        self.instance_changes.notify()
        return outcomes

    def _held(self, item: OrchestrationWorkItem, now: datetime) -> _Instance:
        inst = self._instances.get(item.instance_id)
        if (
            inst is None
            or inst.lease_owner != item.lease_owner
            or inst.lease_expires is None
            or inst.lease_expires <= now
            or inst.start.execution_id != item.execution_id
            or len(inst.history) != item.history_length
        ):
            raise LeaseLostError(
                f"the lease on {item.instance_id!r} was lost; the decision was not written"
            )
        return inst

    def _commit(
        self, commit: OrchestrationCommit, now: datetime, take: ActivityTake | None
    ) -> bool:
        """Apply one decision; True if it queued activities for any worker to claim."""
        item = commit.item
        inst = self._held(item, now)
        consumed = set(item.message_ids)
        inst.inbox = [m for m in inst.inbox if m.seq not in consumed]
        inst.history.extend(commit.events)
        inst.status = commit.status
        inst.custom_status = commit.custom_status
        inst.output = commit.output
        inst.failure = commit.failure
        inst.updated_at = now
        inst.lease_owner = inst.lease_expires = inst.not_before = None
        self._leased.pop(item.instance_id, None)
        queued = False
        for a in commit.activities:
            key = (item.instance_id, item.execution_id, a.task_id)
            if key in self._activity_keys:
                continue  # already waiting to run (a rewind asks again for running work)
            aid = next(self._seq)
            self._activity_keys[key] = aid
            self._activities[aid] = _Activity(
                ActivityWorkItem(
                    id=aid,
                    instance_id=item.instance_id,
                    execution_id=item.execution_id,
                    task_id=a.task_id,
                    name=a.name,
                    input=a.input,
                    attempt=a.attempt,
                    lease_owner="",
                    trace=commit.trace,
                )
            )
            act = self._activities[aid]
            if take is not None and len(take.items) < take.limit:  # leased to it at once
                act.lease_owner = take.owner
                act.lease_expires = now + timedelta(seconds=take.lease_seconds)
                take.items.append(msgspec.structs.replace(act.item, lease_owner=take.owner))
            else:
                self._activity_queue[aid] = None
                queued = True
        for child in commit.children:
            self._start_child(child, now)
        if commit.new_execution is not None:
            kept = [m for m in inst.inbox if isinstance(m.event, INSTANCE_MESSAGES)]
            inst.inbox = []
            inst.history = []
            inst.start = commit.new_execution
            inst.status = OrchestrationStatus.PENDING
            self._enqueue(inst, commit.new_execution, None)
            for m in commit.carried:
                self._enqueue(inst, m.event, None)
            for old in kept:
                self._enqueue(inst, old.event, old.visible_at)
        elif inst.status.is_terminal and inst.status is not OrchestrationStatus.FAILED:
            inst.inbox = []
        for message in commit.messages:
            target = self._instances.get(message.instance_id)
            if target is not None:
                self._deliver(target, message)
        if inst.inbox:
            self._ready[item.instance_id] = None
        return queued

    def _start_child(self, child: NewInstance, now: datetime) -> None:
        try:
            self._create(child, now)
        except OrchestrationAlreadyExistsError as e:
            parent = child.start.parent
            if parent is None:
                return
            target = self._instances.get(parent.instance_id)
            if target is not None:
                failure = ChildOrchestrationFailed(
                    timestamp=now, task_id=parent.task_id, failure=FailureDetails.from_exception(e)
                )
                self._deliver(
                    target,
                    Message(
                        instance_id=parent.instance_id,
                        event=failure,
                        execution_id=parent.execution_id,
                    ),
                )

    async def abandon_orchestration(
        self, item: OrchestrationWorkItem, retry_after: float, error: FailureDetails | None
    ) -> None:
        with self._lock:
            now = self.clock()
            inst = self._instances.get(item.instance_id)
            if inst is None or inst.lease_owner != item.lease_owner:
                return
            inst.lease_owner = inst.lease_expires = None
            self._leased.pop(item.instance_id, None)
            inst.not_before = now + timedelta(seconds=retry_after)
            if error is not None:
                inst.failure = error
                inst.updated_at = now
            heapq.heappush(self._delayed, (inst.not_before, 0, item.instance_id))
        self.instance_changes.notify()

    # -- activity work ---------------------------------------------------------------

    async def claim_activities(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[ActivityWorkItem]:
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        claimed: list[ActivityWorkItem] = []
        with self._lock:
            self._sweep(now)
            while self._deferred and self._deferred[0][0] <= now:
                _, aid = heapq.heappop(self._deferred)
                act = self._activities.get(aid)
                if act is not None and act.lease_owner is None:
                    self._activity_queue[aid] = None
            while self._activity_queue and len(claimed) < limit:
                aid = next(iter(self._activity_queue))
                del self._activity_queue[aid]
                act = self._activities.get(aid)
                if act is None:
                    continue
                act.lease_owner, act.lease_expires = owner, expires
                claimed.append(msgspec.structs.replace(act.item, lease_owner=owner))
        return claimed

    def _sweep(self, now: datetime) -> None:
        # Leases expire only when their holder died; a scan once a second finds them.
        if now < self._next_sweep:
            return
        self._next_sweep = now + timedelta(seconds=1)
        for iid in list(self._leased):
            inst = self._instances.get(iid)
            if inst is None or inst.lease_expires is None or inst.lease_expires <= now:
                del self._leased[iid]
                if inst is not None:
                    inst.lease_owner = inst.lease_expires = None
                    self._ready[iid] = None
        for aid, act in self._activities.items():
            if act.lease_expires is not None and act.lease_expires <= now:
                act.lease_owner = act.lease_expires = None
                self._activity_queue[aid] = None

    async def complete_activities(self, results: Sequence[ActivityResult]) -> None:
        with self._lock:
            for result in results:
                act = self._activities.pop(result.item.id, None)
                self._activity_queue.pop(result.item.id, None)
                if act is None:
                    continue
                self._activity_keys.pop(
                    (act.item.instance_id, act.item.execution_id, act.item.task_id), None
                )
                inst = self._instances.get(act.item.instance_id)
                if inst is not None:
                    self._deliver(
                        inst,
                        Message(
                            instance_id=act.item.instance_id,
                            event=result.event,
                            execution_id=act.item.execution_id,
                        ),
                    )
        self.orchestration_work.notify()

    async def abandon_activities(
        self, items: Sequence[ActivityWorkItem], retry_after: float = 0.0
    ) -> None:
        with self._lock:
            ready = self.clock() + timedelta(seconds=max(retry_after, 0.0))
            for item in items:
                act = self._activities.get(item.id)
                if act is not None and act.lease_owner == item.lease_owner:
                    act.lease_owner = act.lease_expires = None
                    if retry_after > 0:
                        heapq.heappush(self._deferred, (ready, item.id))
                    else:
                        self._activity_queue[item.id] = None
        self.activity_work.notify()

    async def renew_leases(
        self,
        owner: str,
        instance_ids: Sequence[str],
        activity_ids: Sequence[int],
        lease_seconds: float,
    ) -> None:
        with self._lock:
            expires = self.clock() + timedelta(seconds=lease_seconds)
            for iid in instance_ids:
                inst = self._instances.get(iid)
                if inst is not None and inst.lease_owner == owner:
                    inst.lease_expires = expires
            for aid in activity_ids:
                act = self._activities.get(aid)
                if act is not None and act.lease_owner == owner:
                    act.lease_expires = expires
                    slot = flow_holder(aid, owner)
                    for flow in self._flows.values():
                        if slot in flow.slots:
                            flow.slots[slot] = expires

    def is_idle(self) -> bool:
        """True when no work is due, running or being decided: only time can bring more.

        Virtual time (`durable.testing.TestEnvironment`) moves to the next timer then.
        """
        now = self.clock()
        with self._lock:
            if self._leased or len(self._activities) > len(self._deferred):
                return False
            if self._delayed and self._delayed[0][0] <= now:
                return False
            for iid in self._ready:
                inst = self._instances.get(iid)
                if inst is not None and any(
                    m.visible_at is None or m.visible_at <= now for m in inst.inbox
                ):
                    return False
            return True

    async def next_wake_time(self, owner: str | None = None) -> datetime | None:
        with self._lock:
            times = [self._delayed[0][0]] if self._delayed else []
            if self._deferred:
                times.append(self._deferred[0][0])
            return min(times, default=None)

    # -- flow control ----------------------------------------------------------------

    async def acquire_flow(
        self, key: str, holder: str, limit: FlowLimit, tokens: int, lease_seconds: float
    ) -> float:
        now = self.clock()
        with self._lock:
            flow = self._flows.setdefault(key, _Flow())
            for h, expires in list(flow.slots.items()):
                if expires <= now:
                    del flow.slots[h]
            horizon = now - timedelta(seconds=limit.window_seconds)
            flow.started = [s for s in flow.started if s[0] > horizon]
            wait = wait_seconds(
                limit,
                now.timestamp(),
                len(flow.slots),
                [(at.timestamp(), t) for at, _, t in flow.started],
                tokens,
            )
            if wait > 0:
                return wait
            if limit.max_concurrent is not None:
                flow.slots[holder] = now + timedelta(seconds=lease_seconds)
            if limit.rates:
                flow.started.append((now, holder, tokens))
            return 0.0

    async def release_flow(self, key: str, holder: str, tokens: int | None) -> None:
        with self._lock:
            flow = self._flows.get(key)
            if flow is None:
                return
            flow.slots.pop(holder, None)
            if tokens is not None:
                flow.started = [(at, h, tokens if h == holder else t) for at, h, t in flow.started]
        self.activity_work.notify()

    # -- streams ---------------------------------------------------------------------

    async def append_stream(
        self, instance_id: str, name: str, chunk: StoredChunk | None, close: bool
    ) -> None:
        with self._lock:
            if instance_id not in self._instances:
                return
            stream = self._streams.setdefault((instance_id, name), _Stream())
            if stream.closed:
                return
            if chunk is not None:
                stream.chunks.append(msgspec.structs.replace(chunk, index=len(stream.chunks)))
            stream.closed = close
        self.stream_writes.notify()

    async def read_stream(
        self, instance_id: str, name: str, after: int, limit: int = 1000
    ) -> StreamRead:
        with self._lock:
            stream = self._streams.get((instance_id, name))
            if stream is None:
                return StreamRead(chunks=(), closed=False)
            after = max(after, -1)
            chunks = tuple(stream.chunks[after + 1 : after + 1 + limit])
            done = stream.closed and after + len(chunks) + 1 >= len(stream.chunks)
            return StreamRead(chunks=chunks, closed=done)


def _matches(inst: _Instance, q: InstanceQuery) -> bool:
    if q.statuses and inst.status not in q.statuses:
        return False
    if q.name is not None and inst.start.name != q.name:
        return False
    if q.created_from is not None and inst.created_at < q.created_from:
        return False
    iid = inst.start.instance_id
    if q.entities is not None and iid.startswith("@") != q.entities:
        return False
    if not iid.startswith(q.id_prefix):
        return False
    return not (q.created_to is not None and inst.created_at > q.created_to)
