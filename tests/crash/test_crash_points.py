"""A worker killed with SIGKILL at each fault point loses nothing and duplicates nothing.

Each test runs a workload on a SQLite file in a worker process that kills itself at one
point (see crash_worker.py), then lets a fresh worker process finish the work, and
compares with a run that never crashed (in this process, on a MemoryStore):

- every orchestration (and child) completes with the reference result;
- every history is whole: one start, one end, task ids contiguous, each task scheduled
  and answered exactly once, and the same events as the reference (times aside);
- no instance exists that the reference does not have;
- in the side-effect log, every activity of the reference ran, and at most one activity
  ran twice: the one in flight at the kill (for the activity points, exactly that one).

A last test kills a chain of workers, each at another point, before one finishes the work;
there, each crash may make one activity run once more.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from crash_helpers import (
    Driver,
    S,
    Spawn,
    WorkerProcess,
    check_history,
    read_jsonl,
    signature,
)
from crash_worker import ACTIVITIES, ORCHESTRATORS, cw_parent, set_side_effect_log

import durable

INSTANCES = 4

# (point, n): the process dies the n-th time it reaches the point, early in the workload
# or late (in the last execution, around the external event). An uncrashed run reaches
# each point this often: commits ~95, activities 52 (exactly), claims with a due timer 12,
# continue-as-new 8, child starts 12 (fewer if decisions happen to be batched together).
CASES = [
    ("before_commit", 4),
    ("before_commit", 45),
    ("after_commit", 4),
    ("after_commit", 45),
    ("activity_side_effect", 6),
    ("activity_side_effect", 45),
    ("before_complete_activities", 6),
    ("before_complete_activities", 45),
    ("timer_fired", 2),
    ("timer_fired", 8),
    ("continue_as_new_before", 2),
    ("continue_as_new_before", 5),
    ("continue_as_new_after", 1),
    ("continue_as_new_after", 5),
    ("child_start_before", 2),
    ("child_start_before", 8),
    ("child_start_after", 2),
    ("child_start_after", 8),
]


@dataclass
class Outcome:
    """What a run left behind."""

    outputs: dict[str, str | None]
    """Every instance's serialized output."""
    histories: dict[str, Counter[str]]
    """Every instance's history signature."""
    runs: Counter[tuple[str, str]]
    """How often each activity ran, by (instance, tag)."""
    records: list[dict[str, Any]]
    """The side-effect log."""


async def schedule(client: durable.Client) -> Driver:
    """Start the parents; even ones get their event at once (it is carried across
    continue-as-new), odd ones when they wait for it (the driver raises it)."""
    driver = Driver(client, [f"crash-{n}" for n in range(INSTANCES)])
    for n, iid in enumerate(driver.ids):
        await client.schedule_new_orchestration(
            cw_parent, input={"n": n, "round": 0, "acc": []}, instance_id=iid
        )
        if n % 2 == 0:
            await driver.raise_go(iid, n)
    return driver


async def collect(client: durable.Client, log: Path) -> Outcome:
    outputs: dict[str, str | None] = {}
    histories: dict[str, Counter[str]] = {}
    async for state in client.list_orchestrations():
        iid = state.instance_id
        assert state.runtime_status is S.COMPLETED, (iid, state.runtime_status, state)
        outputs[iid] = state.serialized_output
        history = await client.get_orchestration_history(iid)
        check_history(iid, history)
        histories[iid] = signature(history)
    records = read_jsonl(log)
    runs = Counter((r["instance"], r["tag"]) for r in records)
    return Outcome(outputs, histories, runs, records)


_reference: Outcome | None = None


async def reference(tmp_path: Path) -> Outcome:
    """The uncrashed run, in this process on a MemoryStore (computed once)."""
    global _reference  # noqa: PLW0603
    if _reference is None:
        log = tmp_path / "reference-side-effects.jsonl"
        set_side_effect_log(log)
        try:
            store = durable.MemoryStore()
            client = durable.Client(store)
            async with durable.Worker(
                store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, poll_interval=0.01
            ):
                driver = await schedule(client)
                await driver.run_until(driver.finished, "the reference run", lambda: "")
            _reference = await collect(client, log)
        finally:
            set_side_effect_log(None)
        assert set(_reference.runs.values()) == {1}
        assert len(_reference.outputs) == INSTANCES * 4  # each parent and its 3 children
    return _reference


def test_the_cases_cover_every_fault_point() -> None:
    from crash_worker import POINTS  # noqa: PLC0415

    assert {p for p, _ in CASES} == set(POINTS)


@pytest.mark.parametrize(("point", "nth"), CASES)
async def test_a_worker_killed_at_a_fault_point_loses_and_duplicates_nothing(
    point: str, nth: int, tmp_path: Path, spawn: Spawn
) -> None:
    expected = await reference(tmp_path)
    db = tmp_path / "crash.db"
    log = tmp_path / "side-effects.jsonl"
    marker = tmp_path / "marker.jsonl"
    async with durable.SqliteStore(db) as store:
        client = durable.Client(store, poll_interval=0.05)
        crashing = spawn(
            "crashing",
            [db, "--log", log, "--point", point, "--nth", nth, "--marker", marker, "--lease", 1.5],
        )
        driver = await schedule(client)

        def crashed_or_finished() -> bool:
            return crashing.returncode is not None or driver.finished()

        await driver.run_until(crashed_or_finished, f"the kill at {point}", crashing.tail)
        assert crashing.returncode == -signal.SIGKILL, (
            f"the crash point {point} #{nth} was never reached (all finished) or the worker "
            f"failed: return code {crashing.returncode}\n{crashing.tail()}"
        )
        kills = read_jsonl(marker)
        assert len(kills) == 1 and kills[0]["point"] == point, kills
        assert not driver.finished(), "the kill came after all the work was done"

        recovering = spawn("recovering", [db, "--log", log])
        await driver.run_until(
            driver.finished, "the recovery", lambda: crashing.tail() + recovering.tail()
        )
        assert await recovering.stop() == 0, recovering.tail()
        outcome = await collect(client, log)

    context = f"killed at {kills[0]}\n{json.dumps(outcome.records, indent=1)}"
    twice = check_outcome(outcome, expected, [crashing.pid], context)
    for key in twice:  # run by the killed worker, then by the one that recovered
        runs = [r for r in outcome.records if (r["instance"], r["tag"]) == key]
        assert [r["pid"] for r in runs] == [crashing.pid, recovering.pid], context
    if point == "activity_side_effect":
        detail = kills[0]["detail"]
        assert twice == [(detail["instance"], detail["tag"])], context
    if point == "before_complete_activities":
        (lost,) = kills[0]["detail"]  # one activity at a time: one result per batch
        assert len(twice) == 1, context
        runs = [r for r in outcome.records if (r["instance"], r["tag"]) == twice[0]]
        assert (runs[0]["instance"], runs[0]["task"]) == (lost["instance"], lost["task"])


# Each worker of the chain dies the first time it reaches its point and the next one picks
# up; the rarest points (8 continue-as-new in all) come first, so that all are reached.
CHAIN = [
    "continue_as_new_before",
    "continue_as_new_after",
    "timer_fired",
    "child_start_before",
    "child_start_after",
    "activity_side_effect",
    "before_complete_activities",
    "before_commit",
    "after_commit",
]


async def test_a_chain_of_workers_each_killed_at_another_point_loses_nothing(
    tmp_path: Path, spawn: Spawn
) -> None:
    expected = await reference(tmp_path)
    db = tmp_path / "crash.db"
    log = tmp_path / "side-effects.jsonl"
    marker = tmp_path / "marker.jsonl"
    crashed: list[WorkerProcess] = []
    async with durable.SqliteStore(db) as store:
        client = durable.Client(store, poll_interval=0.05)
        driver = await schedule(client)
        for k, point in enumerate(CHAIN):
            args: list[str | Path | int | float] = [db, "--log", log, "--point", point]
            args += ["--nth", 1, "--marker", marker]
            proc = spawn(f"crashing-{k}", [*args, "--lease", 1.5])

            def crashed_or_finished(proc: WorkerProcess = proc) -> bool:
                return proc.returncode is not None or driver.finished()

            await driver.run_until(crashed_or_finished, f"the kill at {point}", proc.tail)
            if proc.returncode is None:  # it finished the work before reaching its point
                assert await proc.stop() == 0, proc.tail()
                break
            assert proc.returncode == -signal.SIGKILL, proc.tail()
            crashed.append(proc)
        else:
            last = spawn("recovering", [db, "--log", log])
            await driver.run_until(driver.finished, "the recovery", last.tail)
            assert await last.stop() == 0, last.tail()
        outcome = await collect(client, log)

    kills = read_jsonl(marker)
    assert [k["point"] for k in kills] == CHAIN[: len(crashed)]
    assert [k["pid"] for k in kills] == [p.pid for p in crashed]
    assert len(crashed) >= 7, f"only {len(crashed)} crashes: {kills}"
    context = f"killed at {kills}\n{json.dumps(outcome.records, indent=1)}"
    check_outcome(outcome, expected, [p.pid for p in crashed], context)


def check_outcome(
    outcome: Outcome, expected: Outcome, crashed: Sequence[int], context: str
) -> list[tuple[str, str]]:
    """Same results and histories as the reference; every activity ran, once, except that
    each crash may make one activity run again: the one in flight in the process that
    crashed (one activity may be in flight at several crashes in a row). Returns the
    activities that ran more than once."""
    assert outcome.outputs == expected.outputs, context
    assert outcome.histories == expected.histories, context
    assert set(outcome.runs) == set(expected.runs), context
    again = [key for key, count in outcome.runs.items() if count > 1]
    unrecorded: list[int] = []  # the pids of the runs whose result was lost in a crash
    for key in again:
        runs = [r for r in outcome.records if (r["instance"], r["tag"]) == key]
        assert len({r["task"] for r in runs}) == 1, context
        lost = [r["pid"] for r in runs[:-1]]
        assert set(lost) <= set(crashed) and runs[-1]["pid"] not in lost, context
        unrecorded += lost
    assert len(unrecorded) == len(set(unrecorded)) <= len(crashed), (
        f"a crash made more than one activity run again: {again}; {context}"
    )
    return again
