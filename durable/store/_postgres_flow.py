"""The Postgres store's flow-control budgets and activity streams (tables in
`_postgres_sql.MIGRATIONS`). Each budget and each stream is changed under a transaction
advisory lock of its own, so that counting and numbering are exact across processes
without locking any instance row."""

from __future__ import annotations

from durable.store._postgres_sql import Conn, Tx
from durable.store.base import StoredChunk, StreamRead
from durable.store.flow import FlowLimit, wait_seconds

_CLOSED = -1


async def _lock(tx: Tx, *parts: str) -> None:
    # Advisory locks are database-wide: the hub's schema keeps hubs apart.
    await tx.c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || %s, 0))",
        ("\x1f" + "\x1f".join(parts),),
    )


async def acquire_flow(  # noqa: PLR0917 - the store passes arguments positionally
    tx: Tx, key: str, holder: str, limit: FlowLimit, tokens: int, lease: int
) -> float:
    await _lock(tx, "flow", key)
    c, now = tx.c, tx.now
    await c.execute("DELETE FROM flow_slots WHERE key = %s AND expires <= %s", (key, now))
    horizon = now - int(limit.window_seconds * 1e6)
    await c.execute("DELETE FROM flow_starts WHERE key = %s AND at <= %s", (key, horizon))
    cur = await c.execute("SELECT COUNT(*) FROM flow_slots WHERE key = %s", (key,))
    row = await cur.fetchone()
    running = int(row[0]) if row else 0
    cur = await c.execute("SELECT at, tokens FROM flow_starts WHERE key = %s ORDER BY at", (key,))
    started = [(at / 1e6, int(t)) for at, t in await cur.fetchall()]
    wait = wait_seconds(limit, now / 1e6, running, started, tokens)
    if wait > 0:
        return wait
    if limit.max_concurrent is not None:
        await c.execute(
            "INSERT INTO flow_slots (key, holder, expires) VALUES (%s, %s, %s)"
            " ON CONFLICT (key, holder) DO UPDATE SET expires = EXCLUDED.expires",
            (key, holder, now + lease),
        )
    if limit.rates:
        await c.execute(
            "INSERT INTO flow_starts (key, at, holder, tokens) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (key, at, holder) DO UPDATE SET tokens = EXCLUDED.tokens",
            (key, now, holder, tokens),
        )
    return 0.0


async def release_flow(tx: Tx, key: str, holder: str, tokens: int | None) -> None:
    await _lock(tx, "flow", key)
    await tx.c.execute("DELETE FROM flow_slots WHERE key = %s AND holder = %s", (key, holder))
    if tokens is not None:
        await tx.c.execute(
            "UPDATE flow_starts SET tokens = %s WHERE key = %s AND holder = %s",
            (tokens, key, holder),
        )
    tx.notes.add("a")


async def append_stream(
    tx: Tx, instance_id: str, name: str, chunk: StoredChunk | None, close: bool
) -> bool:
    """Returns whether anything was written."""
    await _lock(tx, "stream", instance_id, name)
    c = tx.c
    # KEY SHARE: a purge (which deletes the row) waits for this append, or this append
    # sees the row gone; either way no chunk outlives its instance.
    cur = await c.execute(
        "SELECT 1 FROM instances WHERE instance_id = %s FOR KEY SHARE", (instance_id,)
    )
    if await cur.fetchone() is None:
        return False
    cur = await c.execute(
        "SELECT COUNT(*) FILTER (WHERE idx = %s), COUNT(*) FILTER (WHERE idx >= 0)"
        " FROM streams WHERE instance_id = %s AND name = %s",
        (_CLOSED, instance_id, name),
    )
    counts = await cur.fetchone()
    assert counts is not None
    closed, count = counts
    if closed:
        return False
    rows = []
    if chunk is not None:
        rows.append((count, chunk.task_id, chunk.attempt, chunk.data))
    if close:
        rows.append((_CLOSED, chunk.task_id if chunk else 0, chunk.attempt if chunk else 0, None))
    async with c.cursor() as many:
        await many.executemany(
            "INSERT INTO streams (instance_id, name, idx, task_id, attempt, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(instance_id, name, *row) for row in rows],
        )
    if rows:
        tx.notes.add("s")
    return bool(rows)


async def read_stream(c: Conn, instance_id: str, name: str, after: int, limit: int) -> StreamRead:
    cur = await c.execute(
        "SELECT idx, task_id, attempt, data FROM streams"
        " WHERE instance_id = %s AND name = %s AND idx > %s ORDER BY idx LIMIT %s",
        (instance_id, name, max(after, _CLOSED), limit),
    )
    rows = await cur.fetchall()
    chunks = tuple(StoredChunk(index=r[0], task_id=r[1], attempt=r[2], data=r[3]) for r in rows)
    closed = False
    if len(rows) < limit:
        cur = await c.execute(
            "SELECT 1 FROM streams WHERE instance_id = %s AND name = %s AND idx = %s",
            (instance_id, name, _CLOSED),
        )
        closed = await cur.fetchone() is not None
    return StreamRead(chunks=chunks, closed=closed)
