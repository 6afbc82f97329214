"""Stores: where instances, histories and work items live."""

from durable.store.base import Store
from durable.store.memory import MemoryStore
from durable.store.sqlite import SqliteStore

__all__ = ["MemoryStore", "SqliteStore", "Store"]
