"""The worker process the crash tests kill, and the workload it runs.

Run as a script (`python tests/crash/crash_worker.py DB --log FILE ...`) it opens a
SqliteStore on DB and runs a Worker until it gets SIGTERM (a clean stop), until its parent
process goes away, or until `--point` is reached for the `--nth` time: then it writes what
it was doing to `--marker` and kills itself with SIGKILL, in the middle of whatever the
worker was doing. The faults are injected here, around the store's methods and inside the
activity, never in durable itself.

Fault points (`POINTS`):

- before_commit / after_commit: around `commit_orchestrations` (a group of decisions);
- activity_side_effect: inside an activity, right after it appended its side effect to the
  side-effect log and before it returns (so its completion is never recorded);
- before_complete_activities: a finished activity's result is about to be recorded;
- timer_fired: a claim returned a work item holding a TimerFired message (the instance is
  leased, nothing is decided yet);
- continue_as_new_before / continue_as_new_after: around a commit carrying `new_execution`;
- child_start_before / child_start_after: around a commit carrying `children`.

While `--point` is set, activities run strictly one at a time: an activity is claimed only
once every activity claimed before it has had its result recorded. So at most one activity
has run without its completion being recorded when the process dies, and that activity is
the only one allowed to run twice.

Every activity run appends one JSON line to the side-effect log (O_APPEND, one write):
instance id, task id, a tag unique within the instance, attempt and pid. With `--intervals`,
the process also appends one line per decision: the instance, the monotonic times (ns,
system-wide on Linux) after its claim returned and before its commit (or abandon) was
called, the pid, and how it ended: committed, rejected (lease lost) or abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import durable
from durable import task
from durable.core.events import FailureDetails, TimerFired
from durable.store.base import (
    ActivityResult,
    ActivityTake,
    ActivityWorkItem,
    OrchestrationCommit,
    OrchestrationWorkItem,
)

POINTS = (
    "before_commit",
    "after_commit",
    "activity_side_effect",
    "before_complete_activities",
    "timer_fired",
    "continue_as_new_before",
    "continue_as_new_after",
    "child_start_before",
    "child_start_after",
)

ROUNDS = 3
"""Executions of `cw_parent` per instance: it continues as new ROUNDS - 1 times."""
TIMER = timedelta(milliseconds=50)


# -- side effects ----------------------------------------------------------------------

_side_effect_log: Path | None = None


def set_side_effect_log(path: Path | None) -> None:
    """Where activities append their side effects (this process)."""
    global _side_effect_log  # noqa: PLW0603 - one log per process
    _side_effect_log = path


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in a single O_APPEND write (whole or not at all on SIGKILL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


# -- fault injection ---------------------------------------------------------------------


class Fault:
    """Kills this process with SIGKILL the `nth` time `point` is reached."""

    def __init__(self, point: str | None = None, nth: int = 1, marker: Path | None = None):
        if point is not None and point not in POINTS:
            raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
        self.point = point
        self.nth = nth
        self.marker = marker
        self.count = 0
        self._lock = threading.Lock()

    def reached(self, point: str, detail: Any) -> None:
        if point != self.point:
            return
        with self._lock:
            self.count += 1
            if self.count != self.nth:
                return
            if self.marker is not None:
                append_line(
                    self.marker,
                    {"point": point, "nth": self.nth, "pid": os.getpid(), "detail": detail},
                )
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never returns: SIGKILL cannot be caught


FAULT = Fault()


# -- the workload ----------------------------------------------------------------------


def cw_step(ctx: durable.ActivityContext, arg: dict[str, Any]) -> str:
    """The activity: one side effect, logged, and a result derived from the input only."""
    tag = arg["tag"]
    if _side_effect_log is not None:
        append_line(
            _side_effect_log,
            {
                "instance": ctx.orchestration_id,
                "task": ctx.task_id,
                "tag": tag,
                "attempt": ctx.attempt,
                "pid": os.getpid(),
            },
        )
    FAULT.reached(
        "activity_side_effect", {"instance": ctx.orchestration_id, "task": ctx.task_id, "tag": tag}
    )
    return f"{tag}={arg['value'] * 2}"


def cw_child(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Any:
    x = yield ctx.call_activity(cw_step, input={"tag": "c", "value": inp["n"] * 100 + inp["round"]})
    return f"child{inp['round']}:{x}"


def cw_parent(ctx: task.OrchestrationContext, inp: dict[str, Any]) -> Any:
    """Activities (one, then two in parallel), a timer, a child, continue-as-new twice,
    then an external event and a last activity."""
    n, rnd, acc = inp["n"], inp["round"], list(inp["acc"])
    first = yield ctx.call_activity(cw_step, input={"tag": f"r{rnd}.a", "value": n})
    pair = yield task.when_all(
        [ctx.call_activity(cw_step, input={"tag": f"r{rnd}.b{i}", "value": n + i}) for i in (1, 2)]
    )
    yield ctx.create_timer(TIMER)
    child = yield ctx.call_sub_orchestrator(
        cw_child, input={"n": n, "round": rnd}, instance_id=f"{ctx.instance_id}.child{rnd}"
    )
    acc.append([first, *pair, child])
    if rnd + 1 < ROUNDS:
        ctx.continue_as_new({"n": n, "round": rnd + 1, "acc": acc}, save_events=True)
        return None
    ctx.set_custom_status("waiting")
    go = yield ctx.wait_for_external_event("go")
    last = yield ctx.call_activity(cw_step, input={"tag": "final", "value": go})
    ctx.set_custom_status("done")
    return {"n": n, "rounds": acc, "go": go, "final": last}


def cw_small(ctx: task.OrchestrationContext, n: int) -> Any:
    """Two activities, with a short timer between them for every third instance."""
    a = yield ctx.call_activity(cw_step, input={"tag": "a", "value": n})
    if n % 3 == 0:
        yield ctx.create_timer(timedelta(milliseconds=20))
    b = yield ctx.call_activity(cw_step, input={"tag": "b", "value": n + 1})
    return [a, b]


def cw_small_expected(n: int) -> list[str]:
    return [f"a={2 * n}", f"b={2 * (n + 1)}"]


CW_COUNTER = durable.EntityInstanceId("CwCounter", "shared")  # the class name, any case


class CwCounter(durable.DurableEntity):
    """The entity of the entity crash test: a count that must end exact."""

    def add(self, amount: int) -> int:
        total = self.get_state(int, 0) + amount
        self.set_state(total)
        return total

    def get(self) -> int:
        return self.get_state(int, 0)


def cw_adder(ctx: task.OrchestrationContext, times: int) -> Any:
    """`times` one-way `add 1` signals to the shared counter, then a call to read it."""
    for _ in range(times):
        ctx.signal_entity(CW_COUNTER, "add", 1)
    return (yield ctx.call_entity(CW_COUNTER, "get"))


CW_OTHER = durable.EntityInstanceId("CwCounter", "other")


def cw_locker(ctx: task.OrchestrationContext, _: None) -> Any:
    """A critical section over two counters that waits, inside, for a "go" event."""
    with (yield ctx.lock_entities([CW_OTHER, CW_COUNTER])):
        yield ctx.call_entity(CW_COUNTER, "add", 1)
        yield ctx.wait_for_external_event("go")
        total = yield ctx.call_entity(CW_COUNTER, "add", 1)
        yield ctx.call_entity(CW_OTHER, "add", total)
    return total


ORCHESTRATORS: list[Callable[..., Any]] = [cw_parent, cw_child, cw_small, cw_adder, cw_locker]
ACTIVITIES: list[Callable[..., Any]] = [cw_step]
ENTITIES: list[Any] = [CwCounter]


# -- the instrumented store ------------------------------------------------------------


class CrashStore(durable.SqliteStore):
    """A SqliteStore whose methods reach the fault points and log decision intervals."""

    def __init__(
        self,
        path: str | Path,
        *,
        fault: Fault,
        serialize_activities: bool,
        intervals: Path | None = None,
    ) -> None:
        super().__init__(path)
        self.fault = fault
        self.serialize_activities = serialize_activities
        self.intervals = intervals
        self._claimed_at: dict[str, int] = {}
        self._activities_claimed = 0
        self._activities_settled = 0

    def _close_interval(self, iid: str, end: int, how: str) -> None:
        start = self._claimed_at.pop(iid, None)
        if start is not None and self.intervals is not None:
            record = {"iid": iid, "start": start, "end": end, "pid": os.getpid(), "how": how}
            append_line(self.intervals, record)

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        items = await super().claim_orchestrations(owner, limit, lease_seconds)
        now = time.monotonic_ns()
        for item in items:
            self._claimed_at[item.instance_id] = now
        timers = [
            i.instance_id for i in items if any(isinstance(m, TimerFired) for m in i.messages)
        ]
        if timers:
            self.fault.reached("timer_fired", timers)
        return items

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        end = time.monotonic_ns()
        ids = [c.item.instance_id for c in commits]
        continued = [c.item.instance_id for c in commits if c.new_execution is not None]
        children = [ch.instance_id for c in commits for ch in c.children]
        # Results decided on directly are recorded with their decisions.
        done = [
            {"instance": r.item.instance_id, "task": r.item.task_id}
            for c in commits
            for r in c.results
        ]
        if done:
            self.fault.reached("before_complete_activities", done)
        self.fault.reached("before_commit", ids)
        if continued:
            self.fault.reached("continue_as_new_before", continued)
        if children:
            self.fault.reached("child_start_before", children)
        outcomes = await super().commit_orchestrations(commits, take)
        self._activities_settled += len(done)
        for commit, outcome in zip(commits, outcomes, strict=True):
            iid = commit.item.instance_id
            if not commit.results:
                self._close_interval(iid, end, "committed" if outcome is None else "rejected")
            elif self.intervals is not None:  # decided unclaimed: its moment is the commit's
                how = "committed" if outcome is None else "fell back"  # (to a claim)
                record = {"iid": iid, "start": end, "end": end, "pid": os.getpid(), "how": how}
                append_line(self.intervals, record)
        self.fault.reached("after_commit", ids)
        if continued:
            self.fault.reached("continue_as_new_after", continued)
        if children:
            self.fault.reached("child_start_after", children)
        return outcomes

    async def abandon_orchestration(
        self, item: OrchestrationWorkItem, retry_after: float, error: FailureDetails | None
    ) -> None:
        self._close_interval(item.instance_id, time.monotonic_ns(), "abandoned")
        await super().abandon_orchestration(item, retry_after, error)

    async def claim_activities(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[ActivityWorkItem]:
        if self.serialize_activities:
            # One activity at a time, from its claim until its result is recorded (the
            # bound only keeps a stopping worker from waiting here for ever).
            give_up = time.monotonic() + 10
            while (
                self._activities_settled < self._activities_claimed and time.monotonic() < give_up
            ):
                await asyncio.sleep(0.002)
            limit = 1
        items = await super().claim_activities(owner, limit, lease_seconds)
        self._activities_claimed += len(items)
        return items

    async def complete_activities(self, results: Sequence[ActivityResult]) -> None:
        if results:
            done = [{"instance": r.item.instance_id, "task": r.item.task_id} for r in results]
            self.fault.reached("before_complete_activities", done)
        await super().complete_activities(results)
        self._activities_settled += len(results)

    async def abandon_activities(self, items: Sequence[ActivityWorkItem]) -> None:
        await super().abandon_activities(items)
        self._activities_settled += len(items)


# -- the process -----------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    global FAULT  # noqa: PLW0603 - the process's one fault, reached from activities too
    FAULT = Fault(args.point, args.nth, args.marker)
    set_side_effect_log(args.log)
    serialize = args.point is not None
    store = CrashStore(
        args.db, fault=FAULT, serialize_activities=serialize, intervals=args.intervals
    )
    worker = durable.Worker(
        store,
        orchestrators=ORCHESTRATORS,
        activities=ACTIVITIES,
        entities=ENTITIES,
        lease_seconds=args.lease,
        poll_interval=args.poll,
        max_concurrent_activities=1 if serialize else 64,
        max_concurrent_orchestrations=args.batch,
        shutdown_grace=5.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_seconds
    try:
        async with worker:
            if args.ready is not None:
                args.ready.write_text(str(os.getpid()))
            # Never outlive the test: stop when the parent is gone or time is up.
            while not stop.is_set() and os.getppid() == parent and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await store.close()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("db", type=Path)
    p.add_argument("--log", type=Path, required=True, help="the side-effect log")
    p.add_argument(
        "--point",
        choices=POINTS,
        default=os.environ.get("CRASH_POINT") or None,
        help="the fault point (default: $CRASH_POINT; none: never crash)",
    )
    p.add_argument("--nth", type=int, default=int(os.environ.get("CRASH_NTH", "1")))
    p.add_argument("--marker", type=Path, help="written just before the kill")
    p.add_argument("--ready", type=Path, help="written once the worker runs")
    p.add_argument("--intervals", type=Path, help="decision intervals, one JSON line each")
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--poll", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=300.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(serve(parse(sys.argv[1:])))
