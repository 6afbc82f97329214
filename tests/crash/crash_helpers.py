"""Helpers of the crash tests: worker processes, a driver that raises events, checks."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

import durable
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    EventSent,
    ExecutionCompleted,
    ExecutionStarted,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)

SCRIPT = Path(__file__).with_name("crash_worker.py")
WAIT = 60.0
"""Seconds any single wait may take (each needs a few)."""

S = durable.OrchestrationStatus


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (empty if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class WorkerProcess:
    """A worker script (`crash_worker.py` by default) running in a subprocess, its output
    kept in a file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str | Path | int | float],
        directory: Path,
        script: Path = SCRIPT,
    ):
        self.name = name
        self.output = directory / f"{name}.out"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def tail(self, chars: int = 4000) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return f"--- output of {self.name} (pid {self.pid}) ---\n{text[-chars:]}"

    async def wait(self, timeout: float = WAIT) -> int:
        """Wait for the process to end; its return code."""
        deadline = time.monotonic() + timeout
        while (rc := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still runs after {timeout}s\n{self.tail()}")
            await asyncio.sleep(0.02)
        return rc

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a clean worker shutdown), then wait; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except AssertionError:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


Spawn = Callable[[str, Sequence[str | Path | int | float]], WorkerProcess]
"""The `spawn` fixture: start `crash_worker.py` under a name with these arguments."""


async def wait_for_file(path: Path, proc: WorkerProcess, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.returncode is not None:
            raise AssertionError(f"{proc.name} exited with {proc.returncode}\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} did not get ready in {timeout}s\n{proc.tail()}")
        await asyncio.sleep(0.02)


class Driver:
    """Watches instances of `cw_parent`; raises "go" on those that wait for it."""

    def __init__(self, client: durable.Client, ids: Iterable[str]) -> None:
        self.client = client
        self.ids = list(ids)
        self.raised: set[str] = set()
        self.states: dict[str, durable.OrchestrationState] = {}

    async def raise_go(self, iid: str, n: int) -> None:
        assert iid not in self.raised
        self.raised.add(iid)
        await self.client.raise_orchestration_event(iid, "go", data=n * 10)

    def finished(self) -> bool:
        return all(
            iid in self.states and self.states[iid].runtime_status.is_terminal for iid in self.ids
        )

    async def step(self) -> None:
        for n, iid in enumerate(self.ids):
            if iid in self.states and self.states[iid].runtime_status.is_terminal:
                continue
            state = await self.client.get_orchestration_state(iid)
            assert state is not None, iid
            self.states[iid] = state
            if state.serialized_custom_status == '"waiting"' and iid not in self.raised:
                await self.raise_go(iid, n)

    async def run_until(
        self,
        done: Callable[[], bool],
        what: str,
        diagnose: Callable[[], str],
        timeout: float = WAIT,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            await self.step()
            if done():
                return
            if time.monotonic() > deadline:
                states = {
                    i: (s.runtime_status.value, s.failure_details) for i, s in self.states.items()
                }
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; states: {states}\n{diagnose()}"
                )
            await asyncio.sleep(0.03)


# -- history checks --------------------------------------------------------------------

_TaskEvent = (
    TaskScheduled
    | TaskCompleted
    | TaskFailed
    | TimerCreated
    | TimerFired
    | ChildOrchestrationCreated
    | ChildOrchestrationCompleted
    | ChildOrchestrationFailed
    | EventSent
)
_RUN_SPECIFIC = {"timestamp", "fire_at", "execution_id"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _RUN_SPECIFIC}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def signature(history: Iterable[durable.HistoryEvent]) -> Counter[str]:
    """The events of a history as a multiset, without times, execution ids and the
    OrchestratorStarted markers (how decisions were batched differs from run to run)."""
    return Counter(
        json.dumps(_strip(msgspec.to_builtins(e)), sort_keys=True)
        for e in history
        if not isinstance(e, OrchestratorStarted)
    )


def check_history(iid: str, history: Sequence[durable.HistoryEvent]) -> None:
    """No event duplicated or missing: one start first (after the first decision's
    OrchestratorStarted), one end last, each task id scheduled once (ids contiguous from 0)
    and answered exactly once, successfully."""
    assert len(history) >= 3, f"{iid}: {list(history)}"
    assert isinstance(history[0], OrchestratorStarted), f"{iid}: starts with {history[0]!r}"
    assert isinstance(history[1], ExecutionStarted), f"{iid}: starts with {history[1]!r}"
    assert isinstance(history[-1], ExecutionCompleted), f"{iid}: ends with {history[-1]!r}"
    assert history[-1].status == "COMPLETED", f"{iid}: {history[-1]!r}"
    kinds = Counter(type(e).__name__ for e in history)
    assert kinds["ExecutionStarted"] == 1 and kinds["ExecutionCompleted"] == 1, (iid, kinds)

    def ids(*types: type[_TaskEvent]) -> list[int]:
        return [e.task_id for e in history if isinstance(e, types)]

    scheduled = ids(TaskScheduled, TimerCreated, ChildOrchestrationCreated, EventSent)
    assert sorted(scheduled) == list(range(len(scheduled))), f"{iid}: task ids {scheduled}"
    for opened, closed in (
        (TaskScheduled, TaskCompleted),
        (TimerCreated, TimerFired),
        (ChildOrchestrationCreated, ChildOrchestrationCompleted),
    ):
        answered = ids(closed)
        assert sorted(answered) == sorted(ids(opened)), (
            f"{iid}: {opened.__name__} {ids(opened)} answered by {closed.__name__} {answered}"
        )
    assert not ids(TaskFailed, ChildOrchestrationFailed), f"{iid}: failures in {history}"
