"""Entities on Postgres with worker processes SIGKILLed mid-run: the count ends exact."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from pg_fleet import Spawn, start_fleet
from pg_worker import PG_COUNTER, pg_adder

import durable

WAIT = 120.0


async def test_a_thousand_signals_add_up_with_workers_killed_mid_run(
    tmp_path: Path, spawn: Spawn, hub: str
) -> None:
    """Ten orchestrations send a counter 100 `add 1` signals each, over time, while two
    workers share the work. One worker is SIGKILLed once the count passes 200, the other
    once it passes 500; fresh workers carry on. The count ends at exactly 1,000, and every
    orchestration reads it as its last call."""
    extra = ["--lease", 2.0, "--poll", 0.05]
    fleet = await start_fleet(spawn, tmp_path, hub, ("a", "b"), extra)
    store = durable.open_store(hub)
    try:
        client = durable.Client(store, poll_interval=0.05)
        ids = [
            await client.schedule_new_orchestration(pg_adder, input=100, instance_id=f"adder-{n}")
            for n in range(10)
        ]
        killed = []
        for threshold, victim in ((200, fleet.procs[0]), (500, fleet.procs[1])):
            deadline = time.monotonic() + WAIT
            while True:
                meta = await client.get_entity(PG_COUNTER)
                if meta is not None and (meta.get_state(int) or 0) >= threshold:  # (None: no state)
                    break
                assert time.monotonic() < deadline, meta and meta.get_state()
                await asyncio.sleep(0.02)
            victim.kill()  # SIGKILL
            assert victim.returncode == -signal.SIGKILL
            fleet.procs.remove(victim)
            killed.append(meta.get_state(int) or 0)
            replacement = await start_fleet(spawn, tmp_path, hub, (f"{victim.name}2",), extra)
            fleet.procs.extend(replacement.procs)
        outputs = []
        for iid in ids:
            state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.runtime_status.value == "COMPLETED", state
            outputs.append(state.get_output())
        meta = await client.get_entity(PG_COUNTER)
    finally:
        await store.close()
    await fleet.stop()
    assert meta is not None and meta.get_state(int) == 1000
    assert max(outputs) == 1000  # the last caller saw every signal before it
    assert killed[0] < 1000 and killed[1] < 1000, killed  # both died mid-run
