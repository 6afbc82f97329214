"""The SQLite store's schema, and its transactions as plain functions on the connection thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final, TypeVar, cast

import msgspec

from durable.core.errors import (
    CorruptHistoryError,
    OrchestrationNotFoundError,
    OrchestrationStateError,
)
from durable.core.events import (
    ExecutionRewound,
    FailureDetails,
    HistoryEvent,
    InboundEvent,
)
from durable.core.history import decode_event, decode_events, encode_event, encode_events
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.store.base import (
    INSTANCE_MESSAGES,
    STARTERS,
    ActivityResult,
    ActivityWorkItem,
    InstancePage,
    InstanceQuery,
    Message,
    NewInstance,
    OrchestrationWorkItem,
    activity_from_row,
    claimable,
    delivery,
    replaces,
    state_from_row,
    us,
)
from durable.store.flow import flow_holder

Conn = sqlite3.Connection

SCHEMA_VERSION: Final = 4

# Each entry moves the schema from version i to i + 1; never edit one that has shipped.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE instances (
        instance_id     TEXT PRIMARY KEY,
        ord             INTEGER NOT NULL UNIQUE,  -- creation order, for listing
        name            TEXT NOT NULL,
        execution_id    TEXT NOT NULL,
        parent_id       TEXT,
        status          TEXT NOT NULL,
        created_at      INTEGER NOT NULL,         -- times: microseconds since 1970, UTC
        updated_at      INTEGER NOT NULL,
        scheduled_start INTEGER,
        output          TEXT,
        custom_status   TEXT,
        failure         BLOB,
        history_length  INTEGER NOT NULL DEFAULT 0,
        wake_at         INTEGER,                  -- when it next has work; NULL: none
        lease_owner     TEXT,
        lease_expires   INTEGER
    );
    CREATE INDEX instances_wake ON instances (wake_at) WHERE wake_at IS NOT NULL;
    CREATE INDEX instances_parent ON instances (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX instances_status ON instances (status, ord);
    CREATE INDEX instances_name ON instances (name, ord);

    -- Payloads live apart from the rows that leases and wake-ups update all the time:
    -- SQLite rewrites a whole row on update, and a claim must not copy a 2 MiB input.
    CREATE TABLE inputs (
        instance_id TEXT PRIMARY KEY,
        input       TEXT
    );

    -- The append-only log of the current execution of each instance.
    CREATE TABLE history (
        instance_id TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        event       BLOB NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;

    -- Inbound events not yet in a history: results, external events, and timers (a
    -- timer is a TimerFired message invisible until its due time).
    CREATE TABLE messages (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        kind        TEXT NOT NULL,
        visible_at  INTEGER,
        event       BLOB NOT NULL
    );
    CREATE INDEX messages_instance ON messages (instance_id, id);

    CREATE TABLE activities (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id  TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        task_id      INTEGER NOT NULL,
        name         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        ready_at     INTEGER NOT NULL,            -- claimable from then: creation or lease end
        lease_owner  TEXT,
        UNIQUE (instance_id, execution_id, task_id)
    );
    CREATE INDEX activities_ready ON activities (ready_at);
    CREATE INDEX activities_instance ON activities (instance_id);

    CREATE TABLE activity_inputs (
        id    INTEGER PRIMARY KEY,                -- activities.id
        input TEXT
    );
    """,
    """
    -- Flow control: concurrency slots held by running activities, and the starts (with
    -- their tokens) inside each budget's sliding window. Shared by every worker.
    CREATE TABLE flow_slots (
        key     TEXT NOT NULL,
        holder  TEXT NOT NULL,                    -- flow_holder(): activity id and lease owner
        expires INTEGER NOT NULL,
        PRIMARY KEY (key, holder)
    ) WITHOUT ROWID;
    CREATE TABLE flow_starts (
        key     TEXT NOT NULL,
        at      INTEGER NOT NULL,
        holder  TEXT NOT NULL,
        tokens  INTEGER NOT NULL,
        PRIMARY KEY (key, at, holder)
    ) WITHOUT ROWID;

    -- Named streams of chunks that activities write and clients read while they run.
    CREATE TABLE streams (
        instance_id TEXT NOT NULL,
        name        TEXT NOT NULL,
        idx         INTEGER NOT NULL,             -- -1: the stream is closed
        task_id     INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        data        TEXT,
        PRIMARY KEY (instance_id, name, idx)
    ) WITHOUT ROWID;
    """,
    """
    -- History kept one row per decision, its events as one JSON array: fewer rows to
    -- write per step. Each old row (one event) becomes a chunk of one.
    CREATE TABLE history_chunks (
        instance_id TEXT NOT NULL,
        seq         INTEGER NOT NULL,             -- the position of its first event
        events      BLOB NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;
    INSERT INTO history_chunks (instance_id, seq, events)
        SELECT instance_id, seq, CAST('[' || CAST(event AS TEXT) || ']' AS BLOB) FROM history;
    DROP TABLE history;
    ALTER TABLE history_chunks RENAME TO history;

    -- The unique (instance_id, execution_id, task_id) index finds an instance's activities.
    DROP INDEX activities_instance;
    """,
    """
    -- The traceparent of the decision that scheduled the activity (durable.tracing).
    ALTER TABLE activity_inputs ADD COLUMN trace TEXT;
    """,
)


_TERMINAL = tuple(s.value for s in OrchestrationStatus if s.is_terminal)
_FAILED = OrchestrationStatus.FAILED.value
_RUNNING = OrchestrationStatus.RUNNING.value
_INSTANCE_KINDS = tuple(c.__name__ for c in INSTANCE_MESSAGES)  # rows store the kind's name
_STARTER_KINDS = tuple(c.__name__ for c in STARTERS)
_REWOUND = ExecutionRewound.__name__

_FAILURE_ENCODER = msgspec.json.Encoder()
_FAILURE_DECODER = msgspec.json.Decoder(FailureDetails)

_STATE_COLUMNS = (
    "i.instance_id, name, status, created_at, updated_at, p.input, output, custom_status, "
    "failure, parent_id, execution_id, scheduled_start"
)
_STATE_TABLES = "instances AS i LEFT JOIN inputs AS p ON p.instance_id = i.instance_id"


def _kind(event: InboundEvent) -> str:
    return type(event).__name__


def create(raw: Conn, instance: NewInstance, now: int) -> None:
    start = instance.start
    row = raw.execute(
        "SELECT status FROM instances WHERE instance_id = ?", (start.instance_id,)
    ).fetchone()
    if row is not None:
        if not replaces(instance, row[0]):
            return
        _delete(raw, [start.instance_id])
    visible = None if instance.visible_at is None else us(instance.visible_at)
    parent = start.parent
    forked = bool(instance.history)
    status = OrchestrationStatus.RUNNING if forked else OrchestrationStatus.PENDING
    raw.execute(
        "INSERT INTO instances (instance_id, ord, name, execution_id, parent_id, status,"
        " created_at, updated_at, scheduled_start, history_length, wake_at)"
        " VALUES (?, (SELECT COALESCE(MAX(ord), 0) + 1 FROM instances), ?, ?, ?, ?, ?, ?, ?, ?,"
        " ?)",
        (
            start.instance_id,
            start.name,
            start.execution_id,
            parent.instance_id if parent else None,
            status.value,
            now,
            now,
            visible,
            len(instance.history),
            visible or 0,
        ),
    )
    raw.execute(
        "INSERT INTO inputs (instance_id, input) VALUES (?, ?)", (start.instance_id, start.input)
    )
    if forked:
        raw.execute(
            "INSERT INTO history (instance_id, seq, events) VALUES (?, 0, ?)",
            (start.instance_id, encode_events(instance.history)),
        )
    first = instance.resume if forked and instance.resume is not None else start
    _insert_message(raw, start.instance_id, first, visible)


def _delete(raw: Conn, ids: Sequence[str]) -> None:
    params = [(i,) for i in ids]
    raw.executemany(
        "DELETE FROM activity_inputs WHERE id IN (SELECT id FROM activities WHERE instance_id = ?)",
        params,
    )
    for table in ("history", "messages", "activities", "inputs", "streams", "instances"):
        raw.executemany(f"DELETE FROM {table} WHERE instance_id = ?", params)  # noqa: S608


def _insert_message(raw: Conn, iid: str, event: InboundEvent, visible: int | None) -> None:
    raw.execute(
        "INSERT INTO messages (instance_id, kind, visible_at, event) VALUES (?, ?, ?, ?)",
        (iid, _kind(event), visible, encode_event(event)),
    )


def send(raw: Conn, message: Message, now: int) -> None:
    if not _deliver(raw, message, now):
        exists = raw.execute(
            "SELECT 1 FROM instances WHERE instance_id = ?", (message.instance_id,)
        ).fetchone()
        if exists is None:
            raise OrchestrationNotFoundError(
                f"no orchestration has id {message.instance_id!r}; check the id, or "
                "schedule the orchestration first"
            )


def _deliver(raw: Conn, message: Message, now: int) -> bool:
    """Queue `message` for its instance; False if the instance is unknown or ignores it."""
    return _deliver_many(raw, [message], now)[0]


def _waking(status: str, length: int) -> tuple[str, tuple[str, ...]]:
    """Which messages give an instance with this status and history length work: a
    condition on `messages` and its arguments."""
    if status in _TERMINAL:
        return "kind = ?", (_REWOUND if status == _FAILED else "",)
    if length == 0:
        return "kind IN (?, ?)", tuple(_STARTER_KINDS)
    return "1", ()


def _refresh_wake(raw: Conn, iid: str, not_before: int = 0) -> None:
    """Recompute when `iid` next has work to claim, after its messages changed."""
    row = raw.execute(
        "SELECT status, history_length FROM instances WHERE instance_id = ?", (iid,)
    ).fetchone()
    if row is None:
        return
    which, args = _waking(*row)
    # (MAX with the floor keeps NULL, no work, as NULL)
    raw.execute(
        "UPDATE instances SET wake_at = (SELECT MAX(MIN(COALESCE(visible_at, 0)), ?)"  # noqa: S608 - `which` is a constant
        f" FROM messages WHERE instance_id = ? AND {which}) WHERE instance_id = ?",
        (not_before, iid, *args, iid),
    )


def get_state(raw: Conn, iid: str) -> OrchestrationState | None:
    row = raw.execute(
        f"SELECT {_STATE_COLUMNS} FROM {_STATE_TABLES} WHERE i.instance_id = ?",  # noqa: S608
        (iid,),
    ).fetchone()
    return None if row is None else state_from_row(row)


def history(raw: Conn, iid: str, execution_id: str | None) -> list[HistoryEvent]:
    if execution_id is not None:
        row = raw.execute(
            "SELECT execution_id FROM instances WHERE instance_id = ?", (iid,)
        ).fetchone()
        if row is None or row[0] != execution_id:
            return []
    rows = raw.execute(
        "SELECT seq, events FROM history WHERE instance_id = ? ORDER BY seq", (iid,)
    ).fetchall()
    events: list[HistoryEvent] = []
    for seq, data in rows:
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


def list_page(raw: Conn, q: InstanceQuery) -> InstancePage:
    where = ["ord > ?"]
    args: list[Any] = [int(q.after) if q.after else 0]
    if q.statuses:
        where.append(f"status IN ({', '.join('?' * len(q.statuses))})")
        args.extend(s.value for s in q.statuses)
    if q.name is not None:
        where.append("name = ?")
        args.append(q.name)
    if q.created_from is not None:
        where.append("created_at >= ?")
        args.append(us(q.created_from))
    if q.created_to is not None:
        where.append("created_at <= ?")
        args.append(us(q.created_to))
    if q.entities is not None:
        where.append("substr(i.instance_id, 1, 1) " + ("=" if q.entities else "<>") + " '@'")
    if q.id_prefix:
        where.append("substr(i.instance_id, 1, ?) = ?")
        args += [len(q.id_prefix), q.id_prefix]
    rows = raw.execute(
        f"SELECT {_STATE_COLUMNS}, ord FROM {_STATE_TABLES} WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY ord LIMIT ?",
        (*args, q.limit + 1),
    ).fetchall()
    page = rows[: q.limit]
    return InstancePage(
        instances=tuple(state_from_row(r) for r in page),
        next_token=str(page[-1][12]) if len(rows) > q.limit else None,
    )


def purge(raw: Conn, ids: list[str], recursive: bool) -> int:
    found: list[str] = []
    seen: set[str] = set()
    queue = list(ids)
    while queue:
        iid = queue.pop()
        if iid in seen:
            continue
        seen.add(iid)
        row = raw.execute("SELECT status FROM instances WHERE instance_id = ?", (iid,)).fetchone()
        if row is None:
            continue
        if row[0] not in _TERMINAL:
            raise OrchestrationStateError(
                f"orchestration {iid!r} is {row[0]}; only finished instances can be purged:"
                " terminate it first"
            )
        found.append(iid)
        if recursive:
            queue.extend(
                r[0]
                for r in raw.execute(
                    "SELECT instance_id FROM instances WHERE parent_id = ?", (iid,)
                )
            )
    _delete(raw, found)
    return len(found)


def has_work(raw: Conn, owner: str, limit: int, now: int, expires: int) -> bool:
    """Whether `claim` would find an instance to look at (a read, without the lock)."""
    return (
        raw.execute(
            "SELECT 1 FROM instances WHERE wake_at <= ?"
            " AND (lease_expires IS NULL OR lease_expires <= ? OR lease_owner = ?) LIMIT 1",
            (now, now, owner),
        ).fetchone()
        is not None
    )


def has_activities(raw: Conn, owner: str, limit: int, now: int, expires: int) -> bool:
    """Whether `claim_activities` would find an activity (a read, without the lock)."""
    row = raw.execute("SELECT 1 FROM activities WHERE ready_at <= ? LIMIT 1", (now,)).fetchone()
    return row is not None


def claim(raw: Conn, owner: str, limit: int, now: int, expires: int) -> list[OrchestrationWorkItem]:
    rows = raw.execute(
        "SELECT instance_id, execution_id, name, history_length, status FROM instances"
        " WHERE wake_at <= ? AND (lease_expires IS NULL OR lease_expires <= ? OR lease_owner = ?)"
        " ORDER BY wake_at LIMIT ?",
        (now, now, owner, limit),
    ).fetchall()
    visible: dict[str, list[tuple[int, str, bytes]]] = {r[0]: [] for r in rows}
    for batch in _batches(list(visible)):
        for iid, mid, kind, event in raw.execute(
            "SELECT instance_id, id, kind, event FROM messages"  # noqa: S608 - marks only
            f" WHERE instance_id IN ({', '.join('?' * len(batch))})"
            " AND COALESCE(visible_at, 0) <= ? ORDER BY id",
            (*batch, now),
        ):
            visible[iid].append((mid, kind, event))
    items: list[OrchestrationWorkItem] = []
    for iid, execution_id, name, length, status in rows:
        found = visible[iid]
        if not claimable(status, length, {k for _, k, _ in found}):
            _refresh_wake(raw, iid)  # nothing to do yet: sleep until there is
            continue
        try:
            messages = tuple(cast(InboundEvent, decode_event(e)) for _, _, e in found)
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            error = CorruptHistoryError(
                f"a message to orchestration {iid!r} cannot be decoded: {e}"
            )
            raw.execute(
                "UPDATE instances SET failure = ?, updated_at = ?, wake_at = ?"
                " WHERE instance_id = ?",
                (
                    _FAILURE_ENCODER.encode(FailureDetails.from_exception(error)),
                    now,
                    now + 60_000_000,
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
                message_ids=tuple(i for i, _, _ in found),
                lease_owner=owner,
            )
        )
    raw.executemany(
        "UPDATE instances SET lease_owner = ?, lease_expires = ? WHERE instance_id = ?",
        [(owner, expires, item.instance_id) for item in items],
    )
    return items


def abandon(
    raw: Conn,
    item: OrchestrationWorkItem,
    now: int,
    not_before: int,
    error: FailureDetails | None,
) -> None:
    row = raw.execute(
        "SELECT lease_owner FROM instances WHERE instance_id = ?", (item.instance_id,)
    ).fetchone()
    if row is None or row[0] != item.lease_owner:
        return
    raw.execute(
        "UPDATE instances SET lease_owner = NULL, lease_expires = NULL WHERE instance_id = ?",
        (item.instance_id,),
    )
    if error is not None:
        raw.execute(
            "UPDATE instances SET failure = ?, updated_at = ? WHERE instance_id = ?",
            (_FAILURE_ENCODER.encode(error), now, item.instance_id),
        )
    _refresh_wake(raw, item.instance_id, not_before)


def claim_activities(
    raw: Conn, owner: str, limit: int, now: int, expires: int
) -> list[ActivityWorkItem]:
    rows = raw.execute(
        "SELECT a.id, instance_id, execution_id, task_id, name, input, attempt, trace"
        " FROM activities AS a LEFT JOIN activity_inputs AS p ON p.id = a.id"
        " WHERE ready_at <= ? ORDER BY ready_at, a.id LIMIT ?",
        (now, limit),
    ).fetchall()
    raw.executemany(
        "UPDATE activities SET lease_owner = ?, ready_at = ? WHERE id = ?",
        [(owner, expires, r[0]) for r in rows],
    )
    return [activity_from_row(r, owner, r[7]) for r in rows]


def complete_activities(raw: Conn, results: Sequence[ActivityResult], now: int) -> None:
    # One result per work item (the first); the rest: another worker completed them.
    unique = list({r.item.id: r for r in reversed(results)}.values())[::-1]
    found = remove_activities(raw, [r.item.id for r in unique])
    deliver_results(raw, [r for r in unique if r.item.id in found], now)


def deliver_results(raw: Conn, results: Sequence[ActivityResult], now: int) -> None:
    """Deliver activity results (their work items removed) to their instances."""
    messages = [
        Message(instance_id=r.item.instance_id, event=r.event, execution_id=r.item.execution_id)
        for r in results
    ]
    _deliver_many(raw, messages, now)


def remove_activities(raw: Conn, ids: Sequence[int]) -> set[int]:
    """Delete these activities' work items; the ids of those that were there."""
    found: set[int] = set()
    for batch in _batches(ids):
        marks = ", ".join("?" * len(batch))
        query = f"SELECT id FROM activities WHERE id IN ({marks})"  # noqa: S608 - marks only
        found |= {row[0] for row in raw.execute(query, batch)}
        raw.execute(f"DELETE FROM activities WHERE id IN ({marks})", batch)  # noqa: S608
        raw.execute(f"DELETE FROM activity_inputs WHERE id IN ({marks})", batch)  # noqa: S608
    return found


T = TypeVar("T")

_BATCH = 400
"""Rows per `IN (...)` list (SQLite allows 32,766 parameters; older builds 999)."""


def _batches(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def _deliver_many(raw: Conn, messages: Sequence[Message], now: int) -> list[bool]:
    """Queue each message for its instance, in order, with a few statements for all of
    them; per message, False if its instance is unknown or ignores it."""
    ids = sorted({m.instance_id for m in messages})
    rows: dict[str, list[Any]] = {}
    for batch in _batches(ids):
        marks = ", ".join("?" * len(batch))
        for iid, *row in raw.execute(
            "SELECT instance_id, status, execution_id, history_length FROM instances"  # noqa: S608
            f" WHERE instance_id IN ({marks})",
            batch,
        ):
            rows[iid] = row
    delivered: list[bool] = []
    inserts: list[tuple[str, str, int | None, bytes]] = []
    wakes: dict[str, int] = {}
    for m in messages:
        row = rows.get(m.instance_id)
        fate = "drop" if row is None else delivery(row[0], row[1], row[2], m)
        delivered.append(fate != "drop")
        if row is None or fate == "drop":
            continue
        visible = None if m.visible_at is None else us(m.visible_at)
        inserts.append((m.instance_id, _kind(m.event), visible, encode_event(m.event)))
        if isinstance(m.event, ExecutionRewound):  # it runs again (its history says how)
            row[0] = OrchestrationStatus.RUNNING.value  # (what the messages after it meet)
            raw.execute(
                "UPDATE instances SET status = ?, failure = NULL, updated_at = ?"
                " WHERE instance_id = ?",
                (row[0], now, m.instance_id),
            )
        if fate == "wake":
            due = visible if visible is not None else 0
            wakes[m.instance_id] = min(due, wakes.get(m.instance_id, due))
    raw.executemany(
        "INSERT INTO messages (instance_id, kind, visible_at, event) VALUES (?, ?, ?, ?)", inserts
    )
    raw.executemany(
        "UPDATE instances SET wake_at = MIN(COALESCE(wake_at, ?), ?) WHERE instance_id = ?",
        [(due, due, iid) for iid, due in wakes.items()],
    )
    return delivered


def abandon_activities(raw: Conn, items: Sequence[ActivityWorkItem], ready_at: int) -> None:
    raw.executemany(
        "UPDATE activities SET lease_owner = NULL, ready_at = ? WHERE id = ? AND lease_owner = ?",
        [(ready_at, i.id, i.lease_owner) for i in items],
    )


def renew(
    raw: Conn, owner: str, instance_ids: Sequence[str], activity_ids: Sequence[int], expires: int
) -> None:
    raw.executemany(
        "UPDATE instances SET lease_expires = ? WHERE instance_id = ? AND lease_owner = ?",
        [(expires, i, owner) for i in instance_ids],
    )
    raw.executemany(
        "UPDATE activities SET ready_at = ? WHERE id = ? AND lease_owner = ?",
        [(expires, i, owner) for i in activity_ids],
    )
    raw.executemany(
        "UPDATE flow_slots SET expires = ? WHERE holder = ?",
        [(expires, flow_holder(i, owner)) for i in activity_ids],
    )


def next_wake(raw: Conn) -> int | None:
    # Instances only: expired activity leases are found by polling (a crash is rare).
    wake: int | None = raw.execute(
        "SELECT MIN(MAX(wake_at, COALESCE(lease_expires, 0))) FROM instances"
        " WHERE wake_at IS NOT NULL"
    ).fetchone()[0]
    return wake
