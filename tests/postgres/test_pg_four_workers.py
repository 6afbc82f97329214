"""Four worker processes on one Postgres hub share 2,000 orchestrations and lose nothing.

Each orchestration runs an activity and a child orchestration (itself one activity) in
parallel, a timer of 0.2 to 1 s, then waits for an event "go" that the test raises. The
test raises the events last instance first while the workers take the instances first one
first: early instances are already waiting when theirs comes, late ones find it buffered
before they start.

Every worker logs each decision it committed with the span in which it alone held the
instance (`durable.worker.decisions`: from just after its claim returned to just before
its commit). Leases are 30 s and nothing fails, so no two spans of one instance may
overlap, no commit may be rejected and no activity may run twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from pg_fleet import (
    Spawn,
    bounded,
    check_order_outcome,
    fetch_histories,
    order_activities,
    overlapping_spans,
    runs_per_activity,
    start_fleet,
    wait_finished,
)
from pg_worker import go_data, pg_order

import durable

ORCHESTRATIONS = 2000
WORKERS = ("w0", "w1", "w2", "w3")
CLIENTS = 4
"""Stores the test's client calls go through (each with its pool of connections)."""


@pytest.mark.timeout(240)  # under a minute alone on two cores; more when they are shared
async def test_four_workers_share_2000_orchestrations_one_holder_at_a_time(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    began = time.monotonic()
    fleet = await start_fleet(spawn, tmp_path, hub, WORKERS, ["--poll", 0.5, "--lease", 30])
    ids = [f"order-{n:04d}" for n in range(ORCHESTRATIONS)]
    everything = ids + [f"{iid}.c" for iid in ids]
    stores = [durable.open_store(hub) for _ in range(CLIENTS)]
    try:
        clients = [durable.Client(s) for s in stores]
        await bounded(
            [
                lambda n=n, iid=iid: clients[n % CLIENTS].schedule_new_orchestration(
                    pg_order, input=n, instance_id=iid
                )
                for n, iid in enumerate(ids)
            ],
            at_once=8 * CLIENTS,
        )
        scheduled = time.monotonic()
        for chunk in range(ORCHESTRATIONS, 0, -200):
            await bounded(
                [
                    lambda n=n: clients[n % CLIENTS].raise_orchestration_event(
                        ids[n], "go", data=go_data(n)
                    )
                    for n in reversed(range(max(chunk - 200, 0), chunk))
                ],
                at_once=8 * CLIENTS,
            )
            await asyncio.sleep(0.2)
        raised = time.monotonic()
        states = await wait_finished(clients[0], everything, fleet, timeout=90)
        finished = time.monotonic()
        histories = await fetch_histories(clients[0], everything)
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    await fleet.stop()
    print(
        f"started {scheduled - began:.1f}s, raised {raised - began:.1f}s,"
        f" finished {finished - began:.1f}s, checked {time.monotonic() - began:.1f}s"
    )

    check_order_outcome(ids, states, histories)

    runs = runs_per_activity(fleet.side_effects())
    assert set(runs) == order_activities(ids)
    twice = [key for key, count in runs.items() if count > 1]
    assert not twice, f"{len(twice)} activities ran more than once with no fault: {twice[:5]}"

    decisions = fleet.decisions()
    assert {r["instance_id"] for r in decisions} == set(everything)
    overlaps = overlapping_spans(decisions)
    assert not overlaps, f"{len(overlaps)} instances held twice at once, e.g. {overlaps[:3]}"
    # No commit was rejected, no store call failed, no worker loop failed.
    warnings = {p.name: fleet.warnings_of(p.name) for p in fleet.procs}
    assert not any(warnings.values()), warnings

    # Every worker did a fair part of the deciding.
    per_worker = Counter(r["worker"] for r in decisions)
    assert len(per_worker) == len(WORKERS), per_worker
    assert min(per_worker.values()) >= len(decisions) // (4 * len(WORKERS)), per_worker
