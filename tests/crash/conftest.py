"""Fixtures of the crash tests: worker subprocesses that never outlive their test."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from crash_helpers import Spawn, WorkerProcess


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start `crash_worker.py` with the given arguments; killed at teardown if still alive."""
    started: list[WorkerProcess] = []

    def start(name: str, args: Sequence[str | Path | int | float]) -> WorkerProcess:
        proc = WorkerProcess(name, args, tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
