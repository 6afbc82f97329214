"""Task hubs for tests on the session's Postgres server (the `postgres_url` fixture)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

_hubs = itertools.count()


def new_hub() -> str:
    """A task hub name used by no other test of this session (nor of another process)."""
    return f"t{os.getpid()}_{next(_hubs)}"


def hub_for(path: Path, hubs: dict[Path, str]) -> str:
    """The hub standing for `path` in tests that reopen a store "on the same file"."""
    return hubs.setdefault(path, new_hub())
