"""Stores: where instances, histories and work items live."""

from durable.store.base import Store
from durable.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
