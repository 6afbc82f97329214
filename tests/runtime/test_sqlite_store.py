"""End to end on the SQLite store: what it keeps, and how it behaves when things go wrong.

Durability across store objects, two store objects on one file, a full disk, a database
locked by someone else, a corrupt history row, oversized payloads, the schema version,
`open_store` URLs, and exiting the interpreter without closing the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls, eventually, status_of

import durable
from durable import task
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ExecutionCompleted,
    ExecutionStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from durable.core.history import decode_events, encode_event
from durable.store import _sqlite_sql
from durable.store.base import OrchestrationWorkItem
from durable.store.sqlite import SCHEMA_VERSION, _statements

S = durable.OrchestrationStatus
CALLS = Calls()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


# -- activities and orchestrators ------------------------------------------------------


def work(ctx: task.ActivityContext, key: str) -> str:
    CALLS.add(key)
    return f"{key} done"


async def slow_work(ctx: task.ActivityContext, key: str) -> str:
    await asyncio.sleep(0.02)
    CALLS.add(key)
    return f"{key} done"


def echo(ctx: task.ActivityContext, data: str) -> str:
    CALLS.add("echo")
    return data


def chain(ctx: task.OrchestrationContext, key: str):
    done = []
    for i in range(3):
        done.append((yield ctx.call_activity(slow_work, input=f"{key}:{i}")))
    return done


def step_event_step(ctx: task.OrchestrationContext, key: str):
    first = yield ctx.call_activity(work, input=f"{key}:a")
    event = yield ctx.wait_for_external_event("go")
    second = yield ctx.call_activity(work, input=f"{key}:b")
    return [first, event, second]


def big(ctx: task.OrchestrationContext, data: str):
    return (yield ctx.call_activity(echo, input=data))


def grow(ctx: task.OrchestrationContext, n: int):
    """A small input and state, but it schedules (and records) an n-byte payload."""
    return len((yield ctx.call_activity(echo, input="x" * n)))


def make_worker(store: durable.Store, **kw: Any) -> durable.Worker:
    kw.setdefault("poll_interval", 0.05)
    return durable.Worker(
        store,
        orchestrators=[chain, step_event_step, big, grow],
        activities=[work, slow_work, echo],
        **kw,
    )


# -- helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the store's file, as another program would open it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def scalar(path: Path, query: str, *args: Any) -> Any:
    with raw(path) as db:
        return db.execute(query, args).fetchone()[0]


def assert_well_formed(history: durable.History) -> None:
    """One start first; each scheduled task has at most one result; at most one end, last."""
    events = list(history)
    assert events, "empty history"
    starts = [i for i, e in enumerate(events) if isinstance(e, ExecutionStarted)]
    assert len(starts) == 1 and starts[0] <= 1, events[:3]
    scheduled: set[int] = set()
    results: Counter[int] = Counter()
    for e in events:
        if isinstance(e, TaskScheduled | TimerCreated | ChildOrchestrationCreated):
            assert e.task_id not in scheduled, f"task {e.task_id} scheduled twice"
            scheduled.add(e.task_id)
        elif isinstance(
            e,
            TaskCompleted
            | TaskFailed
            | TimerFired
            | ChildOrchestrationCompleted
            | ChildOrchestrationFailed,
        ):
            assert e.task_id in scheduled, f"a result for unscheduled task {e.task_id}"
            results[e.task_id] += 1
    assert all(n == 1 for n in results.values()), results
    ends = [i for i, e in enumerate(events) if isinstance(e, ExecutionCompleted)]
    assert len(ends) <= 1 and (not ends or ends[0] == len(events) - 1), ends


def assert_rows_consistent(path: Path) -> None:
    """Every instance's stored history length matches its rows: chunks of events, each
    starting where the one before it ended, from 0 to the length."""
    with raw(path) as db:
        rows = db.execute("SELECT instance_id, history_length FROM instances").fetchall()
        for iid, length in rows:
            at = 0
            for seq, events in db.execute(
                "SELECT seq, events FROM history WHERE instance_id = ? ORDER BY seq", (iid,)
            ):
                assert seq == at, (iid, length, seq, at)
                at += len(decode_events(events))
            assert at == length, (iid, length, at)


async def all_well_formed(client: durable.Client, path: Path) -> None:
    async for st in client.list_orchestrations():
        history = await client.get_orchestration_history(st.instance_id)
        if st.runtime_status is not S.PENDING or history:
            assert_well_formed(history)
    assert_rows_consistent(path)


async def completed(client: durable.Client, iid: str) -> durable.OrchestrationState:
    st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None and st.runtime_status is S.COMPLETED, st
    return st


# -- durability ------------------------------------------------------------------------


async def test_finished_instances_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with durable.SqliteStore(path) as store, make_worker(store):
        client = durable.Client(store)
        ids = [await client.schedule_new_orchestration(chain, input=f"k{i}") for i in range(3)]
        states = {iid: await completed(client, iid) for iid in ids}
        histories = {iid: await client.get_orchestration_history(iid) for iid in ids}

    async with durable.SqliteStore(path) as reopened:
        client = durable.Client(reopened)
        for iid in ids:
            assert await client.get_orchestration_state(iid) == states[iid]
            assert await client.get_orchestration_history(iid) == histories[iid]
        assert [st.instance_id async for st in client.list_orchestrations()] == ids
    assert states[ids[0]].get_output() == ["k0:0 done", "k0:1 done", "k0:2 done"]


async def test_an_unfinished_instance_goes_on_with_a_new_store_and_worker(
    tmp_path: Path,
) -> None:
    path = tmp_path / "durable.db"
    async with durable.SqliteStore(path) as store:
        client = durable.Client(store)
        async with make_worker(store):
            ids = [
                await client.schedule_new_orchestration(step_event_step, input=f"k{i}")
                for i in range(3)
            ]

            async def waiting_for_the_event() -> bool:
                for iid in ids:
                    history = await client.get_orchestration_history(iid)
                    if not any(isinstance(e, TaskCompleted) for e in history):
                        return False
                return True

            await eventually(waiting_for_the_event)
        # The worker has stopped; one more instance arrives while none runs.
        ids.append(await client.schedule_new_orchestration(step_event_step, input="k3"))
        await client.raise_orchestration_event(ids[0], "go", data="sent while down")
    assert CALLS.counts == {"k0:a": 1, "k1:a": 1, "k2:a": 1}

    async with durable.SqliteStore(path) as again:  # as after a restart of the program
        client = durable.Client(again)
        assert [await status_of(client, iid) for iid in ids] == [
            S.RUNNING,
            S.RUNNING,
            S.RUNNING,
            S.PENDING,
        ]
        async with make_worker(again):
            for iid in ids[1:]:
                await client.raise_orchestration_event(iid, "go", data=iid)
            outputs = [(await completed(client, iid)).get_output() for iid in ids]
    assert outputs[0] == ["k0:a done", "sent while down", "k0:b done"]
    assert outputs[3] == ["k3:a done", ids[3], "k3:b done"]
    assert CALLS.counts == {f"k{i}:{s}": 1 for i in range(4) for s in "ab"}  # nothing twice


async def test_two_store_objects_on_one_file_with_a_worker_each(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with durable.SqliteStore(path) as one, durable.SqliteStore(path) as two:
        async with make_worker(one), make_worker(two):
            clients = [
                durable.Client(one, poll_interval=0.05),
                durable.Client(two, poll_interval=0.05),
            ]
            ids = [
                await clients[i % 2].schedule_new_orchestration(chain, input=f"k{i}")
                for i in range(20)
            ]
            # Each instance is watched through the store object that did not create it.
            states = [
                await clients[(i + 1) % 2].wait_for_orchestration_completion(iid, timeout=WAIT)
                for i, iid in enumerate(ids)
            ]
        for st in states:
            assert st is not None and st.runtime_status is S.COMPLETED
        assert [st.get_output() for st in states if st is not None] == [
            [f"k{i}:{n} done" for n in range(3)] for i in range(20)
        ]
        assert CALLS.counts == {f"k{i}:{n}": 1 for i in range(20) for n in range(3)}
        await all_well_formed(clients[0], path)


# -- a full disk -----------------------------------------------------------------------

PAYLOAD = "x" * 50_000
MAX_PAGES = 400  # of 4 KiB: about three finished instances with 50 KB payloads, and a bit


async def full_logged(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the worker has logged that the store was full."""
    return any(
        isinstance(r.exc_info[1], durable.StoreFullError)
        if r.exc_info
        else "full" in r.getMessage()
        for r in caplog.records
        if r.name == "durable.worker"
    )


async def fill_with_finished(client: durable.Client, store: durable.Store, n: int) -> list[str]:
    async with make_worker(store):
        done = []
        for i in range(n):
            iid = await client.schedule_new_orchestration(
                big, input=f"{PAYLOAD}{i}", instance_id=f"old-{i}"
            )
            await completed(client, iid)
            done.append(iid)
    return done


async def test_a_full_store_refuses_writes_whole_and_recovers_after_a_purge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durable.worker")
    path = tmp_path / "small.db"
    async with durable.SqliteStore(path, pragmas={"max_page_count": MAX_PAGES}) as store:
        client = durable.Client(store)
        old = await fill_with_finished(client, store, 3)  # most of the file

        # No worker runs: schedule until the file is full.
        new: list[str] = []
        while True:
            iid = f"new-{len(new)}"
            instances = scalar(path, "SELECT count(*) FROM instances")
            messages = scalar(path, "SELECT count(*) FROM messages")
            try:
                await client.schedule_new_orchestration(
                    big, input=f"{PAYLOAD}{iid}", instance_id=iid
                )
            except durable.StoreFullError as e:
                assert "full" in str(e)
                refused = iid
                break
            new.append(iid)
            assert len(new) < 20, "the store never filled up"
        assert new, "not even one instance fit"
        # The refused schedule wrote nothing.
        assert await client.get_orchestration_state(refused) is None
        assert scalar(path, "SELECT count(*) FROM instances") == instances
        assert scalar(path, "SELECT count(*) FROM messages") == messages

        async with make_worker(store):
            # The worker cannot record its claims either; it logs and retries.
            await eventually(lambda: full_logged(caplog))
            await asyncio.sleep(0.2)
            for iid in new:  # nothing failed, nothing was lost, nothing is half written
                st = await client.get_orchestration_state(iid)
                assert st is not None and st.runtime_status in (S.PENDING, S.RUNNING), st
                assert st.failure_details is None
            await all_well_formed(client, path)
            unfinished = [iid for iid in new if await status_of(client, iid) is not S.COMPLETED]
            assert unfinished

            # Purging finished instances frees pages that SQLite reuses: the work resumes.
            # (Finishing every new instance at once needs more room than the file has, so
            # the operator goes on purging what finishes, as one would.)
            assert sum([await client.purge_orchestration(iid) for iid in old]) == len(old)
            outputs: dict[str, Any] = {}

            async def all_done() -> bool:
                for iid in new:
                    st = await client.get_orchestration_state(iid)
                    if iid not in outputs and st is not None and st.runtime_status.is_terminal:
                        assert st.runtime_status is S.COMPLETED, st
                        outputs[iid] = st.get_output()
                        assert await client.purge_orchestration(iid) == 1
                return len(outputs) == len(new)

            await eventually(all_done, timeout=3 * WAIT)
            assert outputs == {iid: f"{PAYLOAD}{iid}" for iid in new}
            await client.schedule_new_orchestration(
                big, input=f"{PAYLOAD}{refused}", instance_id=refused
            )
            assert (await completed(client, refused)).get_output() == f"{PAYLOAD}{refused}"
            await all_well_formed(client, path)
    assert CALLS.counts["echo"] == len(old) + len(new) + 1  # each activity ran once
    assert scalar(path, "PRAGMA page_count") <= MAX_PAGES


async def test_a_worker_whose_commits_meet_a_full_store_retries_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durable.worker")
    path = tmp_path / "small.db"
    async with durable.SqliteStore(path, pragmas={"max_page_count": MAX_PAGES}) as store:
        client = durable.Client(store)
        old = await fill_with_finished(client, store, 3)
        # Small instances whose decisions are large: claiming them fits, committing not.
        growing = [
            await client.schedule_new_orchestration(grow, input=50_000, instance_id=f"grow-{i}")
            for i in range(2)
        ]
        # Ballast that no worker touches yet (a start an hour away) fills the rest.
        later = datetime.now(UTC) + timedelta(hours=1)
        ballast: list[str] = []
        with pytest.raises(durable.StoreFullError):
            for i in range(20):
                iid = f"ballast-{i}"
                await client.schedule_new_orchestration(
                    big, input=f"{PAYLOAD}{i}", instance_id=iid, start_at=later
                )
                ballast.append(iid)
        assert await client.get_orchestration_state(f"ballast-{len(ballast)}") is None

        async with make_worker(store):
            await eventually(lambda: full_logged(caplog))
            await asyncio.sleep(0.2)
            for iid in growing:  # not failed, not lost, nothing half written
                st = await client.get_orchestration_state(iid)
                assert st is not None and st.runtime_status in (S.PENDING, S.RUNNING), st
                assert st.failure_details is None
            await all_well_formed(client, path)
            states = [await client.get_orchestration_state(iid) for iid in growing]
            assert any(st is not None and st.runtime_status is not S.COMPLETED for st in states)

            assert sum([await client.purge_orchestration(iid) for iid in old]) == len(old)
            for iid in growing:
                assert (await completed(client, iid)).get_output() == 50_000
            await all_well_formed(client, path)

            # The ballast can be cleared away too: terminated, then purged.
            for iid in ballast:
                await client.terminate_orchestration(iid)
            for iid in ballast:
                st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
                assert st is not None and st.runtime_status is S.TERMINATED
                assert await client.purge_orchestration(iid) == 1
    assert CALLS.counts["echo"] == len(old) + len(growing)


# -- a database locked by another program ----------------------------------------------


async def test_a_held_write_lock_makes_writes_busy_and_the_worker_carries_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    async with durable.SqliteStore(path, busy_timeout=0.2) as store:
        client = durable.Client(store)
        # A short lease: should the lock land between a claim and its commit, the claim
        # would otherwise stay stuck for 30 s (see the test after this one). With it, an
        # activity whose result cannot be recorded in time may run again (at least once).
        async with make_worker(store, lease_seconds=2):
            ids = [await client.schedule_new_orchestration(chain, input=f"k{i}") for i in range(8)]
            waiting = await client.schedule_new_orchestration(step_event_step, input="w")
            await client.wait_for_orchestration_start(waiting, timeout=WAIT)
            with raw(path) as other:
                other.execute("BEGIN IMMEDIATE")
                try:
                    began = time.monotonic()
                    with pytest.raises(durable.StoreBusyError):
                        await client.schedule_new_orchestration(
                            chain, input="late", instance_id="late"
                        )
                    assert 0.15 < time.monotonic() - began < 2  # it waited busy_timeout
                    with pytest.raises(durable.StoreBusyError):
                        await client.raise_orchestration_event(waiting, "go", data="lost?")
                    # Reads still answer (after the writes queued before them).
                    st = await client.get_orchestration_state(waiting)
                    assert st is not None and st.runtime_status is S.RUNNING
                    await asyncio.sleep(0.5)  # the worker meets the lock as well
                finally:
                    other.execute("ROLLBACK")
            assert await client.get_orchestration_state("late") is None
            states = [await completed(client, iid) for iid in ids]
            # The refused event was not delivered; a new one is.
            await asyncio.sleep(0.05)
            assert await status_of(client, waiting) is S.RUNNING
            await client.raise_orchestration_event(waiting, "go", data="after")
            last = await completed(client, waiting)
        await all_well_formed(client, path)
    assert [st.get_output() for st in states] == [
        [f"k{i}:{n} done" for n in range(3)] for i in range(8)
    ]
    assert last.get_output() == ["w:a done", "after", "w:b done"]
    expected = {f"k{i}:{n}" for i in range(8) for n in range(3)} | {"w:a", "w:b"}
    assert set(CALLS.counts) == expected  # nothing lost (and each result recorded once)


class LockedAfterFirstClaim(durable.SqliteStore):
    """Another program takes the write lock right after this store's first claim.

    That makes a race deterministic: the worker holds claims it cannot commit, nor give
    back, while the lock is held.
    """

    def __init__(self, path: Path, hold: float, **kw: Any) -> None:
        super().__init__(path, **kw)
        self.hold = hold
        self.other: sqlite3.Connection | None = None
        self.released_at: float | None = None

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        items = await super().claim_orchestrations(owner, limit, lease_seconds)
        if items and self.other is None:
            self.other = sqlite3.connect(self.path, isolation_level=None)
            self.other.execute("BEGIN IMMEDIATE")
            asyncio.get_running_loop().call_later(self.hold, self.release)
        return items

    def release(self) -> None:
        assert self.other is not None
        self.other.execute("ROLLBACK")
        self.other.close()
        self.released_at = time.monotonic()


async def test_a_lock_taken_between_claim_and_commit_does_not_stall_the_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "race.db"
    async with LockedAfterFirstClaim(path, hold=1.0, busy_timeout=0.2) as store:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(chain, input="k")
        async with make_worker(store):  # the default lease: 30 s
            await eventually(lambda: _is_released(store))
            st = await client.wait_for_orchestration_completion(iid, timeout=3)
            assert store.released_at is not None
            took = time.monotonic() - store.released_at
        assert st is not None and st.runtime_status is S.COMPLETED
        assert took < 2, f"the instance finished {took:.1f}s after the lock was released"
        assert CALLS.counts == {"k:0": 1, "k:1": 1, "k:2": 1}


async def _is_released(store: LockedAfterFirstClaim) -> bool:
    return store.released_at is not None


# -- a corrupt history row -------------------------------------------------------------


async def start_waiting(path: Path, n: int) -> list[str]:
    """`n` instances that ran a step and wait for "go"; the worker is stopped after."""
    async with durable.SqliteStore(path) as store, make_worker(store):
        client = durable.Client(store)
        ids = [
            await client.schedule_new_orchestration(
                step_event_step, input=f"k{i}", instance_id=f"i{i}"
            )
            for i in range(n)
        ]

        async def all_waiting() -> bool:
            for iid in ids:
                history = await client.get_orchestration_history(iid)
                if not any(isinstance(e, TaskCompleted) for e in history):
                    return False
            return True

        await eventually(all_waiting)
    return ids


def corrupt(path: Path, iid: str, seq: int) -> None:
    """Spoil the stored chunk of history that holds event `seq`."""
    with raw(path) as db:
        changed = db.execute(
            "UPDATE history SET events = ? WHERE instance_id = ? AND seq = (SELECT MAX(seq)"
            " FROM history WHERE instance_id = ? AND seq <= ?)",
            (b"\xff\xfe{not json at all", iid, iid, seq),
        ).rowcount
    assert changed == 1


async def test_a_corrupt_history_row_blocks_only_its_instance(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    victim, *others = await start_waiting(path, 4)
    corrupt(path, victim, 2)

    async with durable.SqliteStore(path) as store, make_worker(store):
        client = durable.Client(store)
        for iid in [victim, *others]:
            await client.raise_orchestration_event(iid, "go", data=iid)
        for iid in others:
            assert (await completed(client, iid)).get_output()[1] == iid

        async def victim_blocked() -> bool:
            st = await client.get_orchestration_state(victim)
            return st is not None and st.failure_details is not None

        await eventually(victim_blocked)
        st = await client.get_orchestration_state(victim)
        assert st is not None
        assert st.runtime_status is S.RUNNING  # not failed: a repair could still save it
        assert st.failure_details is not None
        assert st.failure_details.error_type == "durable.CorruptHistoryError"
        assert victim in st.failure_details.message
        with pytest.raises(durable.CorruptHistoryError):
            await client.get_orchestration_history(victim)
        with pytest.raises(TimeoutError, match="blocked"):
            await client.wait_for_orchestration_completion(victim, timeout=0.2)
        # Its event is kept, not consumed.
        assert scalar(path, "SELECT count(*) FROM messages WHERE instance_id = ?", victim) >= 1

        # New work still runs.
        fresh = await client.schedule_new_orchestration(chain, input="fresh")
        assert (await completed(client, fresh)).get_output()[0] == "fresh:0 done"
    assert CALLS.counts["k0:b"] == 0  # the blocked instance went no further


async def test_a_corrupt_instance_can_be_terminated_and_purged(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    victim, *others = await start_waiting(path, 3)
    corrupt(path, victim, 2)

    async with durable.SqliteStore(path) as store, make_worker(store):
        client = durable.Client(store)
        await client.terminate_orchestration(victim, output="beyond repair")
        for iid in others:
            await client.raise_orchestration_event(iid, "go", data=iid)
        for iid in others:
            await completed(client, iid)
        st = await client.wait_for_orchestration_completion(victim, timeout=WAIT)
        assert st is not None and st.runtime_status is S.TERMINATED
        assert await client.purge_orchestration(victim) == 1
        assert await client.get_orchestration_state(victim) is None
        assert scalar(path, "SELECT count(*) FROM history WHERE instance_id = ?", victim) == 0


async def test_terminating_a_corrupt_instance_does_not_hold_up_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "durable.db"
    victim, *others = await start_waiting(path, 3)
    corrupt(path, victim, 2)

    async with durable.SqliteStore(path) as store:
        client = durable.Client(store)
        # All in the store before a worker runs: one claim takes them together.
        await client.terminate_orchestration(victim, output="beyond repair")
        for iid in others:
            await client.raise_orchestration_event(iid, "go", data=iid)
        async with make_worker(store):
            for iid in others:
                assert (await completed(client, iid)).get_output()[1] == iid


# -- payloads over the cap -------------------------------------------------------------


async def test_payloads_over_the_cap_are_refused_and_write_nothing(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with durable.SqliteStore(path) as store:
        client = durable.Client(store, max_payload_bytes=1000)
        iid = await client.schedule_new_orchestration(step_event_step, input="x" * 900)

        def counts() -> tuple[int, int, int]:
            return (
                scalar(path, "SELECT count(*) FROM instances"),
                scalar(path, "SELECT count(*) FROM messages"),
                scalar(path, "SELECT count(*) FROM history"),
            )

        before = counts()
        with pytest.raises(durable.PayloadTooLargeError):
            await client.schedule_new_orchestration(
                step_event_step, input="x" * 2000, instance_id="too-big"
            )
        assert await client.get_orchestration_state("too-big") is None
        assert counts() == before
        with pytest.raises(durable.PayloadTooLargeError):
            await client.raise_orchestration_event(iid, "go", data={"blob": "y" * 2000})
        assert counts() == before
        with pytest.raises(durable.PayloadTooLargeError):
            await client.terminate_orchestration(iid, output="z" * 2000)
        assert counts() == before

        # Under the cap, the same calls go through.
        await client.raise_orchestration_event(iid, "go", data="y" * 900)
        assert counts() == (before[0], before[1] + 1, before[2])
        async with make_worker(store):
            st = await completed(client, iid)
    assert st.get_output()[1] == "y" * 900


# -- schema ----------------------------------------------------------------------------


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with durable.SqliteStore(path) as store:
        client = durable.Client(store)
        await client.schedule_new_orchestration(chain, input="k")
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    assert scalar(path, "PRAGMA journal_mode") == "wal"
    with raw(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"instances", "history", "messages", "activities"} <= tables

    # Opening it again changes nothing.
    async with durable.SqliteStore(path) as again:
        assert len([s async for s in durable.Client(again).list_orchestrations()]) == 1
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION


async def test_a_version_2_file_is_migrated_and_its_histories_read_the_same(
    tmp_path: Path,
) -> None:
    # A file as durable with schema 2 left it: one history row per event. A worker on
    # the migrated file finishes the instance from where it stood.
    path = tmp_path / "v2.db"
    source = tmp_path / "source.db"
    async with durable.SqliteStore(source) as store, make_worker(store):
        client = durable.Client(store)
        done = await completed(client, await client.schedule_new_orchestration(chain, input="k"))
        history = await client.get_orchestration_history(done.instance_id)
    with raw(path) as db:
        for script in _sqlite_sql.MIGRATIONS[:2]:
            for statement in _statements(script):
                db.execute(statement)
        db.execute(
            "INSERT INTO instances (instance_id, ord, name, execution_id, status, created_at,"
            " updated_at, history_length) VALUES ('old', 1, 'chain', ?, 'COMPLETED', 0, 0, ?)",
            (
                next(e for e in history if isinstance(e, ExecutionStarted)).execution_id,
                len(history),
            ),
        )
        db.executemany(
            "INSERT INTO history (instance_id, seq, event) VALUES ('old', ?, ?)",
            [(n, encode_event(e)) for n, e in enumerate(history)],
        )
        db.execute("PRAGMA user_version = 2")
    async with durable.SqliteStore(path) as store:
        assert await durable.Client(store).get_orchestration_history("old") == history
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    assert scalar(path, "SELECT count(*) FROM history") == len(history)  # (chunks of one)
    assert_rows_consistent(path)


async def test_a_version_3_file_gains_the_activity_trace_column_and_runs_on(
    tmp_path: Path,
) -> None:
    # A file as durable with schema 3 left it (no trace column), with an instance that
    # waits to start: after the migration a worker runs it, activities included.
    path = tmp_path / "v3.db"
    async with durable.SqliteStore(path) as store:
        iid = await durable.Client(store).schedule_new_orchestration(chain, input="k")
    with raw(path) as db:
        db.execute("ALTER TABLE activity_inputs DROP COLUMN trace")
        db.execute("PRAGMA user_version = 3")
    async with durable.SqliteStore(path) as store, make_worker(store):
        done = await completed(durable.Client(store), iid)
    assert done.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    with raw(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(activity_inputs)")}
    assert "trace" in columns


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    async with durable.SqliteStore(path) as store:
        await durable.Client(store).schedule_new_orchestration(chain, input="k", instance_id="k")
    newer = SCHEMA_VERSION + 1
    with raw(path) as db:
        db.execute(f"PRAGMA user_version = {newer}")

    store = durable.SqliteStore(path)
    client = durable.Client(store)
    try:
        for _ in range(2):  # and again: a failed open leaves nothing half open
            with pytest.raises(durable.StoreError) as info:
                await client.get_orchestration_state("k")
            message = str(info.value)
            assert str(newer) in message and str(SCHEMA_VERSION) in message
            assert type(info.value) is durable.StoreError
        with pytest.raises(durable.StoreError):
            await client.schedule_new_orchestration(chain, input="k2")
    finally:
        await store.close()
    assert scalar(path, "PRAGMA user_version") == newer
    assert scalar(path, "SELECT count(*) FROM instances") == 1


# -- open_store ------------------------------------------------------------------------


async def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "abs.db"
    store = durable.open_store(f"sqlite:///{absolute}")
    assert isinstance(store, durable.SqliteStore)
    assert Path(store.path) == absolute
    assert not absolute.exists()  # opens lazily
    try:
        client = durable.Client(store)
        async with make_worker(store):
            iid = await client.schedule_new_orchestration(chain, input="url")
            await completed(client, iid)
    finally:
        await store.close()
    assert absolute.exists()
    async with durable.SqliteStore(absolute) as same:
        assert await durable.Client(same).get_orchestration_state(iid) is not None

    monkeypatch.chdir(tmp_path)
    relative = durable.open_store("SQLite:///rel/dir/r.db")
    assert isinstance(relative, durable.SqliteStore)
    try:
        await durable.Client(relative).schedule_new_orchestration(chain, input="r")
    finally:
        await relative.close()
    assert (tmp_path / "rel" / "dir" / "r.db").exists()

    assert isinstance(durable.open_store("memory://"), durable.MemoryStore)
    for bad in ["sqlite://", "sqlite:///", "mysql://host/db", "just/a/path.db", "", "sqlite:"]:
        with pytest.raises(ValueError):
            durable.open_store(bad)


# -- exiting without closing -----------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import durable

    def step(ctx, n: int) -> int:
        return n + 1

    def orch(ctx, n: int):
        return (yield ctx.call_activity(step, input=n))

    async def main() -> None:
        store = durable.SqliteStore(sys.argv[1])  # never closed
        client = durable.Client(store)
        async with durable.Worker(store, orchestrators=[orch], activities=[step]):
            iid = await client.schedule_new_orchestration(orch, input=1)
            st = await client.wait_for_orchestration_completion(iid, timeout=5)
        print(st.get_output(), flush=True)

    def sync_main() -> None:
        store = durable.SqliteStore(sys.argv[1])  # never closed
        worker = durable.Worker(store, orchestrators=[orch], activities=[step])
        worker.start_in_thread()
        client = durable.SyncClient(store)  # never closed either
        iid = client.schedule_new_orchestration(orch, input=2)
        print(client.wait_for_orchestration_completion(iid, timeout=5).get_output(), flush=True)
        worker.stop()

    if sys.argv[2] == "async":
        asyncio.run(main())
    else:
        sync_main()
    """
)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_interpreter_exits_without_the_store_being_closed(tmp_path: Path, mode: str) -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "exit.db"), mode],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("2" if mode == "async" else "3")
    assert took < 5, f"exiting took {took:.1f}s"
    with raw(tmp_path / "exit.db") as db:
        assert db.execute("SELECT status FROM instances").fetchall() == [("COMPLETED",)]
