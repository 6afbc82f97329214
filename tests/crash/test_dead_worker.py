"""A worker process that died is taken over at once on SQLite; one that stands still is not.

Each worker holds a lock file next to the database while it lives (see
durable/store/_sqlite_owners.py). A store that opens the database after a worker process
was SIGKILLed finds its lock free and ends its leases, so the restarted worker goes on at
once, however long the leases were. A worker stopped with SIGSTOP still holds its lock:
its leases stand until they run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

from crash_helpers import Spawn, read_jsonl, wait_for_file
from crash_worker import ACTIVITIES, ORCHESTRATORS, cw_small, cw_small_expected
from test_crash_points import check_outcome, collect, reference, schedule

import durable

LONG_LEASE = 120.0


async def test_a_restarted_worker_takes_over_a_killed_ones_leases_at_once(
    tmp_path: Path, spawn: Spawn
) -> None:
    expected = await reference(tmp_path)
    db = tmp_path / "crash.db"
    log = tmp_path / "side-effects.jsonl"
    marker = tmp_path / "marker.jsonl"
    args: list[str | Path | int | float] = [db, "--log", log, "--lease", LONG_LEASE]
    async with durable.SqliteStore(db) as store:
        client = durable.Client(store, poll_interval=0.05)
        crashing = spawn(
            "crashing", [*args, "--point", "activity_side_effect", "--nth", 6, "--marker", marker]
        )
        driver = await schedule(client)
        await driver.run_until(lambda: crashing.returncode is not None, "the kill", crashing.tail)
        assert crashing.returncode == -signal.SIGKILL, crashing.tail()
        owners = db.with_name(db.name + "-owners")
        assert len(list(owners.iterdir())) == 1  # the dead worker's lock file

        restarted = time.monotonic()
        recovering = spawn("recovering", args)
        await driver.run_until(
            driver.finished, "the recovery", lambda: crashing.tail() + recovering.tail()
        )
        took = time.monotonic() - restarted
        assert await recovering.stop() == 0, recovering.tail()
        outcome = await collect(client, log)

    # Far less than the lease: the killed worker's leases ended when the new one opened.
    assert took < LONG_LEASE / 4, f"recovery took {took:.1f} s"
    assert list(owners.iterdir()) == []  # reaped, and the clean stop removed its own
    kills = read_jsonl(marker)
    twice = check_outcome(outcome, expected, [crashing.pid], f"killed at {kills}")
    assert twice == [(kills[0]["detail"]["instance"], kills[0]["detail"]["tag"])]


def leases(db: Path) -> set[tuple[str, str, str, int]]:
    """Every lease that has not run out: (kind, id, owner, end), read from the file."""
    now = int(time.time() * 1e6)
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute(
            "SELECT 'instance', instance_id, lease_owner, lease_expires FROM instances"
            " WHERE lease_owner IS NOT NULL AND lease_expires > ?"
            " UNION ALL SELECT 'activity', CAST(id AS TEXT), lease_owner, ready_at"
            " FROM activities WHERE lease_owner IS NOT NULL AND ready_at > ?",
            (now, now),
        ).fetchall()
    return {(kind, key, owner, end) for kind, key, owner, end in rows}


async def test_a_stopped_worker_keeps_its_leases_until_they_run_out(
    tmp_path: Path, spawn: Spawn
) -> None:
    db = tmp_path / "pause.db"
    log = tmp_path / "side-effects.jsonl"
    ready = tmp_path / "paused.ready"
    lease = 6.0
    async with durable.SqliteStore(db) as store:  # opened first: it reaps nobody
        paused = spawn("paused", [db, "--log", log, "--lease", lease, "--ready", ready])
        await wait_for_file(ready, paused)
        client = durable.Client(store, poll_interval=0.05)
        ids: list[str] = []
        held: set[tuple[str, str, str, int]] = set()
        for _ in range(200):  # stop it at a moment when it holds leases
            for _ in range(5):  # (new work: a worker with nothing to do holds nothing)
                iid = f"small-{len(ids)}"
                await client.schedule_new_orchestration(cw_small, input=len(ids), instance_id=iid)
                ids.append(iid)
            os.kill(paused.pid, signal.SIGSTOP)
            await asyncio.sleep(0.05)
            held = leases(db)
            if held:
                break
            os.kill(paused.pid, signal.SIGCONT)
            await asyncio.sleep(0.01)
        stopped = time.monotonic()
        try:
            assert held, "the worker never held a lease when stopped"
            # Another worker opens the database (and looks for dead owners) meanwhile.
            async with (
                durable.SqliteStore(db) as other,
                durable.Worker(
                    other, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, poll_interval=0.05
                ),
            ):
                await asyncio.sleep(lease / 3)
                assert time.monotonic() - stopped < lease, "the check came too late"
                assert held <= leases(db), "a lease of the stopped worker was cut short"
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        for n, iid in enumerate(ids):
            state = await client.wait_for_orchestration_completion(iid, timeout=60)
            assert state is not None and state.get_output() == cw_small_expected(n), state
        assert await paused.stop() == 0, paused.tail()
