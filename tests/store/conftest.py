"""Fixtures for the store conformance suite: every test runs on each store.

Time is a `FakeClock` the test moves by hand, so lease expiry, timers and delayed starts
are tested without sleeping. A new backend joins the suite by adding a case to
`open_store`; the tests use the `Store` protocol only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_helpers import hub_for
from store_helpers import FakeClock, OpenStore

from durable.store import MemoryStore, PostgresStore, SqliteStore, Store

STORES = ("memory", "sqlite", "postgres")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=STORES)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores of one kind; each call is a fresh, empty store (or, for a file-backed
    store given `path`, another store on that file). All are closed after the test."""
    kind: str = request.param
    opened: list[Store] = []
    hubs: dict[Path, str] = {}
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else ""

    def open_(clock: FakeClock, path: Path | None = None) -> Store:
        store: Store
        if kind == "memory":
            store = MemoryStore(clock=clock)
        elif kind == "sqlite":
            store = SqliteStore(path or tmp_path / f"store-{len(opened)}.db", clock=clock)
        elif kind == "postgres":
            hub = hub_for(path or tmp_path / f"store-{len(opened)}.db", hubs)
            # Any worker may claim due work at once, as on the other stores (stickiness
            # is tested apart, in test_postgres_store.py).
            store = PostgresStore(url, hub=hub, clock=clock, sticky_seconds=0)
        else:  # pragma: no cover - a backend added to STORES but not here
            raise AssertionError(kind)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore, clock: FakeClock) -> Store:
    """A fresh store on the test's fake clock."""
    return open_store(clock)
