"""Stores: where instances, histories and work items live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable.store.base import Store
from durable.store.memory import MemoryStore
from durable.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from durable.store.postgres import PostgresStore

__all__ = ["MemoryStore", "PostgresStore", "SqliteStore", "Store"]


def __getattr__(name: str) -> Any:
    # psycopg is imported only by programs that use Postgres.
    if name == "PostgresStore":
        from durable.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
