"""`open_store(url)`: a store from a URL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from durable.store.base import Store
from durable.store.memory import MemoryStore
from durable.store.sqlite import SqliteStore


def open_store(url: str) -> Store:
    """Open a store by URL (lazily: nothing is touched until its first use).

    Args:
        url: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `memory://`,
            or `postgresql://user:password@host:port/database` (also `postgres://`); a
            `durable_hub=NAME` query parameter picks the task hub (default `default`).

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
    if sep and scheme in ("postgresql", "postgres"):
        from durable.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg on demand

        plain, hub = _hub(url)
        return PostgresStore(plain, hub=hub)
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///path.db, postgresql://... or memory://"
    )


def _hub(url: str) -> tuple[str, str]:
    """The URL without its `durable_hub` parameter (libpq would refuse it), and the hub.

    The other parameters are kept byte for byte: libpq decodes `%20` but not `+`.
    """
    parts = urlsplit(url)
    kept, hub = [], "default"
    for pair in parts.query.split("&") if parts.query else []:
        key, _, value = pair.partition("=")
        if unquote(key) == "durable_hub":
            hub = unquote(value)
        else:
            kept.append(pair)
    return urlunsplit(parts._replace(query="&".join(kept))), hub
