"""`open_store(url)`: a store from a URL."""

from __future__ import annotations

from durable.store.base import Store
from durable.store.memory import MemoryStore
from durable.store.sqlite import SqliteStore


def open_store(url: str) -> Store:
    """Open a store by URL (lazily: nothing is touched until its first use).

    Args:
        url: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, or `memory://`.

    Raises:
        ValueError: the URL's scheme is not one `durable` knows, or it names no file.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "memory":
        return MemoryStore()
    if sep and scheme == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path:
            raise ValueError(f"store URL {url!r} names no file: use sqlite:///path/to/file.db")
        return SqliteStore(path)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path.db or memory://")
