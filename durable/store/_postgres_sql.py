"""The Postgres store's schema, and its transactions as async functions on one connection.

Every transaction locks the instance rows it reads or changes (`FOR UPDATE`), in one
sorted batch where it can, so that the rows of one instance are changed by one
transaction at a time and two transactions seldom wait on each other in opposite orders
(when they do, Postgres aborts one and the store runs it again). Work queues are claimed
with `FOR UPDATE SKIP LOCKED`, so claimers never wait on each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import msgspec
import psycopg

from durable.core.errors import (
    CorruptHistoryError,
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
)
from durable.core.history import decode_event, decode_events, encode_event, encode_events
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store import _postgres_arrays as arrays
from durable.store._postgres_arrays import Bool, Bytes, Int8, Text
from durable.store.base import (
    INSTANCE_MESSAGES,
    STARTERS,
    ActivityTake,
    InstancePage,
    InstanceQuery,
    Message,
    NewInstance,
    OrchestrationCommit,
    OrchestrationWorkItem,
    activity_from_row,
    claimable,
    delivery,
    dt,
    replaces,
    state_from_row,
    us,
)

Conn: TypeAlias = psycopg.AsyncConnection[Any]

_TERMINAL = frozenset(s.value for s in OrchestrationStatus if s.is_terminal)
_FAILED = OrchestrationStatus.FAILED.value
_INSTANCE_KINDS = [c.__name__ for c in INSTANCE_MESSAGES]
_STARTER_KINDS = frozenset(c.__name__ for c in STARTERS)

_FAILURE_ENCODER = msgspec.json.Encoder()
_FAILURE_DECODER = msgspec.json.Decoder(FailureDetails)

_STATE_COLUMNS = (
    "instance_id, name, status, created_at, updated_at, input, output, custom_status, "
    "failure, parent_id, execution_id, scheduled_start"
)


@dataclass(slots=True)
class _Row:
    """What a transaction knows of a locked instance row."""

    status: str
    execution_id: str
    length: int
    lease_owner: str | None
    lease_expires: int | None
    sticky_owner: str | None = None


@dataclass(slots=True)
class Tx:
    """One transaction: its connection, its `now`, and the instance rows it has locked."""

    c: Conn
    now: int
    local: frozenset[str] = frozenset()
    """The workers of this process: work that sticks to one of them needs no NOTIFY."""
    rows: dict[str, _Row | None] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)
    """What other processes are told at the commit (`Notes`)."""
    pending: list[tuple[str, str, int, bool, bytes]] = field(default_factory=list)
    """Messages to insert, in order: (instance, kind, visible at, wakes, event)."""
    work: bool = False
    """Whether instances may have orchestration work once this commits: this process's
    workers are told to look (a decision on results alone, written idle, leaves none)."""

    async def flush(self) -> None:
        """Write the buffered messages: call before reading or changing messages."""
        if self.pending:
            columns = arrays.columns(self.pending, Text, Text, Int8, Bool, Bytes)
            self.pending.clear()
            await self.c.execute(
                "INSERT INTO messages (instance_id, kind, visible_at, wakes, event)"
                " SELECT i, k, v, w, e FROM unnest(%b::text[], %b::text[], %b::bigint[],"
                " %b::boolean[], %b::bytea[]) WITH ORDINALITY AS m(i, k, v, w, e, n)"
                " ORDER BY n",
                columns,
            )

    async def lock(self, ids: Iterable[str]) -> None:
        """Lock the rows of `ids` not yet locked, in id order (missing ones are None).

        `FOR NO KEY UPDATE`: the rows change, their ids never do, so a stream append
        (`FOR KEY SHARE`) need not wait for a commit. A row that a concurrent transaction
        replaced (a finished instance created anew) is not returned by the locking read
        that waited for it; it is looked for again, so that it is not taken for missing.
        """
        todo = sorted({i for i in ids if i not in self.rows})
        for _ in range(3):
            if not todo:
                return
            cur = await self.c.execute(
                "SELECT instance_id, status, execution_id, history_length, lease_owner,"
                " lease_expires, sticky_owner FROM instances WHERE instance_id = ANY(%b)"
                " ORDER BY instance_id FOR NO KEY UPDATE",
                (todo,),
            )
            for iid, *row in await cur.fetchall():
                self.rows[iid] = _Row(*row)
            missing = [i for i in todo if i not in self.rows]
            if not missing:
                return
            cur = await self.c.execute(
                "SELECT instance_id FROM instances WHERE instance_id = ANY(%b)", (missing,)
            )
            todo = sorted(r[0] for r in await cur.fetchall())
            for iid in missing:
                if iid not in todo:
                    self.rows[iid] = None
        for iid in todo:
            self.rows.setdefault(iid, None)

    async def row(self, iid: str) -> _Row | None:
        await self.lock((iid,))
        return self.rows[iid]


def _kind(event: InboundEvent) -> str:
    return type(event).__name__


# -- instances ---------------------------------------------------------------------------


async def create(tx: Tx, instance: NewInstance) -> None:
    start = instance.start
    iid = start.instance_id
    while True:
        row = await tx.row(iid)
        if row is not None:
            if not replaces(instance, row.status):
                return
            await _delete(tx, [iid])
        if await _insert_instance(tx, instance):
            return
        tx.rows.pop(iid, None)  # another transaction made it first: look at it again


async def _insert_instance(tx: Tx, instance: NewInstance) -> bool:
    start = instance.start
    iid = start.instance_id
    visible = None if instance.visible_at is None else us(instance.visible_at)
    forked = bool(instance.history)
    status = OrchestrationStatus.RUNNING if forked else OrchestrationStatus.PENDING
    cur = await tx.c.execute(
        "INSERT INTO instances (instance_id, name, execution_id, parent_id, status,"
        " created_at, updated_at, scheduled_start, input, history_length)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (instance_id) DO NOTHING RETURNING 1",
        (
            iid,
            start.name,
            start.execution_id,
            start.parent.instance_id if start.parent else None,
            status.value,
            tx.now,
            tx.now,
            visible,
            start.input,
            len(instance.history),
        ),
    )
    if await cur.fetchone() is None:
        return False
    tx.rows[iid] = _Row(status.value, start.execution_id, len(instance.history), None, None)
    tx.notes.update("oi")
    if forked:
        await _insert_history(tx, [(iid, 0, encode_events(instance.history))])
    first = instance.resume if forked and instance.resume is not None else start
    _queue(tx, iid, first, visible, wakes=True)
    return True


async def _insert_history(tx: Tx, rows: Sequence[tuple[str, int, bytes]]) -> None:
    """Append chunks of history: (instance, position of the first event, `encode_events`)."""
    if rows:
        await tx.c.execute(
            "INSERT INTO history (instance_id, seq, events)"
            " SELECT * FROM unnest(%b::text[], %b::integer[], %b::bytea[])",
            arrays.columns(rows, Text, Int8, Bytes),
        )


async def _delete(tx: Tx, ids: Sequence[str]) -> None:
    await tx.flush()
    for table in ("history", "messages", "activities", "streams", "instances"):
        await tx.c.execute(
            f"DELETE FROM {table} WHERE instance_id = ANY(%b)",  # noqa: S608
            (list(ids),),
        )
    for iid in ids:
        tx.rows[iid] = None


def _queue(tx: Tx, iid: str, event: InboundEvent, visible: int | None, *, wakes: bool) -> None:
    # A message for now is visible from now: its time says how long it has waited
    # (which decides when a worker other than the sticky one may take it).
    at = tx.now if visible is None else visible
    tx.pending.append((iid, _kind(event), at, wakes, encode_event(event)))
    tx.work |= wakes


async def send(tx: Tx, message: Message) -> None:
    if not await deliver(tx, message) and await tx.row(message.instance_id) is None:
        raise OrchestrationNotFoundError(
            f"no orchestration has id {message.instance_id!r}; check the id, or "
            "schedule the orchestration first"
        )


async def deliver(tx: Tx, message: Message) -> bool:
    """Queue `message` for its instance; False if the instance is unknown or ignores it."""
    iid, event = message.instance_id, message.event
    row = await tx.row(iid)
    if row is None:
        return False
    fate = delivery(row.status, row.execution_id, row.length, message)
    if fate == "drop":
        return False
    visible = None if message.visible_at is None else us(message.visible_at)
    _queue(tx, iid, event, visible, wakes=fate == "wake")
    if isinstance(event, ExecutionRewound):  # it runs again (its history says how)
        row.status = OrchestrationStatus.RUNNING.value
        await tx.c.execute(
            "UPDATE instances SET status = %s, failure = NULL, updated_at = %s"
            " WHERE instance_id = %s",
            (row.status, tx.now, iid),
        )
        await _set_wakes(tx, [iid], True)  # what it kept while failed is work again
    if fate == "keep":
        return True
    if row.sticky_owner not in tx.local:  # (None: anyone's) another process may take it
        tx.notes.add("o")
    due = tx.now if visible is None else visible
    if row.lease_owner is None and row.lease_expires is not None and row.lease_expires > due:
        row.lease_expires = due  # held back (see `abandon`): new work ends that by its time
        await tx.c.execute(
            "UPDATE instances SET lease_expires = %s WHERE instance_id = %s", (due, iid)
        )
    return True


async def _set_wakes(tx: Tx, ids: Sequence[str], wakes: bool) -> None:
    """Make every message of `ids` give its instance work (or none): its mode changed."""
    if ids:
        tx.work |= wakes
        await tx.flush()
        await tx.c.execute(
            "UPDATE messages SET wakes = %s WHERE instance_id = ANY(%b) AND wakes <> %s",
            (wakes, list(ids), wakes),
        )


async def get_state(c: Conn, iid: str) -> OrchestrationState | None:
    cur = await c.execute(
        f"SELECT {_STATE_COLUMNS} FROM instances WHERE instance_id = %s",  # noqa: S608
        (iid,),
    )
    row = await cur.fetchone()
    return None if row is None else state_from_row(row)


async def history(c: Conn, iid: str, execution_id: str | None) -> list[HistoryEvent]:
    if execution_id is not None:
        cur = await c.execute("SELECT execution_id FROM instances WHERE instance_id = %s", (iid,))
        row = await cur.fetchone()
        if row is None or row[0] != execution_id:
            return []
    cur = await c.execute(
        "SELECT seq, events FROM history WHERE instance_id = %s ORDER BY seq", (iid,)
    )
    events: list[HistoryEvent] = []
    for seq, data in await cur.fetchall():
        try:
            chunk = decode_events(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            raise CorruptHistoryError(
                f"history events from {seq} of orchestration {iid!r} cannot be decoded: {e}"
            ) from e
        if seq != len(events):
            raise CorruptHistoryError(
                f"history of orchestration {iid!r} has a gap: events from {seq} follow"
                f" {len(events)} events"
            )
        events.extend(chunk)
    return events


async def list_page(c: Conn, q: InstanceQuery) -> InstancePage:
    where = ["ord > %s"]
    args: list[Any] = [int(q.after) if q.after else 0]
    if q.statuses:
        where.append("status = ANY(%b)")
        args.append([s.value for s in q.statuses])
    if q.name is not None:
        where.append("name = %s")
        args.append(q.name)
    if q.created_from is not None:
        where.append("created_at >= %s")
        args.append(us(q.created_from))
    if q.created_to is not None:
        where.append("created_at <= %s")
        args.append(us(q.created_to))
    if q.entities is not None:
        where.append(("" if q.entities else "NOT ") + "starts_with(instance_id, '@')")
    if q.id_prefix:
        where.append("starts_with(instance_id, %s)")
        args.append(q.id_prefix)
    cur = await c.execute(
        f"SELECT {_STATE_COLUMNS}, ord FROM instances WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY ord LIMIT %s",
        (*args, q.limit + 1),
    )
    rows = await cur.fetchall()
    page = rows[: q.limit]
    return InstancePage(
        instances=tuple(state_from_row(r) for r in page),
        next_token=str(page[-1][12]) if len(rows) > q.limit else None,
    )


async def purge(tx: Tx, ids: list[str], recursive: bool) -> int:
    found: list[str] = []
    queue = list(ids)
    seen: set[str] = set()
    while queue:
        batch = [i for i in dict.fromkeys(queue) if i not in seen]
        queue = []
        seen.update(batch)
        await tx.lock(batch)
        for iid in batch:
            row = tx.rows[iid]
            if row is None:
                continue
            if row.status not in _TERMINAL:
                raise OrchestrationStateError(
                    f"orchestration {iid!r} is {row.status}; only finished instances can be"
                    " purged: terminate it first"
                )
            found.append(iid)
        if recursive and batch:
            cur = await tx.c.execute(
                "SELECT instance_id FROM instances WHERE parent_id = ANY(%b)", (batch,)
            )
            queue = [r[0] for r in await cur.fetchall()]
    await _delete(tx, found)
    return len(found)


# -- orchestration work -------------------------------------------------------------------


async def claim(
    tx: Tx, owner: str, limit: int, lease: int, sticky: int
) -> list[OrchestrationWorkItem]:
    # An instance goes back to the worker that decided it last, which likely still has
    # its orchestrator in memory (no history to load and replay): a worker takes its
    # own instances and new ones, oldest work first, and another's only once that work
    # waited `sticky` microseconds for it (gone, or busy).
    #
    # Due messages are read in wake-index order as the nested loop asks for them (the
    # plan this needs: a sort would read every due message), and each one's instance
    # is looked up and locked by a lateral subquery that is not merged into a join (it
    # locks), so that rows are locked only as the limit asks for them. An instance with
    # several due messages may come more than once: it is leased once. The visible
    # messages of the leased instances come with them (a lateral lookup each, by the
    # instance index), one row per message, or one with no message.
    # (and the leased rows are found by their index, not by hashing the whole table)
    await tx.c.execute(  # (settings for the rest of this transaction, which ends here)
        "SELECT set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true)"
    )
    cur = await tx.c.execute(
        "WITH picked AS ("
        " UPDATE instances AS i SET lease_owner = %(owner)s, lease_expires = %(expires)s"
        " FROM (SELECT j.instance_id FROM"
        "   (SELECT instance_id, visible_at FROM messages WHERE wakes"
        "    AND visible_at <= %(now)s ORDER BY visible_at OFFSET 0) AS m,"
        "   LATERAL (SELECT instance_id FROM instances WHERE instance_id = m.instance_id"
        "    AND (lease_expires IS NULL OR lease_expires <= %(now)s OR lease_owner = %(owner)s)"
        "    AND (sticky_owner IS NULL OR sticky_owner = %(owner)s"
        "         OR m.visible_at <= %(unstick)s)"
        "    FOR NO KEY UPDATE SKIP LOCKED) AS j"
        "   LIMIT %(limit)s) AS picked"
        " WHERE i.instance_id = picked.instance_id"
        " RETURNING i.instance_id, execution_id, name, history_length, status)"
        " SELECT p.instance_id, p.execution_id, p.name, p.history_length, p.status,"
        "  m.id, m.kind, m.event FROM picked AS p"
        " LEFT JOIN LATERAL (SELECT id, kind, event FROM messages"
        "  WHERE instance_id = p.instance_id AND visible_at <= %(now)s OFFSET 0) AS m ON true",
        {
            "owner": owner,
            "expires": tx.now + lease,
            "now": tx.now,
            "limit": limit,
            "unstick": tx.now - sticky,
        },
    )
    picked: dict[str, tuple[str, str, int, str]] = {}
    found: dict[str, list[tuple[int, str, bytes]]] = {}
    for iid, execution_id, name, length, status, mid, kind, event in await cur.fetchall():
        if iid not in picked:
            picked[iid] = (execution_id, name, length, status)
            tx.rows[iid] = _Row(status, execution_id, length, owner, tx.now + lease)
            found[iid] = []
        if mid is not None:
            found[iid].append((mid, kind, event))
    items: list[OrchestrationWorkItem] = []
    for iid, (execution_id, name, length, status) in picked.items():
        mine = sorted(found[iid])  # (in arrival order)
        if not claimable(status, length, {k for _, k, _ in mine}):
            # (not reached while `wakes` is kept right; should it not be, the messages
            # that woke the instance are put right, so that no claim takes it in vain)
            await _release(tx, iid)
            await tx.c.execute(
                "UPDATE messages SET wakes = false WHERE instance_id = %s"
                " AND visible_at <= %s AND wakes",
                (iid, tx.now),
            )
            continue
        try:
            messages = tuple(cast(InboundEvent, decode_event(e)) for _, _, e in mine)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            error = CorruptHistoryError(
                f"a message to orchestration {iid!r} cannot be decoded: {e}"
            )
            await tx.c.execute(
                # (held back a minute, by a lease that no worker holds)
                "UPDATE instances SET failure = %s, updated_at = %s, lease_expires = %s,"
                " lease_owner = NULL WHERE instance_id = %s",
                (
                    _FAILURE_ENCODER.encode(FailureDetails.from_exception(error)),
                    tx.now,
                    tx.now + 60_000_000,
                    iid,
                ),
            )
            continue
        items.append(
            OrchestrationWorkItem(
                instance_id=iid,
                execution_id=execution_id,
                name=name,
                history_length=length,
                messages=messages,
                message_ids=tuple(m for m, _, _ in mine),
                lease_owner=owner,
            )
        )
    return items


async def _release(tx: Tx, iid: str) -> None:
    """Give the instance back to every worker (the holder keeps nothing of it)."""
    row = tx.rows.get(iid)
    if row is not None:
        row.lease_owner = row.lease_expires = None
    await tx.c.execute(
        "UPDATE instances SET lease_owner = NULL, lease_expires = NULL, sticky_owner = NULL"
        " WHERE instance_id = %s",
        (iid,),
    )


def touched(commit: OrchestrationCommit) -> list[str]:
    """The instances a commit may lock: its own, its messages' and its children's."""
    if not commit.messages and not commit.children:
        return [commit.item.instance_id]
    ids = [commit.item.instance_id]
    ids.extend(m.instance_id for m in commit.messages)
    ids.extend(c.start.instance_id for c in commit.children)
    return ids


async def commit_all(
    tx: Tx, commits: Sequence[OrchestrationCommit], take: ActivityTake | None
) -> tuple[list[Exception | None], bool]:
    """Commit many decisions in a few set-wide statements; a stale one is rejected alone.

    Returns the outcomes, and whether activities were queued for any worker to claim.
    """
    if take is not None:
        take.items.clear()  # (what an attempt that was rolled back leased is not leased)
    await tx.lock(i for c in commits for i in touched(c))
    outcomes: list[Exception | None] = []
    accepted: list[OrchestrationCommit] = []
    for commit in commits:
        item = commit.item
        row = tx.rows.get(item.instance_id)
        if (
            row is None
            or row.lease_owner != item.lease_owner
            or row.lease_expires is None
            or row.lease_expires <= tx.now
            or row.execution_id != item.execution_id
            or row.length != item.history_length
        ):
            outcomes.append(
                LeaseLostError(
                    f"the lease on {item.instance_id!r} was lost; the decision was not written"
                )
            )
            continue
        outcomes.append(None)
        accepted.append(commit)
    if not accepted:
        return outcomes, False
    # Messages may have come for a claimed instance while it was leased (their senders'
    # notifications found it taken): its worker looks again once it is released.
    tx.work |= any(not commit.results for commit in accepted)
    c = tx.c
    consumed = [m for commit in accepted for m in commit.item.message_ids]
    if consumed:
        await c.execute("DELETE FROM messages WHERE id = ANY(%b)", (consumed,))
    await _insert_history(
        tx,
        [
            (commit.item.instance_id, commit.item.history_length, encode_events(commit.events))
            for commit in accepted
            if commit.events
        ],
    )
    for commit in accepted:
        row = tx.rows[commit.item.instance_id]
        assert row is not None
        if row.status != commit.status.value:  # what clients in other processes wait for
            tx.notes.add("i")
        row.status = commit.status.value
        row.length = commit.item.history_length + len(commit.events)
    work = [
        (c.item.instance_id, c.item.execution_id, a.task_id, a.name, a.attempt, a.input, c.trace)
        for c in accepted
        for a in c.activities
    ]
    queued = await _insert_activities(tx, work, take)
    finished, failed, started = [], [], []
    for commit in accepted:
        iid = commit.item.instance_id
        for child in commit.children:
            await _start_child(tx, child)
        if commit.new_execution is not None:
            await _continue_as_new(tx, iid, commit.new_execution, commit.carried)
        elif commit.status is OrchestrationStatus.FAILED:
            failed.append(iid)  # what it keeps waits for a rewind
        elif commit.status.value in _TERMINAL:
            finished.append(iid)
        elif commit.item.history_length == 0 and commit.events:
            started.append(iid)  # what waited for its start is work now
    if finished:
        await tx.flush()
        await c.execute("DELETE FROM messages WHERE instance_id = ANY(%b)", (finished,))
    for commit in accepted:
        for message in commit.messages:
            await deliver(tx, message)
    await _set_wakes(tx, started, True)
    await _set_wakes(tx, failed, False)
    await _write_outcomes(tx, accepted)
    return outcomes, queued


async def _insert_activities(
    tx: Tx,
    work: list[tuple[str, str, int, str, int, str | None, str | None]],
    take: ActivityTake | None,
) -> bool:
    """Create the activity rows; the first `take.limit` leased to `take.owner` (listed in
    `take.items`). True if any is left for any worker to claim."""
    if not work:
        return False
    taken = 0 if take is None else max(0, min(take.limit, len(work)))
    lease = None if take is None else tx.now + round(take.lease_seconds * 1_000_000)
    owner = None if take is None else take.owner
    columns = arrays.columns(work, Text, Text, Int8, Text, Int8, Text, Text)
    cur = await tx.c.execute(
        "INSERT INTO activities (instance_id, execution_id, task_id, name, attempt,"
        " ready_at, input, trace, lease_owner, lease_until)"
        " SELECT i, e, t, n, a, %s, p, r, CASE WHEN o <= %s THEN %s END,"
        " CASE WHEN o <= %s THEN %s::bigint END"
        " FROM unnest(%b::text[], %b::text[], %b::integer[], %b::text[], %b::integer[],"
        " %b::text[], %b::text[]) WITH ORDINALITY AS w(i, e, t, n, a, p, r, o)"
        " ON CONFLICT (instance_id, execution_id, task_id) DO NOTHING"
        " RETURNING id, instance_id, execution_id, task_id, name, input, attempt, lease_owner,"
        " trace",
        (
            tx.now,
            taken,
            owner,
            taken,
            lease,
            *columns,
        ),
    )
    rows = await cur.fetchall()
    if take is not None and owner is not None:
        take.items.extend(activity_from_row(r, owner, r[8]) for r in rows if r[7] is not None)
    queued = any(r[7] is None for r in rows)
    if queued:
        tx.notes.add("a")
    return queued


async def _write_outcomes(tx: Tx, accepted: Sequence[OrchestrationCommit]) -> None:
    """The committed rows, last and in one statement: each decision's outcome."""
    await tx.flush()
    updates = []
    for commit in accepted:
        iid, owner = commit.item.instance_id, commit.item.lease_owner
        row = tx.rows[iid]
        assert row is not None
        row.lease_owner = row.lease_expires = None
        fresh = commit.new_execution is not None  # a new execution has no outcome yet
        failure = None if fresh or not commit.failure else _FAILURE_ENCODER.encode(commit.failure)
        output = None if fresh else commit.output
        updates.append((iid, row.status, commit.custom_status, output, failure, row.length, owner))
    await tx.c.execute(
        # (the worker that decided it sticks: it holds the lease, or took the instance
        # idle to decide on results, see `commit_with_results`)
        "UPDATE instances AS i SET status = u.s, custom_status = u.c, output = u.o,"
        " failure = u.f, updated_at = %s, history_length = u.n, lease_owner = NULL,"
        " lease_expires = NULL, sticky_owner = u.w"
        " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[],"
        " %b::integer[], %b::text[]) AS u(id, s, c, o, f, n, w) WHERE i.instance_id = u.id",
        (tx.now, *arrays.columns(updates, Text, Text, Text, Text, Bytes, Int8, Text)),
    )


async def _continue_as_new(
    tx: Tx, iid: str, start: ExecutionStarted, carried: Sequence[Message]
) -> None:
    # The next execution begins with its start, then the carried events, then what came
    # for the instance (external events, suspend/resume/terminate) in arrival order.
    c = tx.c
    await tx.flush()
    cur = await c.execute(
        "DELETE FROM messages WHERE instance_id = %s RETURNING id, kind, visible_at, event",
        (iid,),
    )
    kept = sorted(r for r in await cur.fetchall() if r[1] in _INSTANCE_KINDS)
    await c.execute("DELETE FROM history WHERE instance_id = %s", (iid,))
    row = tx.rows[iid]
    assert row is not None
    row.execution_id, row.status, row.length = (
        start.execution_id,
        OrchestrationStatus.PENDING.value,
        0,
    )
    await c.execute(
        # (its status, length, output and failure are written with the commit's outcome)
        "UPDATE instances SET execution_id = %s, input = %s WHERE instance_id = %s",
        (start.execution_id, start.input, iid),
    )
    # (until the start is decided, only a start or a terminate is work: see `delivery`)
    _queue(tx, iid, start, None, wakes=True)
    for m in carried:
        _queue(tx, iid, m.event, None, wakes=isinstance(m.event, STARTERS))
    tx.pending.extend((iid, k, v, k in _STARTER_KINDS, e) for _, k, v, e in kept)


async def _start_child(tx: Tx, child: NewInstance) -> None:
    try:
        await create(tx, child)  # raises before it writes anything
    except OrchestrationAlreadyExistsError as e:
        parent = child.start.parent
        if parent is None:
            return
        failure = ChildOrchestrationFailed(
            timestamp=dt(tx.now),
            task_id=parent.task_id,
            failure=FailureDetails.from_exception(e),
        )
        await deliver(
            tx,
            Message(
                instance_id=parent.instance_id, event=failure, execution_id=parent.execution_id
            ),
        )


async def abandon(
    tx: Tx, item: OrchestrationWorkItem, delay: int, error: FailureDetails | None
) -> None:
    iid = item.instance_id
    row = await tx.row(iid)
    if row is None or row.lease_owner != item.lease_owner:
        return
    row.lease_owner, row.lease_expires = None, tx.now + delay
    tx.notes.add("i")
    # Held back for `delay` by a lease that no worker holds; anyone's after that.
    await tx.c.execute(
        "UPDATE instances SET lease_owner = NULL, lease_expires = %s, sticky_owner = NULL"
        " WHERE instance_id = %s",
        (tx.now + delay, iid),
    )
    if error is not None:
        await tx.c.execute(
            "UPDATE instances SET failure = %s, updated_at = %s WHERE instance_id = %s",
            (_FAILURE_ENCODER.encode(error), tx.now, iid),
        )


# -- activity work ----------------------------------------------------------------------


async def next_wake(c: Conn, owner: str | None, sticky: int) -> int | None:
    # As `claim` sees it: a lease holds an instance until it runs out, and an instance
    # that another worker decided last waits `sticky` microseconds for it first.
    cur = await c.execute(
        "SELECT MIN(GREATEST(m.visible_at, COALESCE(i.lease_expires, 0),"
        "   CASE WHEN %(owner)s::text IS NULL OR i.sticky_owner IS NULL"
        "     OR i.sticky_owner = %(owner)s THEN 0 ELSE m.visible_at + %(sticky)s END))"
        " FROM messages AS m JOIN instances AS i ON i.instance_id = m.instance_id"
        " WHERE m.wakes",
        {"owner": owner, "sticky": sticky},
    )
    row = await cur.fetchone()
    return None if row is None else cast(int | None, row[0])
