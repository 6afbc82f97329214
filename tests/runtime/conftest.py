"""Shared fixtures for the end-to-end tests: every test runs on each store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pg_helpers import new_hub

import durable


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[durable.Store]:
    """A fresh store: in memory, or a SQLite file in the test's directory."""
    if request.param == "memory":
        yield durable.MemoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        async with durable.PostgresStore(url, hub=new_hub()) as postgres:
            yield postgres
        return
    async with durable.SqliteStore(tmp_path / "durable.db") as sqlite:
        yield sqlite


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    """A store made in plain synchronous code (the `store` fixture is async)."""
    if request.param == "memory":
        yield durable.MemoryStore()
        return
    store: durable.Store
    if request.param == "postgres":
        store = durable.PostgresStore(request.getfixturevalue("postgres_url"), hub=new_hub())
    else:
        store = durable.SqliteStore(tmp_path / "sync.db")
    try:
        yield store
    finally:
        asyncio.run(store.close())
