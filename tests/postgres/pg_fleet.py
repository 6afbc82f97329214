"""Worker processes on one Postgres task hub: starting them, driving them, checking the outcome."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crash_helpers import WAIT, WorkerProcess, check_history, wait_for_file
from pg_worker import PG_ORDER_TAGS, go_data, pg_order_expected

import durable
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    EventRaised,
    TaskCompleted,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)

T = TypeVar("T")

Spawn = Callable[[str, Sequence[str | Path | int | float]], WorkerProcess]
"""The `spawn` fixture: start `pg_worker.py` under a name with these arguments."""

S = durable.OrchestrationStatus


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file that a live process may be appending to."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]


def with_param(url: str, key: str, value: str) -> str:
    """`url` with one more query parameter."""
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


def hub_url(url: str, hub: str) -> str:
    """`url` naming task hub `hub` (`durable_hub=`, which `durable.open_store` reads)."""
    return with_param(url, "durable_hub", hub)


@dataclass
class Fleet:
    """Worker processes sharing a side-effect log, each with its own decisions and warnings."""

    directory: Path
    procs: list[WorkerProcess]

    @property
    def log(self) -> Path:
        return self.directory / "side-effects.jsonl"

    def decisions(self) -> list[dict[str, Any]]:
        return [r for p in self.procs for r in read_lines(self.decisions_of(p.name))]

    def decisions_of(self, name: str) -> Path:
        return self.directory / f"{name}.decisions.jsonl"

    def warnings_of(self, name: str) -> list[dict[str, Any]]:
        return read_lines(self.directory / f"{name}.warnings.jsonl")

    def side_effects(self) -> list[dict[str, Any]]:
        return read_lines(self.log)

    def tails(self) -> str:
        return "".join(p.tail() for p in self.procs)

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.returncode is not None]
        assert not dead, "".join(p.tail() for p in dead)

    async def stop(self) -> None:
        for proc in self.procs:
            assert await proc.stop() == 0, proc.tail()


async def start_fleet(
    spawn: Spawn,
    directory: Path,
    url: str,
    names: Iterable[str],
    extra: Sequence[str | Path | int | float] = (),
) -> Fleet:
    """Start one `pg_worker.py` per name on `url`; returns once every one of them runs.
    Each names its connections after itself (`application_name`, in `pg_stat_activity`)."""
    fleet = Fleet(directory, [])
    for name in names:
        named = with_param(url, "application_name", name)
        args: list[str | Path | int | float] = [named, "--log", fleet.log]
        args += ["--decisions", fleet.decisions_of(name)]
        args += ["--warnings", directory / f"{name}.warnings.jsonl"]
        args += ["--ready", directory / f"{name}.ready", *extra]
        fleet.procs.append(spawn(name, args))
    for proc in fleet.procs:
        await wait_for_file(directory / f"{proc.name}.ready", proc)
    return fleet


async def wait_until(
    condition: Callable[[], bool], what: str, fleet: Fleet, timeout: float = WAIT
) -> None:
    """Wait until `condition()` holds; fails with the workers' output after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout}s\n{fleet.tails()}"
        await asyncio.sleep(0.02)


def run_state(pid: int) -> str:
    """The scheduler's state letter of a process: R, S, ..., T when stopped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


async def bounded(calls: Iterable[Callable[[], Awaitable[T]]], at_once: int) -> list[T]:
    """Run the calls, `at_once` of them at a time; their results in order."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


UNFINISHED = [s for s in S if not s.is_terminal]


async def wait_finished(
    client: durable.Client,
    ids: Sequence[str],
    fleet: Fleet,
    timeout: float,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
) -> dict[str, durable.OrchestrationState]:
    """Wait until no instance of the hub is unfinished; the states of `ids`, which must
    all be there. Fails at once if a worker died; `tolerate` lists errors of the client's
    own calls to ride out (while the server is away)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            left = [s async for s in client.list_orchestrations(status=UNFINISHED, limit=1)]
            if not left:
                break
        except tolerate:
            left = []
        fleet.check_alive()
        if time.monotonic() > deadline:
            unfinished = [s async for s in client.list_orchestrations(status=UNFINISHED)]
            raise AssertionError(
                f"{len(unfinished)} unfinished after {timeout}s, e.g."
                f" {[(s.instance_id, s.runtime_status.value) for s in unfinished[:5]]}"
                f"\n{fleet.tails()}"
            )
        await asyncio.sleep(0.5)
    states = {s.instance_id: s async for s in client.list_orchestrations(page_size=1000)}
    missing = set(ids) - set(states)
    assert not missing, f"{len(missing)} instances missing, e.g. {sorted(missing)[:5]}"
    return {iid: states[iid] for iid in ids}


def overlapping_spans(records: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], ...]]:
    """Pairs of committed decisions of one instance whose spans (from the claim to the
    commit) overlap: two holders at once. Each span must also start before it ends."""
    by_instance: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        assert r["claimed_at"] <= r["committing_at"], r
        by_instance[r["instance_id"]].append(r)
    overlaps: list[tuple[dict[str, Any], ...]] = []
    for spans in by_instance.values():
        spans.sort(key=lambda r: (r["claimed_at"], r["committing_at"]))
        latest = spans[0]  # the span ending last among those started so far
        for span in spans[1:]:
            if span["claimed_at"] < latest["committing_at"]:
                overlaps.append((latest, span))
            if span["committing_at"] > latest["committing_at"]:
                latest = span
    return overlaps


def check_order_outcome(
    ids: Sequence[str],
    states: dict[str, durable.OrchestrationState],
    histories: dict[str, Sequence[durable.HistoryEvent]],
) -> None:
    """Every `pg_order` instance (input n = its index) and its child completed with the
    expected output, and their histories lost and repeated nothing."""
    wrong = {
        iid: (
            states[iid].runtime_status,
            states[iid].serialized_output,
            states[iid].failure_details,
        )
        for n, iid in enumerate(ids)
        if states[iid].runtime_status is not S.COMPLETED
        or json.loads(states[iid].serialized_output or "null") != pg_order_expected(n)
    }
    assert not wrong, f"{len(wrong)} wrong outcomes, e.g. {list(wrong.items())[:3]}"
    for n, iid in enumerate(ids):
        check_order_history(iid, n, histories[iid])
        check_history(f"{iid}.c", histories[f"{iid}.c"])


def check_order_history(iid: str, n: int, history: Sequence[durable.HistoryEvent]) -> None:
    """`check_history`, and more: each answer comes after its question, the parallel
    activities were scheduled together, one "go" with the data raised."""
    check_history(iid, history)
    position = {}
    for k, e in enumerate(history):
        if isinstance(e, TaskScheduled | TimerCreated | ChildOrchestrationCreated):
            position[e.task_id] = k
    for k, e in enumerate(history):
        if isinstance(e, TaskCompleted | TimerFired | ChildOrchestrationCompleted):
            assert position[e.task_id] < k, f"{iid}: {e!r} before its scheduling"
    kinds = [type(e).__name__ for e in history]
    assert kinds.count("TaskScheduled") == len(PG_ORDER_TAGS), (iid, kinds)
    assert kinds.count("TimerCreated") == kinds.count("ChildOrchestrationCreated") == 1, kinds
    raised = [e for e in history if isinstance(e, EventRaised)]
    assert [(e.name, e.input) for e in raised] == [("go", str(go_data(n)))], (iid, raised)


def runs_per_activity(records: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """How often each activity (instance, tag) ran, from the side-effect log."""
    return Counter((r["instance"], r["tag"]) for r in records)


def order_activities(ids: Iterable[str]) -> set[tuple[str, str]]:
    """The activities of these `pg_order` instances and of their children."""
    return {(iid, tag) for iid in ids for tag in PG_ORDER_TAGS} | {(f"{i}.c", "c") for i in ids}


async def fetch_histories(
    client: durable.Client, ids: Iterable[str], at_once: int = 8
) -> dict[str, Sequence[durable.HistoryEvent]]:
    ids = list(ids)
    found = await bounded([lambda i=i: client.get_orchestration_history(i) for i in ids], at_once)
    return dict(zip(ids, found, strict=True))
