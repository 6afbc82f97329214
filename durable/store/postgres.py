"""The Postgres store: one database shared by workers in many processes on many machines.

The store runs its connections on an event loop of its own, in a daemon thread, so one
store serves callers on any event loop or thread (a worker in its own thread beside a
client in the web app's loop) the way the SQLite store does. Each write is one short
transaction; leases and timers are measured by the database's clock, so machines whose
clocks disagree still agree on who holds what. LISTEN/NOTIFY wakes idle workers of other
processes at once; it is only a hint, and polling finds whatever a lost notification
would have announced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors
from psycopg import sql as q
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from durable.core.errors import StoreBusyError, StoreError, StoreFullError
from durable.core.events import FailureDetails, HistoryEvent
from durable.core.state import OrchestrationState
from durable.store import _postgres_activities as activities
from durable.store import _postgres_flow as flow
from durable.store import _postgres_sql as sql
from durable.store._postgres_schema import MIGRATIONS, SCHEMA_VERSION
from durable.store._postgres_sql import Conn, Tx
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

T = TypeVar("T")

log = logging.getLogger("durable.store.postgres")

HUB_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""Task hub names: they name a Postgres schema (`durable_<hub>`) and a NOTIFY channel."""

_CLOSE_GRACE: Final = 5.0
"""Seconds `close()` lets calls in flight finish before cancelling them."""

_RETRIES: Final = 8
"""How often a transaction that lost a deadlock or serialization race is run again."""

_DB_NOW: Final = (
    "SELECT (extract(epoch FROM now()) * 1000000)::bigint,"
    " (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
)

_SESSION: Final = (
    # A transaction waiting this long for a row lock gives up (StoreBusyError; retried);
    # a session that stopped half-way through a transaction (its process paused) is
    # ended, so that its locks do not hold up every other worker.
    "SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '30s'"
)

_PIPELINE_SESSION: Final = (
    # In pipeline mode a paused client's session looks busy, not idle, so the idle
    # timeout above would never end it: PostgreSQL 17's transaction_timeout does.
    "; SET transaction_timeout = '15s'"
)


def _micros(seconds: float) -> int:
    return int(seconds * 1e6)


class PostgresStore:
    """Keeps everything in a PostgreSQL database, shared by any number of workers.

    Args:
        url: a libpq connection string or URL, `postgresql://user:pass@host/db`.
        hub: the task hub: applications with different hubs share a database without
            seeing each other's instances. Lower-case letters, digits and `_`, starting
            with a letter, at most 40 characters; its tables live in schema
            `durable_<hub>`.
        min_connections: connections the pool keeps open.
        max_connections: the most connections the pool opens (each worker process needs
            a few: claims, commits and activity completions run at once).
        connect_timeout: seconds to wait for a connection before `StoreError`.
        sticky_seconds: an instance with work goes to the worker that decided it last
            (its orchestrator is likely still in that worker's memory: nothing to load
            and replay); other workers take it once it has waited this long. 0: any
            worker, at once.
        clock: the time source. By default it is the database's clock: leases and due
            times are measured by `now()` in the database, and the time that workers stamp
            on events is the local clock corrected by its measured offset from the
            database's, so that machines with skewed clocks agree. Tests pass a fake clock,
            which then measures everything.
    """

    def __init__(
        self,
        url: str,
        *,
        hub: str = "default",
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 10.0,
        sticky_seconds: float = 0.5,
        clock: Clock | None = None,
    ) -> None:
        if not HUB_PATTERN.fullmatch(hub):
            raise ValueError(
                f"invalid task hub name {hub!r}: use 1 to 40 lower-case letters, digits or"
                " '_', starting with a letter"
            )
        if min_connections < 0 or max_connections < max(min_connections, 1):
            raise ValueError("need 0 <= min_connections <= max_connections and at least one")
        if connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if sticky_seconds < 0:
            raise ValueError("sticky_seconds must not be negative")
        self.url = url
        self.hub = hub
        self.schema = f"durable_{hub}"
        self._fixed_clock = clock is not None
        self._offset = timedelta(0)
        """The database's clock minus ours, measured at each transaction."""
        self.clock: Clock = clock or self._db_clock
        self.direct_results = True
        self.orchestration_work = Notifier()
        self.activity_work = Notifier()
        self.instance_changes = Notifier()
        self.stream_writes = Notifier()
        self._notifiers = {
            "o": self.orchestration_work,
            "a": self.activity_work,
            "i": self.instance_changes,
            "s": self.stream_writes,
        }
        self._min = min_connections
        self._max = max_connections
        self._timeout = connect_timeout
        self._sticky = _micros(sticky_seconds)
        self._owners: frozenset[str] = frozenset()
        """The workers that claim through this store (the ones that need no NOTIFY)."""
        self._id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._runner: _Runner | None = None

    def __repr__(self) -> str:
        return f"PostgresStore(hub={self.hub!r})"

    async def __aenter__(self) -> PostgresStore:
        await self._call(self._noop)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the store's own event loop ----------------------------------------------------

    async def _noop(self, runner: _Runner) -> None:
        return None

    async def _call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run `fn(runner, *args)` on the store's loop, opening the store first if need be.

        A call, once started, runs to its end on the store's thread even if the caller
        stops waiting: a transaction is never cut off half-way by the caller.
        """
        with self._lock:
            runner = self._runner
            if runner is None:
                runner = self._runner = _Runner(self)
        try:
            await asyncio.shield(asyncio.wrap_future(runner.opened))
        except Exception:
            with self._lock:  # the next call tries to open it again
                if self._runner is runner:
                    self._runner = None
            runner.stop()
            raise
        return await asyncio.shield(asyncio.wrap_future(runner.submit(fn, *args)))

    async def close(self) -> None:
        """Let calls in flight finish, close every connection, and stop the store's
        thread; the store reopens on its next use."""
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            await asyncio.wrap_future(runner.stop())

    async def _write(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`fn(tx, *args)` in one transaction, run again if it loses a deadlock race."""
        return await self._call(self._transaction, fn, args)

    async def _read(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._call(self._plain, fn, args)

    async def _transaction(
        self, runner: _Runner, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> T:
        for attempt in range(_RETRIES):
            started = False
            try:
                async with (
                    runner.connection() as conn,
                    runner.pipeline(conn),
                    conn.transaction(),
                ):
                    now = await self._now(conn)
                    started = True
                    tx = Tx(conn, now, self._owners)
                    result = await fn(tx, *args)
                    await tx.flush()
                    if tx.notes:
                        await conn.execute(
                            "SELECT pg_notify(%s, %s)",
                            (self.schema, f"{self._id}:{''.join(sorted(tx.notes))}"),
                        )
                return result
            except (errors.DeadlockDetected, errors.SerializationFailure) as e:
                if attempt == _RETRIES - 1:
                    raise StoreBusyError(f"{self!r}: a transaction kept losing races: {e}") from e
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            except psycopg.OperationalError as e:
                # A pooled connection the server dropped (a restart) fails at BEGIN or at
                # the first statement, before anything was written: take another one.
                if started or attempt >= 2:
                    raise _store_error(e, f"{self!r}: write failed") from e
            except (psycopg.Error, PoolTimeout) as e:
                raise _store_error(e, f"{self!r}: write failed") from e
        raise AssertionError("unreachable")

    async def _plain(
        self, runner: _Runner, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]
    ) -> T:
        for attempt in range(3):
            try:
                async with runner.connection() as conn:
                    return await fn(conn, *args)
            except psycopg.OperationalError as e:  # reads are safe to run again
                if attempt == 2:
                    raise _store_error(e, f"{self!r}: read failed") from e
            except (psycopg.Error, PoolTimeout) as e:
                raise _store_error(e, f"{self!r}: read failed") from e
        raise AssertionError("unreachable")

    async def _now(self, conn: Conn) -> int:
        """The transaction's time; also keeps `clock` in step with the database's."""
        if self._fixed_clock:
            return us(self.clock())
        cur = await conn.execute(_DB_NOW)
        row = await cur.fetchone()
        assert row is not None
        self._offset = timedelta(microseconds=int(row[1]) - us(utc_now()))
        return int(row[0])

    def _db_clock(self) -> datetime:
        return utc_now() + self._offset

    def _notify_local(self, letters: str) -> None:
        for letter in letters:
            notifier = self._notifiers.get(letter)
            if notifier is not None:
                notifier.notify()

    def _heard(self, payload: str) -> None:
        sender, _, letters = payload.partition(":")
        if sender != self._id:  # our own writes woke our waiters already
            self._notify_local(letters)

    # -- instances -------------------------------------------------------------------

    async def create_instance(self, instance: NewInstance) -> None:
        await self._write(sql.create, instance)
        self._notify_local("oi")

    async def send(self, message: Message) -> None:
        await self._write(sql.send, message)
        self._notify_local("o")

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
        self._notify_local("i")
        return count

    # -- orchestration work ----------------------------------------------------------

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        if owner not in self._owners:
            self._owners |= {owner}
        return await self._write(sql.claim, owner, limit, _micros(lease_seconds), self._sticky)

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        outcomes, queued, work = await self._write(_commit, commits, take)
        self._notify_local("i" + "o" * work + "a" * queued)
        return outcomes

    async def abandon_orchestration(
        self, item: OrchestrationWorkItem, retry_after: float, error: FailureDetails | None
    ) -> None:
        await self._write(sql.abandon, item, _micros(retry_after), error)
        self._notify_local("i")

    # -- activity work ---------------------------------------------------------------

    async def claim_activities(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[ActivityWorkItem]:
        return await self._write(activities.claim_activities, owner, limit, _micros(lease_seconds))

    async def complete_activities(self, results: Sequence[ActivityResult]) -> None:
        if results:
            await self._write(activities.complete_activities, results)
            self._notify_local("o")

    async def abandon_activities(
        self, items: Sequence[ActivityWorkItem], retry_after: float = 0.0
    ) -> None:
        if items:
            await self._write(activities.abandon_activities, items, _micros(retry_after))
            self._notify_local("a")

    async def renew_leases(
        self,
        owner: str,
        instance_ids: Sequence[str],
        activity_ids: Sequence[int],
        lease_seconds: float,
    ) -> None:
        if instance_ids or activity_ids:
            await self._write(
                activities.renew, owner, instance_ids, activity_ids, _micros(lease_seconds)
            )

    async def next_wake_time(self, owner: str | None = None) -> datetime | None:
        return opt_dt(await self._read(sql.next_wake, owner, self._sticky))

    # -- flow control ----------------------------------------------------------------

    async def acquire_flow(
        self, key: str, holder: str, limit: FlowLimit, tokens: int, lease_seconds: float
    ) -> float:
        return await self._write(
            flow.acquire_flow, key, holder, limit, tokens, _micros(lease_seconds)
        )

    async def release_flow(self, key: str, holder: str, tokens: int | None) -> None:
        await self._write(flow.release_flow, key, holder, tokens)
        self._notify_local("a")

    # -- streams ---------------------------------------------------------------------

    async def append_stream(
        self, instance_id: str, name: str, chunk: StoredChunk | None, close: bool
    ) -> None:
        if await self._write(flow.append_stream, instance_id, name, chunk, close):
            self._notify_local("s")

    async def read_stream(
        self, instance_id: str, name: str, after: int, limit: int = 1000
    ) -> StreamRead:
        return await self._read(flow.read_stream, instance_id, name, after, limit)


class _Runner:
    """The store's event loop thread, its connection pool, and its LISTEN connection."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name=f"durable-{store.schema}", daemon=True
        )
        self.thread.start()
        self.pool: AsyncConnectionPool[Conn] | None = None
        self.pipelined = False
        self.listener: asyncio.Task[None] | None = None
        self._guard = threading.Lock()
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._stopped: concurrent.futures.Future[None] | None = None
        self.opened = asyncio.run_coroutine_threadsafe(self._open(), self.loop)

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]:
        with self._guard:
            if self._stopped is not None:
                raise StoreError(f"{self.store!r} was closed while in use")
            call = asyncio.run_coroutine_threadsafe(fn(self, *args), self.loop)
            self._calls.add(call)
        call.add_done_callback(self._calls.discard)
        return call

    def connection(self) -> contextlib.AbstractAsyncContextManager[Conn]:
        assert self.pool is not None
        return self.pool.connection()

    def pipeline(self, conn: Conn) -> contextlib.AbstractAsyncContextManager[Any]:
        """Pipeline mode (fewer round trips) where the server can end a paused session."""
        return conn.pipeline() if self.pipelined else contextlib.nullcontext()

    async def _open(self) -> None:
        store = self.store
        try:
            async with await psycopg.AsyncConnection.connect(
                store.url, autocommit=True, connect_timeout=max(1, int(store._timeout))
            ) as conn:
                await _migrate(conn, store.schema)
                self.pipelined = conn.info.server_version >= 170000
        except psycopg.Error as e:
            raise _store_error(e, f"cannot open {store!r}") from e
        settings = _SESSION + (_PIPELINE_SESSION if self.pipelined else "")
        session = q.SQL("SET search_path TO {}; ").format(q.Identifier(store.schema)) + q.SQL(
            settings
        )

        async def configure(conn: Conn) -> None:
            await conn.execute(session)

        pool = AsyncConnectionPool(
            store.url,
            min_size=store._min,
            max_size=store._max,
            timeout=store._timeout,
            kwargs={"autocommit": True},
            configure=configure,
            open=False,
            name=f"durable-{store.schema}",
        )
        await pool.open()
        self.pool = pool
        self.listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        """Relay other processes' notifications; reconnect with backoff when cut off."""
        store = self.store
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    store.url, autocommit=True, connect_timeout=max(1, int(store._timeout))
                ) as conn:
                    await conn.execute(q.SQL("LISTEN {}").format(q.Identifier(store.schema)))
                    delay = 0.1
                    store._notify_local("oais")  # anything missed while cut off
                    async for note in conn.notifies():
                        store._heard(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the server went away: polling covers the gap
                log.info("%r: notifications cut off (%s); reconnecting in %.1fs", store, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def stop(self) -> concurrent.futures.Future[None]:
        """Finish (or, after a grace period, cancel) the calls in flight, close the pool
        and the listener, and end the thread. Idempotent."""
        with self._guard:
            if self._stopped is not None:
                return self._stopped
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._stopped = done
            calls = list(self._calls)

        async def shut() -> None:
            with contextlib.suppress(BaseException):
                await asyncio.wrap_future(self.opened)
            waiting = [asyncio.wrap_future(c) for c in calls]
            if waiting:
                _, late = await asyncio.wait(waiting, timeout=_CLOSE_GRACE)
                for call in late:
                    call.cancel()  # its transaction rolls back
                await asyncio.wait(waiting, timeout=_CLOSE_GRACE)
            if self.listener is not None:
                self.listener.cancel()
                with contextlib.suppress(BaseException):
                    await self.listener
            if self.pool is not None:
                await self.pool.close()

        def finish() -> None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=_CLOSE_GRACE)
            if not self.thread.is_alive():
                self.loop.close()
            done.set_result(None)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).add_done_callback(
            lambda _: threading.Thread(target=finish, daemon=True).start()
        )
        return done


async def _migrate(conn: Conn, schema: str) -> None:
    """Bring the hub's schema to `SCHEMA_VERSION`; concurrent starters wait on a lock.

    A hub that is up to date is only read, so a role with no right to create anything
    can use a hub made for it beforehand.
    """
    name = q.Identifier(schema)
    if await _version(conn, schema) == SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"durable.migrate.{schema}",)
        )
        version = await _version(conn, schema)  # another process may have migrated it
        if version == SCHEMA_VERSION:
            return
        if version is None:
            cur = await conn.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
            )
            if await cur.fetchone() is None:  # (a schema made for us beforehand is used)
                await conn.execute(q.SQL("CREATE SCHEMA {}").format(name))
            await conn.execute(
                q.SQL("CREATE TABLE {}.schema_version (version integer NOT NULL)").format(name)
            )
            version = 0
        await conn.execute(q.SQL("SET LOCAL search_path TO {}").format(name))
        for script in MIGRATIONS[version:]:
            await conn.execute(script.encode())
        await conn.execute("DELETE FROM schema_version")
        await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))


async def _version(conn: Conn, schema: str) -> int | None:
    """The hub's schema version; None if it has none yet. Refuses a newer one."""
    # A query on the catalog, not to_regclass(): after waiting for the migration lock,
    # it must see a table that the process holding the lock created meanwhile.
    cur = await conn.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
        (schema, "schema_version"),
    )
    if await cur.fetchone() is None:
        return None
    table = q.Identifier(schema, "schema_version")
    cur = await conn.execute(q.SQL("SELECT max(version) FROM {}").format(table))
    row = await cur.fetchone()
    version = 0 if row is None or row[0] is None else int(row[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"task hub schema {schema!r} has version {version}, newer than this durable"
            f" ({SCHEMA_VERSION}); upgrade durable"
        )
    return version


def _store_error(e: BaseException, what: str) -> StoreError:
    if isinstance(e, errors.DiskFull | errors.OutOfMemory):
        return StoreFullError(f"{what}: {e}")
    if isinstance(e, errors.LockNotAvailable | errors.QueryCanceled):
        return StoreBusyError(f"{what}: {e}")
    return StoreError(f"{what}: {e}")


async def _commit(
    tx: sql.Tx, commits: Sequence[OrchestrationCommit], take: ActivityTake | None
) -> tuple[list[Exception | None], bool, bool]:
    """The outcomes, whether activities were queued for any worker, and whether instances
    may have orchestration work now (`Tx.work`)."""
    write = activities.commit_with_results if any(c.results for c in commits) else sql.commit_all
    outcomes, queued = await write(tx, commits, take)
    return outcomes, queued, tx.work
