"""A worker paused (SIGSTOP) past its lease: the others go on, its late work is refused.

Leases are 2 s. A paused process keeps its connections and its place in the middle of
whatever it was doing; when it is woken (SIGCONT) it goes on as if nothing happened, with
decisions built on a history that has moved on meanwhile. The store must refuse those
(the lease is gone), so that every instance still finishes once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import psycopg
from crash_helpers import WorkerProcess, check_history
from pg_fleet import (
    Fleet,
    S,
    Spawn,
    check_order_outcome,
    fetch_histories,
    order_activities,
    overlapping_spans,
    read_lines,
    run_state,
    runs_per_activity,
    start_fleet,
    wait_finished,
    wait_until,
)
from pg_worker import go_data, pg_order, pg_two_steps

import durable

LEASE = 2.0


async def frozen_worker(marker: Path, fleet: Fleet) -> WorkerProcess:
    """The worker that wrote `marker` (`--freeze-marker`) and stopped itself."""
    await wait_until(lambda: bool(read_lines(marker)), "worker stopping itself", fleet)
    pid = read_lines(marker)[0]["pid"]
    paused = next(p for p in fleet.procs if p.pid == pid)
    await wait_until(lambda: run_state(paused.pid) == "T", "stopped state", fleet)
    return paused


async def pause_between_transactions(proc: WorkerProcess, url: str) -> None:
    """SIGSTOP `proc` at a moment when none of its connections is in a transaction (so it
    holds leases, but no row locks): stop it, look, wake it and try again if it was."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(200):
            os.kill(proc.pid, signal.SIGSTOP)
            await asyncio.sleep(0.1)  # what it sent before it stopped has run by now
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND xact_start IS NOT NULL",
                (proc.name,),
            )
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                return
            os.kill(proc.pid, signal.SIGCONT)
            await asyncio.sleep(random.uniform(0.0, 0.05))
    raise AssertionError(f"{proc.name} was in a transaction at each of 200 tries")


async def test_a_commit_made_after_the_lease_ran_out_is_rejected_and_the_work_done_once(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    """Both workers stop themselves (SIGSTOP) just before committing the decision that
    schedules step "s2" of `pg_two_steps`, whichever gets there first: the other one takes
    the instance over once the lease ran out and finishes it. Then the paused one is woken
    and commits its stale decision: rejected, the history and the side effects show each
    step once."""
    marker = tmp_path / "frozen.json"
    extra = ["--lease", LEASE, "--poll", 0.05, "--freeze-on", "s2", "--freeze-marker", marker]
    fleet = await start_fleet(spawn, tmp_path, hub, ("a", "b"), extra)
    store = durable.open_store(hub)
    try:
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(pg_two_steps, input=21, instance_id="victim")

        paused = await frozen_worker(marker, fleet)
        other = next(p for p in fleet.procs if p is not paused)
        paused_at = time.time()

        state = await client.wait_for_orchestration_completion(iid, timeout=30)
        assert state is not None and state.runtime_status is S.COMPLETED, state
        assert json.loads(state.serialized_output or "") == ["s1=42", "s2=42"]
        assert run_state(paused.pid) == "T", "the paused worker ran meanwhile"
        history_before = await client.get_orchestration_history(iid)

        os.kill(paused.pid, signal.SIGCONT)

        def rejected() -> list[str]:
            return [
                w["message"]
                for w in fleet.warnings_of(paused.name)
                if "commit for victim rejected" in w["message"]
            ]

        await wait_until(lambda: bool(rejected()), "rejected commit after SIGCONT", fleet)
        await asyncio.sleep(3 * LEASE)  # time for any mischief of the woken worker
        fleet.check_alive()
        after = await client.get_orchestration_state(iid)
        history_after = await client.get_orchestration_history(iid)
    finally:
        await store.close()
    await fleet.stop()

    assert after is not None
    assert (after.runtime_status, after.serialized_output) == (S.COMPLETED, '["s1=42","s2=42"]')
    assert history_after == history_before
    check_history(iid, history_after)
    assert [type(e).__name__ for e in history_after].count("TaskScheduled") == 2

    # Each step ran once; s2 only on the worker that took over.
    runs = [(r["tag"], r["pid"]) for r in fleet.side_effects()]
    assert sorted(t for t, _ in runs) == ["s1", "s2"], runs
    assert ("s2", other.pid) in runs, runs
    # The instance was taken over only after the paused worker's lease ran out, and every
    # decision the paused worker committed came before it was paused.
    decisions = fleet.decisions()
    assert not overlapping_spans(decisions)
    frozen = read_lines(marker)[0]
    takeover = min(
        r["claimed_at"]
        for r in decisions
        if r["pid"] == other.pid and r["claimed_at"] > frozen["claimed"]
    )
    assert takeover >= frozen["claimed"] + LEASE, (frozen, decisions)
    paused_decisions = [r for r in decisions if r["pid"] == paused.pid]
    assert all(r["committing_at"] < paused_at for r in paused_decisions), paused_decisions
    assert any(r["pid"] == other.pid for r in decisions), decisions
    assert len(rejected()) == 1, fleet.warnings_of(paused.name)


async def test_a_worker_paused_under_load_loses_its_leases_and_nothing_runs_twice_in_history(
    tmp_path: Path, spawn: Spawn, hub: str, postgres_url: str
) -> None:
    """Three workers run 300 `pg_order` instances; one is paused (SIGSTOP from the test)
    for 3 leases in the middle of it, between two of its transactions, then woken. The two
    others take over what it held: every instance completes with the expected output and
    a whole history; no two committed decisions of one instance overlap; an activity ran
    twice only if the paused worker was one of its two runners; and the woken worker works
    again."""
    names = ("p0", "p1", "p2")
    fleet = await start_fleet(spawn, tmp_path, hub, names, ["--lease", LEASE, "--poll", 0.05])
    paused = fleet.procs[0]
    ids = [f"order-{n:03d}" for n in range(300)]
    everything = ids + [f"{iid}.c" for iid in ids]
    store = durable.open_store(hub)
    try:
        client = durable.Client(store)
        for n, iid in enumerate(ids):
            await client.schedule_new_orchestration(pg_order, input=n, instance_id=iid)
            await client.raise_orchestration_event(iid, "go", data=go_data(n))

        def busy() -> bool:  # the paused worker holds instances and activities by now
            return len(read_lines(fleet.decisions_of(paused.name))) >= 100

        await wait_until(busy, "decisions by the worker to pause", fleet)
        await pause_between_transactions(paused, postgres_url)
        paused_at = time.time()
        await asyncio.sleep(3 * LEASE)
        assert run_state(paused.pid) == "T"
        os.kill(paused.pid, signal.SIGCONT)
        woken_at = time.time()
        states = await wait_finished(client, everything, fleet, timeout=60)
        histories = await fetch_histories(client, everything)
        assert sum(not s.runtime_status.is_terminal for s in states.values()) == 0
        # The woken worker rejoins: it decides again (the work after the pause is enough).
        extra = [
            await client.schedule_new_orchestration(pg_two_steps, input=n, instance_id=f"late-{n}")
            for n in range(30)
        ]
        await wait_finished(client, extra, fleet, timeout=30)
    finally:
        await store.close()
    await fleet.stop()

    check_order_outcome(ids, states, histories)
    decisions = fleet.decisions()
    overlaps = overlapping_spans(decisions)
    assert not overlaps, f"{len(overlaps)} instances held twice at once, e.g. {overlaps[:3]}"
    during = [r for r in decisions if paused_at < r["claimed_at"] < woken_at]
    assert during and all(r["pid"] != paused.pid for r in during)
    assert any(r["pid"] == paused.pid and r["claimed_at"] > woken_at for r in decisions)

    records = fleet.side_effects()
    runs = runs_per_activity(records)
    assert set(runs) >= order_activities(ids)
    for key, count in runs.items():
        if count > 1:
            pids = [r["pid"] for r in records if (r["instance"], r["tag"]) == key]
            # Claimed by the paused worker, run elsewhere once its lease ran out, and by
            # it too (before its pause, or after: it had claimed it before).
            assert count == 2 and pids.count(paused.pid) == 1, (key, pids)


async def test_a_worker_paused_inside_its_commit_transaction_does_not_hold_the_instance(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    """As the first test, but the worker stops in the middle of the commit's transaction
    (its body has run, COMMIT is not sent), so it holds the instance's row lock as well as
    its lease. The lease runs out after 2 s, and the docs promise that the instance then
    goes on, once, on another worker: the paused process must not keep the row locked for
    as long as it stands. Here it stands until the instance finished elsewhere (at most
    45 s); then it is woken, and its transaction must not take effect."""
    marker = tmp_path / "frozen.json"
    extra = ["--lease", LEASE, "--poll", 0.05, "--freeze-on", "s2", "--freeze-marker", marker]
    fleet = await start_fleet(spawn, tmp_path, hub, ("a", "b"), [*extra, "--freeze-inside"])
    store = durable.open_store(hub)
    try:
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(pg_two_steps, input=4, instance_id="victim")
        paused = await frozen_worker(marker, fleet)
        other = next(p for p in fleet.procs if p is not paused)

        try:
            state = await client.wait_for_orchestration_completion(iid, timeout=45)
        except TimeoutError as e:
            raise AssertionError(
                f"{e}: the worker that stands paused inside its commit transaction still"
                " holds the instance's row lock, long after its lease ran out"
            ) from None
        assert run_state(paused.pid) == "T", "the paused worker ran meanwhile"
        assert state is not None and state.runtime_status is S.COMPLETED, state
        os.kill(paused.pid, signal.SIGCONT)
        await asyncio.sleep(3 * LEASE)
        fleet.check_alive()
        after = await client.get_orchestration_state(iid)
        history = await client.get_orchestration_history(iid)
    finally:
        await store.close()
    await fleet.stop()

    assert after is not None
    assert (after.runtime_status, after.serialized_output) == (S.COMPLETED, '["s1=8","s2=8"]')
    check_history(iid, history)
    assert [type(e).__name__ for e in history].count("TaskScheduled") == 2
    runs = [(r["tag"], r["pid"]) for r in fleet.side_effects()]
    assert sorted(t for t, _ in runs) == ["s1", "s2"] and ("s2", other.pid) in runs, runs
