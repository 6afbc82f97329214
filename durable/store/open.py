"""`open_store(url)`: a store from a URL."""

from __future__ import annotations

from durable.store.base import Store
from durable.store.memory import MemoryStore


def open_store(url: str) -> Store:
    """Open a store by URL.

    Args:
        url: `memory://` for an in-memory store.

    Raises:
        ValueError: the URL's scheme is not one `durable` knows.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryStore()
    raise ValueError(f"unsupported store URL {url!r}: use memory://")
