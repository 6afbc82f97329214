"""Shared fixtures for the end-to-end tests: every test runs on each store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import durable


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[durable.Store]:
    """A fresh store: in memory, or a SQLite file in the test's directory."""
    if request.param == "memory":
        yield durable.MemoryStore()
        return
    async with durable.SqliteStore(tmp_path / "durable.db") as sqlite:
        yield sqlite


@pytest.fixture(params=["memory", "sqlite"])
def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[durable.Store]:
    """A store made in plain synchronous code (the `store` fixture is async)."""
    if request.param == "memory":
        yield durable.MemoryStore()
        return
    sqlite = durable.SqliteStore(tmp_path / "sync.db")
    try:
        yield sqlite
    finally:
        asyncio.run(sqlite.close())
