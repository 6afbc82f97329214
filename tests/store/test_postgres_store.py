"""What only the Postgres store has: task hubs, URLs, migrations racing, the database clock."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest
from pg_helpers import new_hub
from store_helpers import (
    LEASE,
    FakeClock,
    claim,
    claim_one,
    commit,
    decision,
    new_instance,
    raised,
    start,
    to,
)

import durable
from durable.core.commands import ScheduleActivity
from durable.store import PostgresStore
from durable.store.base import InstanceQuery
from durable.store.postgres import SCHEMA_VERSION


@pytest.mark.parametrize(
    "hub", ["", "Default", "1st", "a-b", "a b", "x" * 41, "a;drop table x", 'a"b', "é"]
)
def test_a_bad_hub_name_is_refused_before_any_connection(hub: str) -> None:
    with pytest.raises(ValueError, match="invalid task hub name"):
        PostgresStore("postgresql://nobody@nowhere.invalid/db", hub=hub)


async def test_hubs_do_not_see_each_other(postgres_url: str) -> None:
    async with (
        PostgresStore(postgres_url, hub=new_hub()) as a,
        PostgresStore(postgres_url, hub=new_hub()) as b,
    ):
        await a.create_instance(new_instance("same-id"))
        await b.create_instance(new_instance("same-id", name="other"))  # no clash
        await a.create_instance(new_instance("only-a"))
        assert (await a.get_state("same-id")).name == "orch"  # type: ignore[union-attr]
        assert (await b.get_state("same-id")).name == "other"  # type: ignore[union-attr]
        assert await b.get_state("only-a") is None
        page = await b.list_instances(InstanceQuery())
        assert [s.instance_id for s in page.instances] == ["same-id"]
        assert await b.claim_orchestrations("w", 10, LEASE) != []
        assert [i.instance_id for i in await a.claim_orchestrations("w", 10, LEASE)] == [
            "same-id",
            "only-a",
        ]


async def test_open_store_takes_postgres_urls_and_a_hub(postgres_url: str) -> None:
    hub = new_hub()
    joiner = "&" if "?" in postgres_url else "?"
    for url in (f"{postgres_url}{joiner}durable_hub={hub}", postgres_url):
        store = durable.open_store(url)
        assert isinstance(store, PostgresStore)
        await store.close()
    by_url = durable.open_store(f"{postgres_url}{joiner}durable_hub={hub}")
    assert isinstance(by_url, PostgresStore) and by_url.hub == hub
    assert "durable_hub" not in by_url.url
    async with by_url, PostgresStore(postgres_url, hub=hub) as direct:
        await by_url.create_instance(new_instance("x"))
        assert await direct.get_state("x") is not None
    default = durable.open_store(postgres_url.replace("postgresql://", "postgres://", 1))
    assert isinstance(default, PostgresStore) and default.hub == "default"


async def test_many_stores_opening_a_new_hub_at_once_migrate_it_once(postgres_url: str) -> None:
    hub = new_hub()
    stores = [PostgresStore(postgres_url, hub=hub) for _ in range(8)]
    try:
        await asyncio.gather(*(s.get_state("nothing") for s in stores))
        await stores[0].create_instance(new_instance("a"))
        assert all([await s.get_state("a") is not None for s in stores])
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute(f'SELECT version FROM "durable_{hub}".schema_version')
        assert await cur.fetchall() == [(SCHEMA_VERSION,)]


async def test_a_version_1_hub_gains_the_activity_trace_column(postgres_url: str) -> None:
    hub = new_hub()
    async with PostgresStore(postgres_url, hub=hub) as store:
        await store.create_instance(new_instance("a"))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'ALTER TABLE "durable_{hub}".activities DROP COLUMN trace')
        await conn.execute(f'UPDATE "durable_{hub}".schema_version SET version = 1')
    async with PostgresStore(postgres_url, hub=hub) as store:
        assert await store.get_state("a") is not None
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cur = await conn.execute(f'SELECT version FROM "durable_{hub}".schema_version')
        assert await cur.fetchall() == [(SCHEMA_VERSION,)]
        cur = await conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'activities' AND column_name = 'trace'",
            (f"durable_{hub}",),
        )
        assert await cur.fetchall() == [(1,)]


async def test_a_hub_from_a_newer_durable_is_refused(postgres_url: str) -> None:
    hub = new_hub()
    async with PostgresStore(postgres_url, hub=hub) as store:
        await store.create_instance(new_instance("a"))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            f'UPDATE "durable_{hub}".schema_version SET version = %s',
            (SCHEMA_VERSION + 1,),
        )
    newer = PostgresStore(postgres_url, hub=hub)
    with pytest.raises(durable.StoreError, match="newer than this durable"):
        await newer.get_state("a")
    with pytest.raises(durable.StoreError, match="newer than this durable"):
        await newer.get_state("a")  # it tries again, and says so again
    await newer.close()


async def test_an_unreachable_server_is_a_store_error_and_the_store_recovers(
    postgres_url: str, tmp_path: Any
) -> None:
    store = PostgresStore(
        f"postgresql://postgres@/postgres?host={tmp_path}", hub=new_hub(), connect_timeout=1
    )
    with pytest.raises(durable.StoreError, match="cannot open"):
        await store.get_state("a")
    await store.close()
    store.url = postgres_url  # the server is back (here: the right address)
    assert await store.get_state("a") is None
    await store.close()


async def test_leases_follow_the_database_clock(postgres_url: str) -> None:
    # No clock given: leases are measured by now() in the database. A lease of 0.3 s
    # cannot be taken over at once, and can be once it has run out.
    async with PostgresStore(postgres_url, hub=new_hub()) as store:
        await store.create_instance(new_instance("a"))
        [item] = await store.claim_orchestrations("w1", 1, 0.3)
        assert await store.claim_orchestrations("w2", 1, 30) == []
        await asyncio.sleep(0.4)
        [again] = await store.claim_orchestrations("w2", 1, 30)
        assert again.instance_id == "a" and again.lease_owner == "w2"
        [outcome] = await store.commit_orchestrations([decision(item)])
        assert isinstance(outcome, durable.LeaseLostError)  # w1 was too late


async def test_one_store_serves_several_event_loops(postgres_url: str) -> None:
    hub = new_hub()
    store = PostgresStore(postgres_url, hub=hub)
    await start(store, "main-loop")
    seen: list[Any] = []

    def other_thread() -> None:
        async def work() -> None:
            await store.create_instance(new_instance("other-loop"))
            seen.append(await store.get_state("main-loop"))

        asyncio.run(work())

    thread = threading.Thread(target=other_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert seen and seen[0] is not None
    assert await store.get_state("other-loop") is not None
    item = await claim_one(store, "other-loop")
    assert item.instance_id == "other-loop"
    await store.close()


async def test_closing_and_reopening(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, hub=new_hub())
    await store.create_instance(new_instance("a"))
    await store.close()
    await store.close()  # twice is fine
    assert await store.get_state("a") is not None  # reopened on use
    await store.close()


async def test_notifications_wake_a_store_in_another_process_view(postgres_url: str) -> None:
    # Two store objects stand for two processes: a write through one wakes the other's
    # waiters through LISTEN/NOTIFY, long before any poll would.
    hub = new_hub()
    async with PostgresStore(postgres_url, hub=hub) as a, PostgresStore(postgres_url, hub=hub) as b:
        await asyncio.sleep(0.2)  # b's listener is connected
        seen = b.orchestration_work.version
        waiting = asyncio.ensure_future(b.orchestration_work.wait(5.0, seen))
        await start(a, "a")  # created (work for orchestrations), then decided
        assert await asyncio.wait_for(waiting, 2.0) is True
        seen = b.activity_work.version
        waiting = asyncio.ensure_future(b.activity_work.wait(5.0, seen))
        await start(a, "b", activities=(ScheduleActivity(task_id=1, name="act"),))
        assert await asyncio.wait_for(waiting, 2.0) is True


async def test_a_role_that_cannot_create_uses_a_hub_made_for_it(postgres_url: str) -> None:
    # The owner makes the hub once; the application's role may only use its schema.
    hub, role = new_hub(), f"app_{new_hub()}"
    async with PostgresStore(postgres_url, hub=hub) as owner:
        await owner.create_instance(new_instance("made-by-owner"))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"REVOKE CREATE ON DATABASE postgres FROM {role}")
        await conn.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
        await conn.execute(f'GRANT USAGE ON SCHEMA "durable_{hub}" TO {role}')
        rights = "SELECT, INSERT, UPDATE, DELETE"
        await conn.execute(f'GRANT {rights} ON ALL TABLES IN SCHEMA "durable_{hub}" TO {role}')
    app_url = postgres_url.replace("postgresql://postgres:", f"postgresql://{role}:", 1)
    async with PostgresStore(app_url, hub=hub) as app:
        assert await app.get_state("made-by-owner") is not None
        await app.create_instance(new_instance("made-by-app"))
        assert [i.instance_id for i in await app.claim_orchestrations("w", 10, LEASE)] == [
            "made-by-owner",
            "made-by-app",
        ]
    with pytest.raises(durable.StoreError, match="permission denied"):
        async with PostgresStore(app_url, hub=new_hub()):  # it may not make a hub
            pass


async def test_close_lets_calls_in_flight_finish_and_leaves_no_transaction_open(
    postgres_url: str,
) -> None:
    hub = new_hub()
    store = PostgresStore(postgres_url, hub=hub)
    await store.get_state("warm-up")
    writes = [
        asyncio.ensure_future(store.create_instance(new_instance(f"i{n}"))) for n in range(40)
    ]
    await asyncio.sleep(0)
    await store.close()
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert all(o is None or isinstance(o, durable.StoreError) for o in outcomes), outcomes
    created = sum(o is None for o in outcomes)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
        )
        assert await cur.fetchone() == (0,)
    async with PostgresStore(postgres_url, hub=hub) as again:  # the writes that ran are whole
        page = await again.list_instances(InstanceQuery(limit=100))
        assert len(page.instances) == created


def test_open_store_keeps_the_other_url_parameters_as_they_were() -> None:
    url = "postgresql://u@h/db?options=-c%20lock_timeout%3D5s&durable_hub=orders&sslmode=disable"
    store = durable.open_store(url)
    assert isinstance(store, PostgresStore)
    assert store.hub == "orders"
    assert store.url == "postgresql://u@h/db?options=-c%20lock_timeout%3D5s&sslmode=disable"


async def test_work_waits_a_moment_for_the_worker_that_decided_it_last(
    postgres_url: str,
) -> None:
    clock = FakeClock()
    async with PostgresStore(postgres_url, hub=new_hub(), clock=clock, sticky_seconds=0.5) as store:
        await start(store, "a")  # decided by w1
        await store.send(to("a", raised("go")))
        assert await claim(store, "w2") == {}  # w1 likely has it in memory
        assert await store.next_wake_time("w2") == clock.at(0.5)
        assert await store.next_wake_time("w1") == clock.at(0)
        assert await store.next_wake_time() == clock.at(0)
        clock.advance(0.5)  # w1 did not come: anyone may take it
        item = await claim_one(store, "a", owner="w2")
        await commit(store, item)  # now w2's
        await store.send(to("a", raised("again")))
        assert await claim(store, "w1") == {}
        item = await claim_one(store, "a", owner="w2")
        await store.abandon_orchestration(item, 0, None)  # given back: anyone's at once
        assert list(await claim(store, "w1")) == ["a"]


async def test_history_is_kept_one_row_per_decision_and_a_bad_row_is_reported(
    postgres_url: str,
) -> None:
    hub = new_hub()
    async with PostgresStore(postgres_url, hub=hub) as store:
        await start(store, "a")  # one decision: its events in one row
        await store.send(to("a", raised("go")))
        item = await claim_one(store, "a")
        await commit(store, item)
        events = await store.get_history("a")
        assert len(events) == item.history_length + 2
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT seq FROM durable_{hub}.history WHERE instance_id = 'a' ORDER BY seq"
            ).fetchall()
            assert [r[0] for r in rows] == [0, item.history_length]
            conn.execute(
                f"UPDATE durable_{hub}.history SET events = 'not json'"
                " WHERE instance_id = 'a' AND seq > 0"
            )
        with pytest.raises(durable.CorruptHistoryError, match="events from 2 of orchestration"):
            await store.get_history("a")
