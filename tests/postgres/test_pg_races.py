"""Many clients at once on one instance: creating it, raising events at it.

Each test runs real worker processes on a hub of its own, and drives the race from
several stores (each its own pool of connections, as separate client processes have).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from crash_helpers import check_history
from pg_fleet import S, Spawn, start_fleet
from pg_worker import pg_collect, pg_gated

import durable
from durable.core.events import ContinuedAsNew, EventRaised, ExecutionStarted

RACERS = 200
STORES = 4


async def race_to_create(clients: list[durable.Client], iid: str) -> tuple[int, list[object]]:
    """`RACERS` calls creating `iid` at once, racer k with input k: the winner, and what
    the other calls raised."""
    start = asyncio.Event()

    async def create(k: int) -> str:
        await start.wait()
        return await clients[k % len(clients)].schedule_new_orchestration(
            pg_gated, input=k, instance_id=iid
        )

    calls = [asyncio.create_task(create(k)) for k in range(RACERS)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    winners = [k for k, r in enumerate(results) if r == iid]
    assert len(winners) == 1, f"{len(winners)} calls created {iid!r}: {winners}"
    return winners[0], [r for r in results if r != iid]


async def test_200_clients_creating_one_instance_at_once_create_it_once(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    """Exactly one of 200 concurrent `schedule_new_orchestration` calls with one id wins;
    the 199 others raise `OrchestrationAlreadyExistsError`. The instance (it waits for an
    event, so it cannot finish during the race) then runs once, from the winner's input.
    Once it has finished, the id may be used again: 200 calls race to replace it, and
    again exactly one does."""
    fleet = await start_fleet(spawn, tmp_path, hub, ("w0", "w1"), ["--poll", 0.05])
    stores = [durable.open_store(hub) for _ in range(STORES)]
    try:
        clients = [durable.Client(s, poll_interval=0.05) for s in stores]
        await asyncio.gather(*(c.get_orchestration_state("nothing") for c in clients))
        client = clients[0]
        outputs = []
        for attempt in range(2):  # a new id, then the same id once it has finished
            winner, losers = await race_to_create(clients, "the-one")
            wrong = [
                e for e in losers if not isinstance(e, durable.OrchestrationAlreadyExistsError)
            ]
            assert not wrong and len(losers) == RACERS - 1, wrong[:3]
            listed = [s async for s in client.list_orchestrations()]
            assert [s.instance_id for s in listed] == ["the-one"], listed
            assert listed[0].get_input() == winner
            assert (await client.wait_for_orchestration_start("the-one", timeout=30)) is not None
            await client.raise_orchestration_event("the-one", "release")
            state = await client.wait_for_orchestration_completion("the-one", timeout=30)
            assert state is not None and state.runtime_status is S.COMPLETED, (attempt, state)
            assert state.get_output() == f"once={2 * winner}"
            history = await client.get_orchestration_history("the-one")
            check_history("the-one", history)
            starts = [e for e in history if isinstance(e, ExecutionStarted)]
            assert [e.input for e in starts] == [str(winner)]
            outputs.append(state.get_output())
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    await fleet.stop()

    # One activity run per instance that existed, from its winner's input.
    records = fleet.side_effects()
    assert [(r["instance"], r["tag"]) for r in records] == [("the-one", "once")] * 2, records
    assert len(outputs) == 2


EVENTS = 10_000
SENDERS = 50
PER_RUN = 1000


@pytest.mark.timeout(240)  # under a minute alone on two cores; more when they are shared
async def test_10000_events_raised_in_a_burst_arrive_once_each_in_order_per_sender(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    """50 senders (over 4 stores) raise 200 events each, one after the other, all at once
    at one instance, which takes them one by one and continues as new every 1,000 (the
    events it has not taken yet carry over). It returns what it took: every event, once,
    and each sender's in the order it raised them."""
    fleet = await start_fleet(spawn, tmp_path, hub, ("w0", "w1"), ["--poll", 0.05])
    stores = [durable.open_store(hub) for _ in range(STORES)]
    try:
        clients = [durable.Client(s, poll_interval=0.1) for s in stores]
        client = clients[0]
        state = {"got": [], "target": EVENTS, "per_run": PER_RUN, "runs": 0}
        iid = await client.schedule_new_orchestration(pg_collect, input=state, instance_id="sink")

        async def sender(s: int) -> None:
            raiser = clients[s % len(clients)]
            for k in range(EVENTS // SENDERS):
                await raiser.raise_orchestration_event(iid, "e", data=f"{s}:{k}")

        began = time.monotonic()
        await asyncio.gather(*(sender(s) for s in range(SENDERS)))
        raised = time.monotonic() - began
        done = await client.wait_for_orchestration_completion(iid, timeout=90)
        finished = time.monotonic() - began
        history = await client.get_orchestration_history(iid)
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    await fleet.stop()
    print(f"raised {EVENTS} events in {raised:.1f}s; all taken after {finished:.1f}s")

    assert done is not None and done.runtime_status is S.COMPLETED, done
    output = done.get_output()
    got: list[str] = output["got"]
    assert len(got) == EVENTS, len(got)
    assert len(set(got)) == EVENTS, "an event was delivered twice"
    by_sender: defaultdict[int, list[int]] = defaultdict(list)
    for event in got:
        s, k = map(int, event.split(":"))
        by_sender[s].append(k)
    expected = list(range(EVENTS // SENDERS))
    out_of_order = {s: ks[:10] for s, ks in by_sender.items() if ks != expected}
    assert not out_of_order and len(by_sender) == SENDERS, out_of_order
    # It continued as new (at least) every 1,000 events: the last execution's history
    # holds only what it took itself.
    assert output["runs"] == EVENTS // PER_RUN, output["runs"]
    assert not [e for e in history if isinstance(e, ContinuedAsNew)]
    raised_here = [json.loads(e.input or "null") for e in history if isinstance(e, EventRaised)]
    assert raised_here == got[-len(raised_here) :] and 0 < len(raised_here) <= PER_RUN
