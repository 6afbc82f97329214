"""The SQLite store: one database file, shared by any number of workers and processes.

Every write is one `BEGIN IMMEDIATE` transaction, run whole on the connection's thread
(aiosqlite's), so a decision costs one hop to that thread and one WAL commit however many
rows it touches. Many decisions committed together share the transaction (group commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from durable.core.errors import StoreBusyError, StoreError, StoreFullError
from durable.core.events import FailureDetails, HistoryEvent
from durable.core.state import OrchestrationState
from durable.store import _sqlite_commit as decisions
from durable.store import _sqlite_flow as flow
from durable.store import _sqlite_sql as sql
from durable.store._sqlite_owners import OwnerLocks, end_leases
from durable.store._sqlite_sql import SCHEMA_VERSION, Conn
from durable.store.base import (
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
    opt_dt,
    us,
    utc_now,
)
from durable.store.flow import FlowLimit

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")
log = logging.getLogger("durable.store.sqlite")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_PRAGMA_NAME = re.compile(r"[a-z_]{1,64}")
_PRAGMA_VALUE = re.compile(r"-?[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True, slots=True)
class _Link:
    """An aiosqlite connection and the sqlite3 connection its thread drives."""

    conn: aiosqlite.Connection
    raw: sqlite3.Connection


class SqliteStore:
    """Keeps everything in one SQLite database file (created on first use).

    Args:
        path: the database file.
        synchronous: SQLite's `synchronous` setting: "FULL" (the default) makes every
            commit survive power loss; "NORMAL" may lose the last commits on power loss
            (never on a process crash) and is faster.
        busy_timeout: seconds a write waits for another connection's lock before
            `StoreBusyError` is raised.
        clock: the time source.
        pragmas: further SQLite settings applied when the connection opens, such as
            `{"cache_size": -65536}` (names and values are checked, never formatted
            into SQL unchecked).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 10.0,
        clock: Clock = utc_now,
        pragmas: Mapping[str, int | str] | None = None,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        for name, value in (pragmas or {}).items():
            if not _PRAGMA_NAME.fullmatch(name) or not _PRAGMA_VALUE.fullmatch(str(value)):
                raise ValueError(f"invalid pragma {name!r} = {value!r}")
        self.path = Path(path)
        self.clock = clock
        self.direct_results = True
        self.orchestration_work = Notifier()
        self.activity_work = Notifier()
        self.instance_changes = Notifier()
        self.stream_writes = Notifier()
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout * 1000)
        self._pragmas = dict(pragmas or {})
        self._writer: _Link | None = None
        self._reader: _Link | None = None
        self._opening: concurrent.futures.Future[None] | None = None
        self._open_lock = threading.Lock()
        self._owners = OwnerLocks(self.path)
        self._group: list[_Grouped] = []
        self._group_queued = False
        self._group_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def __aenter__(self) -> SqliteStore:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connections -----------------------------------------------------------------
    # Two connections, each with its own thread: writes queue on one, while reads (state,
    # histories, lists) go on at once on the other, as WAL allows.

    async def _ready(self) -> tuple[_Link, _Link]:
        writer, reader = self._writer, self._reader
        if writer is not None and reader is not None:
            return writer, reader
        with self._open_lock:
            opening = self._opening
            owner = opening is None
            if opening is None:
                opening = self._opening = concurrent.futures.Future()
        if owner:
            try:
                await self._open()
                opening.set_result(None)
            except BaseException as e:
                with self._open_lock:
                    self._opening = None
                opening.set_exception(e)
                raise
        else:
            await asyncio.wrap_future(opening)
        assert self._writer is not None and self._reader is not None
        return self._writer, self._reader

    async def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = await self._connect()
        try:
            await _call(writer.conn, self._configure, writer.raw)
            await self._reap(writer)
            reader = await self._connect()
        except BaseException:
            await writer.conn.close()
            raise
        self._writer, self._reader = writer, reader

    async def _reap(self, writer: _Link) -> None:
        """End at once the leases of workers whose process is gone (see _sqlite_owners)."""
        dead = self._owners.reap()
        if not dead:
            return
        owners = [owner for owner, _, _ in dead]
        try:
            ended = await _call(
                writer.conn, _transaction, writer.raw, end_leases, (owners, us(self.clock())), None
            )
        except StoreError as e:  # (busy, say) their leases run out as usual meanwhile
            self._owners.forget(dead, unlink=False)  # the next store to open tries again
            log.warning("%s: could not end the leases of stopped workers: %s", self.path, e)
            return
        except BaseException:
            self._owners.forget(dead, unlink=False)
            raise
        self._owners.forget(dead)  # (kept locked until their leases had ended)
        if ended:
            log.info("%s: ended %d leases of %d stopped workers", self.path, ended, len(owners))

    async def _connect(self) -> _Link:
        conn = aiosqlite.connect(self.path, isolation_level=None, timeout=self._busy_ms / 1000)
        # aiosqlite's thread is not a daemon: a store the program forgot to close would
        # keep the interpreter from exiting. Nothing is lost by not waiting for it: every
        # transaction is atomic in the file.
        thread = getattr(conn, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.daemon = True
        try:
            await conn
            raw = await _call(conn, lambda: conn._conn)
            await _call(conn, raw.execute, f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as e:
            await conn.close()
            raise _store_error(e, f"cannot open {self.path}") from e
        return _Link(conn, raw)

    def _configure(self, raw: Conn) -> None:
        try:
            self._check_version(raw)  # before anything changes the file
            mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = self._to_wal(raw)
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite could not switch to WAL (got {mode!r})")
            raw.execute(f"PRAGMA synchronous = {self._synchronous}")
            raw.execute("PRAGMA foreign_keys = OFF")
            for name, value in self._pragmas.items():
                raw.execute(f"PRAGMA {name} = {value}")
            self._migrate(raw)
        except sqlite3.Error as e:
            raise _store_error(e, f"cannot open {self.path}") from e

    def _to_wal(self, raw: Conn) -> str:
        # A new file that another process opens at the same moment: the switch fails at
        # once while that process holds a lock (SQLite calls no busy handler for it).
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                return str(raw.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def _check_version(self, raw: Conn) -> int:
        version = int(raw.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this durable "
                f"({SCHEMA_VERSION}); upgrade durable"
            )
        return version

    def _migrate(self, raw: Conn) -> None:
        if self._check_version(raw) == SCHEMA_VERSION:
            return
        raw.execute("BEGIN IMMEDIATE")  # another process may be migrating: it waits here
        try:
            version = self._check_version(raw)
            for script in sql.MIGRATIONS[version:]:
                for statement in _statements(script):
                    raw.execute(statement)
            raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            raw.execute("COMMIT")
        except BaseException:
            raw.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Close the connections; the store reopens on its next use."""
        with self._open_lock:
            links = [link for link in (self._writer, self._reader) if link is not None]
            self._writer = self._reader = None
            self._opening = None
        for link in links:
            await link.conn.close()
        self._owners.release()

    async def _write(
        self, fn: Callable[..., T], *args: Any, probe: Callable[..., bool] | None = None
    ) -> T:
        """Run `fn(raw, *args)` as one BEGIN IMMEDIATE transaction on the writer's thread.

        With `probe`, a cheap read first: if `probe(raw, *args)` is false there is nothing
        to claim, and the result is empty without taking the write lock. (Work that came
        just after the read is claimed next time; nothing is read outside the lock.)
        """
        writer, _ = await self._ready()
        return await _call(writer.conn, _transaction, writer.raw, fn, args, probe)

    async def _grouped(self, fn: Callable[..., T], *args: Any) -> T:
        """`_write(fn, *args)`, sharing one transaction (and one sync to disk) with the
        other grouped writes that are waiting for the writer by then.

        Each write of the group runs inside a savepoint: one that raises is undone alone
        and raises to its caller; the others are written. If the transaction as a whole
        fails (a full disk, a busy database), every caller of the group gets that error.
        """
        writer, _ = await self._ready()
        call: _Grouped = (fn, args, concurrent.futures.Future())
        with self._group_lock:
            self._group.append(call)
            submit = not self._group_queued
            self._group_queued = True
        if submit:
            await _call(writer.conn, self._run_group, writer.raw)
        return cast(T, await asyncio.wrap_future(call[2]))

    def _run_group(self, raw: Conn) -> None:
        """On the writer's thread: every grouped write waiting now, in one transaction."""
        with self._group_lock:
            calls, self._group = self._group, []
            self._group_queued = False
        if not calls:
            return
        try:
            outcomes = _transaction(raw, _each, (calls,), None)
        except BaseException as e:
            for _, _, future in calls:
                future.set_exception(e)
            return
        for (_, _, future), (ok, value) in zip(calls, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        _, reader = await self._ready()
        try:
            return await _call(reader.conn, fn, reader.raw, *args)
        except sqlite3.Error as e:
            raise _store_error(e, "read failed") from e

    # -- instances -------------------------------------------------------------------

    async def create_instance(self, instance: NewInstance) -> None:
        await self._grouped(sql.create, instance, us(self.clock()))
        self.orchestration_work.notify()
        self.instance_changes.notify()

    async def send(self, message: Message) -> None:
        await self._grouped(sql.send, message, us(self.clock()))
        self.orchestration_work.notify()

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        return await self._read(sql.get_state, instance_id)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        return await self._read(sql.history, instance_id, None)

    async def load_history(self, instance_id: str, execution_id: str) -> list[HistoryEvent]:
        return await self._read(sql.history, instance_id, execution_id)

    async def list_instances(self, query: InstanceQuery) -> InstancePage:
        return await self._read(sql.list_page, query)

    async def purge(self, instance_ids: Sequence[str], recursive: bool = False) -> int:
        count = await self._write(sql.purge, list(instance_ids), recursive)
        self.instance_changes.notify()
        return count

    # -- orchestration work ----------------------------------------------------------

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        self._owners.hold(owner)
        await self._ready()  # (an open ends dead workers' leases: at a time before `now`)
        now = us(self.clock())
        expires = now + int(lease_seconds * 1e6)
        return await self._write(sql.claim, owner, limit, now, expires, probe=sql.has_work)

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        if take is not None:
            self._owners.hold(take.owner)
        outcomes, queued, work = await self._write(
            decisions.commit_all, commits, us(self.clock()), take
        )
        if queued:
            self.activity_work.notify()
        if work:
            self.orchestration_work.notify()
        self.instance_changes.notify()
        return outcomes

    async def abandon_orchestration(
        self, item: OrchestrationWorkItem, retry_after: float, error: FailureDetails | None
    ) -> None:
        now = us(self.clock())
        await self._write(sql.abandon, item, now, now + int(retry_after * 1e6), error)
        self.instance_changes.notify()

    # -- activity work ---------------------------------------------------------------

    async def claim_activities(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[ActivityWorkItem]:
        self._owners.hold(owner)
        await self._ready()
        now = us(self.clock())
        expires = now + int(lease_seconds * 1e6)
        return await self._write(
            sql.claim_activities, owner, limit, now, expires, probe=sql.has_activities
        )

    async def complete_activities(self, results: Sequence[ActivityResult]) -> None:
        if results:
            await self._write(sql.complete_activities, results, us(self.clock()))
            self.orchestration_work.notify()

    async def abandon_activities(
        self, items: Sequence[ActivityWorkItem], retry_after: float = 0.0
    ) -> None:
        if items:
            ready_at = us(self.clock()) + int(max(retry_after, 0.0) * 1e6)
            await self._write(sql.abandon_activities, items, ready_at)
            self.activity_work.notify()

    async def renew_leases(
        self,
        owner: str,
        instance_ids: Sequence[str],
        activity_ids: Sequence[int],
        lease_seconds: float,
    ) -> None:
        if instance_ids or activity_ids:
            expires = us(self.clock()) + int(lease_seconds * 1e6)
            await self._write(sql.renew, owner, instance_ids, activity_ids, expires)

    async def next_wake_time(self, owner: str | None = None) -> datetime | None:
        wake = await self._read(sql.next_wake)
        return opt_dt(wake)

    # -- flow control ----------------------------------------------------------------

    async def acquire_flow(
        self, key: str, holder: str, limit: FlowLimit, tokens: int, lease_seconds: float
    ) -> float:
        now = us(self.clock())
        expires = now + int(lease_seconds * 1e6)
        return await self._write(flow.acquire_flow, key, holder, limit, tokens, now, expires)

    async def release_flow(self, key: str, holder: str, tokens: int | None) -> None:
        await self._write(flow.release_flow, key, holder, tokens)
        self.activity_work.notify()

    # -- streams ---------------------------------------------------------------------

    async def append_stream(
        self, instance_id: str, name: str, chunk: StoredChunk | None, close: bool
    ) -> None:
        if await self._write(flow.append_stream, instance_id, name, chunk, close):
            self.stream_writes.notify()

    async def read_stream(
        self, instance_id: str, name: str, after: int, limit: int = 1000
    ) -> StreamRead:
        return await self._read(flow.read_stream, instance_id, name, after, limit)


def _statements(script: str) -> list[str]:
    # executescript() would commit the migration's transaction; split it instead.
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


async def _call(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    # aiosqlite runs one function at a time on the connection's thread; handing it a
    # whole transaction makes that transaction one hop instead of one per statement.
    run = cast(Callable[..., Any], conn._execute)
    return cast(T, await run(fn, *args))


_Grouped = tuple[Callable[..., Any], tuple[Any, ...], "concurrent.futures.Future[Any]"]


def _each(raw: Conn, calls: list[_Grouped]) -> list[tuple[bool, Any]]:
    """Run each call in a savepoint of the open transaction; (True, result) or, for a call
    that raised (and was undone), (False, the exception)."""
    outcomes: list[tuple[bool, Any]] = []
    for fn, args, _ in calls:
        raw.execute("SAVEPOINT grouped")
        try:
            outcomes.append((True, fn(raw, *args)))
        except Exception as e:
            if not raw.in_transaction:  # SQLite ended it all (a full disk, say): the
                raise  # whole group fails, and nothing of it is written
            raw.execute("ROLLBACK TO grouped")
            outcomes.append(
                (
                    False,
                    _store_error(e, "nothing was written") if isinstance(e, sqlite3.Error) else e,
                )
            )
        raw.execute("RELEASE grouped")
    return outcomes


def _transaction(
    raw: Conn, fn: Callable[..., T], args: tuple[Any, ...], probe: Callable[..., bool] | None
) -> T:
    try:
        if probe is not None and not probe(raw, *args):
            return cast(T, [])  # nothing to claim (the probes guard claims, which return lists)
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as e:
        raise _store_error(e, "cannot start a write transaction") from e
    try:
        result = fn(raw, *args)
        raw.execute("COMMIT")
    except BaseException as e:
        if raw.in_transaction:
            raw.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            raise _store_error(e, "the transaction was rolled back") from e
        raise
    return result


def _store_error(e: sqlite3.Error, what: str) -> StoreError:
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        return StoreFullError(f"the SQLite store is full ({e}); {what}, nothing was written")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(e):
        return StoreBusyError(
            f"the SQLite database stayed locked by another connection past the busy "
            f"timeout ({e}); {what}: retry, or raise busy_timeout"
        )
    return StoreError(f"SQLite error: {e}; {what}")
