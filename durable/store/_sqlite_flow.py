"""The SQLite store's flow-control budgets and activity streams, as plain functions on the
connection thread (their tables are in `_sqlite_sql.MIGRATIONS`)."""

from __future__ import annotations

from durable.store._sqlite_sql import Conn
from durable.store.base import StoredChunk, StreamRead
from durable.store.flow import FlowLimit, wait_seconds


def acquire_flow(  # noqa: PLR0917 - SqliteStore._write passes arguments positionally
    raw: Conn, key: str, holder: str, limit: FlowLimit, tokens: int, now: int, expires: int
) -> float:
    raw.execute("DELETE FROM flow_slots WHERE key = ? AND expires <= ?", (key, now))
    horizon = now - int(limit.window_seconds * 1e6)
    raw.execute("DELETE FROM flow_starts WHERE key = ? AND at <= ?", (key, horizon))
    running = raw.execute("SELECT COUNT(*) FROM flow_slots WHERE key = ?", (key,)).fetchone()[0]
    started = [
        (at / 1e6, t)
        for at, t in raw.execute(
            "SELECT at, tokens FROM flow_starts WHERE key = ? ORDER BY at", (key,)
        )
    ]
    wait = wait_seconds(limit, now / 1e6, running, started, tokens)
    if wait > 0:
        return wait
    if limit.max_concurrent is not None:
        raw.execute(
            "INSERT OR REPLACE INTO flow_slots (key, holder, expires) VALUES (?, ?, ?)",
            (key, holder, expires),
        )
    if limit.rates:
        raw.execute(
            "INSERT OR REPLACE INTO flow_starts (key, at, holder, tokens) VALUES (?, ?, ?, ?)",
            (key, now, holder, tokens),
        )
    return 0.0


def release_flow(raw: Conn, key: str, holder: str, tokens: int | None) -> None:
    raw.execute("DELETE FROM flow_slots WHERE key = ? AND holder = ?", (key, holder))
    if tokens is not None:
        raw.execute(
            "UPDATE flow_starts SET tokens = ? WHERE key = ? AND holder = ?", (tokens, key, holder)
        )


_CLOSED = -1


def append_stream(
    raw: Conn, instance_id: str, name: str, chunk: StoredChunk | None, close: bool
) -> bool:
    """Returns whether anything was written."""
    exists = raw.execute("SELECT 1 FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
    if exists is None:
        return False
    closed, count = raw.execute(
        "SELECT COUNT(*) FILTER (WHERE idx = ?), COUNT(*) FILTER (WHERE idx >= 0) FROM streams"
        " WHERE instance_id = ? AND name = ?",
        (_CLOSED, instance_id, name),
    ).fetchone()
    if closed:
        return False
    rows = []
    if chunk is not None:
        rows.append((count, chunk.task_id, chunk.attempt, chunk.data))
    if close:
        rows.append((_CLOSED, chunk.task_id if chunk else 0, chunk.attempt if chunk else 0, None))
    raw.executemany(
        "INSERT INTO streams (instance_id, name, idx, task_id, attempt, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(instance_id, name, *row) for row in rows],
    )
    return bool(rows)


def read_stream(raw: Conn, instance_id: str, name: str, after: int, limit: int) -> StreamRead:
    rows = raw.execute(
        "SELECT idx, task_id, attempt, data FROM streams"
        " WHERE instance_id = ? AND name = ? AND idx > ? ORDER BY idx LIMIT ?",
        (instance_id, name, max(after, _CLOSED), limit),
    ).fetchall()
    chunks = tuple(StoredChunk(index=r[0], task_id=r[1], attempt=r[2], data=r[3]) for r in rows)
    closed = False
    if len(rows) < limit:
        closed = (
            raw.execute(
                "SELECT 1 FROM streams WHERE instance_id = ? AND name = ? AND idx = ?",
                (instance_id, name, _CLOSED),
            ).fetchone()
            is not None
        )
    return StreamRead(chunks=chunks, closed=closed)
