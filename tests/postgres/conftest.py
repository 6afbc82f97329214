"""Fixtures of the Postgres fault and load tests: a fresh task hub's URL, worker processes.

The worker processes run `pg_worker.py`; the crash tests' helpers (`crash_helpers`: the
process wrapper, JSON-lines reading, the history check) serve here too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "crash"))

from crash_helpers import WorkerProcess
from pg_fleet import Spawn, hub_url
from pg_helpers import new_hub

SCRIPT = Path(__file__).with_name("pg_worker.py")


@pytest.fixture
def hub(postgres_url: str) -> str:
    """The URL of a task hub of its own on the session's server (`?durable_hub=...`)."""
    return hub_url(postgres_url, new_hub())


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `pg_worker.py` with the given arguments; killed at teardown if still alive
    (and woken first, should the test have left it stopped)."""
    started: list[WorkerProcess] = []

    def start(name: str, args: Sequence[str | Path | int | float]) -> WorkerProcess:
        proc = WorkerProcess(name, args, tmp_path, script=SCRIPT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()  # SIGKILL ends a stopped process too
