"""The worker process of the Postgres fault and load tests, and the workloads it runs.

Run as a script (`python tests/postgres/pg_worker.py URL --log FILE ...`) it opens the
store of URL (`postgresql://...?durable_hub=NAME`, through `durable.open_store`) and runs a
Worker until it gets SIGTERM (a clean stop), until its parent process goes away, or until
`--max-seconds` pass. It writes, each as JSON lines appended in single writes:

- `--log`: one line per activity run (the side effect): instance, task id, tag, pid, time;
- `--decisions`: the records of logger `durable.worker.decisions` (one per committed
  decision, with the span the worker held the instance), plus the pid;
- `--warnings`: every WARNING or worse logged under `durable` (rejected commits, store
  errors while the server is away), with its logger, message and time.

With `--freeze-on TAG`, the first process (of all that share `--freeze-marker`) about to
commit a decision that schedules an activity tagged TAG writes the marker and stops itself
with SIGSTOP, holding the instance's lease, until the test sends SIGCONT; with
`--freeze-inside` it stops in the middle of that commit's transaction instead, once the
transaction's body has run and before COMMIT, holding the row locks too. The faults sit
around the store's methods (and, for the second, around the function the store runs in
its transaction), never in durable itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
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
from durable.store import _postgres_sql as pg_sql
from durable.store.base import ActivityTake, OrchestrationCommit, OrchestrationWorkItem

# -- the workloads -----------------------------------------------------------------------

_side_effect_log: int | None = None
"""The side-effect log, opened with O_APPEND (None: activities log nothing)."""


def append(fd: int, record: dict[str, Any]) -> None:
    """One JSON line in one write: whole or not at all, whoever else appends."""
    os.write(fd, (json.dumps(record) + "\n").encode())


def pg_step(ctx: durable.ActivityContext, arg: dict[str, Any]) -> str:
    """The activity: one logged side effect, and a result derived from the input only."""
    if _side_effect_log is not None:
        record = {"instance": ctx.orchestration_id, "task": ctx.task_id, "tag": arg["tag"]}
        extra = {"attempt": ctx.attempt, "pid": os.getpid(), "time": time.time()}
        append(_side_effect_log, {**record, **extra})
    return f"{arg['tag']}={arg['value'] * 2}"


def pg_child(ctx: task.OrchestrationContext, n: int) -> Any:
    x = yield ctx.call_activity(pg_step, input={"tag": "c", "value": n})
    return f"child:{x}"


def timer_for(n: int) -> timedelta:
    """The timer of `pg_order` instance n: 0.2 to 1.0 s."""
    return timedelta(seconds=0.2 + 0.2 * (n % 5))


def pg_order(ctx: task.OrchestrationContext, n: int) -> Any:
    """An activity and a child in parallel, a timer, then an external event."""
    a, child = yield task.when_all(
        [
            ctx.call_activity(pg_step, input={"tag": "a", "value": n}),
            ctx.call_sub_orchestrator(pg_child, input=n, instance_id=f"{ctx.instance_id}.c"),
        ]
    )
    yield ctx.create_timer(timer_for(n))
    go = yield ctx.wait_for_external_event("go")
    return {"a": a, "child": child, "go": go}


def go_data(n: int) -> int:
    """The data of the "go" event the test raises at `pg_order` instance n."""
    return 7 * n + 1


def pg_order_expected(n: int) -> dict[str, Any]:
    return {"a": f"a={2 * n}", "child": f"child:c={2 * n}", "go": go_data(n)}


PG_ORDER_TAGS = ("a",)
"""The activities of one `pg_order` instance (its child runs one more, tagged "c")."""


def pg_two_steps(ctx: task.OrchestrationContext, n: int) -> Any:
    first = yield ctx.call_activity(pg_step, input={"tag": "s1", "value": n})
    second = yield ctx.call_activity(pg_step, input={"tag": "s2", "value": n})
    return [first, second]


def pg_gated(ctx: task.OrchestrationContext, n: int) -> Any:
    """Starts, waits for "release", runs one activity: it cannot finish before the test says."""
    yield ctx.wait_for_external_event("release")
    return (yield ctx.call_activity(pg_step, input={"tag": "once", "value": n}))


def pg_collect(ctx: task.OrchestrationContext, state: dict[str, Any]) -> Any:
    """Receives `state["target"]` "e" events in all, continuing as new every
    `state["per_run"]` (unconsumed events carry over); returns them in order received."""
    got: list[str] = list(state["got"])
    for _ in range(state["per_run"]):
        if len(got) == state["target"]:
            break
        got.append((yield ctx.wait_for_external_event("e")))
    if len(got) < state["target"]:
        runs = state["runs"] + 1
        ctx.continue_as_new({**state, "got": got, "runs": runs}, save_events=True)
        return None
    return {"got": got, "runs": state["runs"] + 1}


PG_COUNTER = durable.EntityInstanceId("PgCounter", "shared")


class PgCounter(durable.DurableEntity):
    """A count that must end exact, however many workers die."""

    def add(self, amount: int) -> int:
        total = self.get_state(int, 0) + amount
        self.set_state(total)
        return total

    def get(self) -> int:
        return self.get_state(int, 0)


def pg_adder(ctx: task.OrchestrationContext, times: int) -> Any:
    """`times` one-way `add 1` signals to the shared counter, one decision each (a timer
    of 1 ms between them spreads them over time), then a call to read it."""
    for _ in range(times):
        ctx.signal_entity(PG_COUNTER, "add", 1)
        yield ctx.create_timer(timedelta(milliseconds=1))
    return (yield ctx.call_entity(PG_COUNTER, "get"))


ORCHESTRATORS: list[Callable[..., Any]] = [
    pg_order,
    pg_child,
    pg_two_steps,
    pg_gated,
    pg_collect,
    pg_adder,
]
ACTIVITIES: list[Callable[..., Any]] = [pg_step]
ENTITIES: list[Any] = [PgCounter]


# -- the process -------------------------------------------------------------------------


class JsonLines(logging.Handler):
    """Appends each record as one JSON line: `fields(record)` plus the pid."""

    def __init__(self, path: Path, fields: Callable[[logging.LogRecord], dict[str, Any]]):
        super().__init__(logging.DEBUG)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fields = fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            append(self.fd, {**self.fields(record), "pid": os.getpid()})
        except Exception:
            self.handleError(record)


def decision_fields(record: logging.LogRecord) -> dict[str, Any]:
    names = ("instance_id", "execution_id", "worker", "claimed_at", "committing_at")
    return {name: getattr(record, name) for name in names}


def warning_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {"logger": record.name, "message": record.getMessage(), "time": record.created}


class FreezingStore(durable.PostgresStore):
    """Stops the process (SIGSTOP) at the first commit of a decision scheduling an
    activity tagged `tag`: just before the store is called, or with `inside`, in the
    store's transaction once its body has run, before COMMIT (its row locks held)."""

    def __init__(self, url: str, *, hub: str, tag: str, marker: Path, inside: bool) -> None:
        super().__init__(url, hub=hub)
        # Every decision is claimed first (results are queued as messages), the timeline
        # these tests check: claim, decide, freeze before or inside the commit.
        self.direct_results = False
        self.needle = f'"tag":"{tag}"'
        self.marker = marker
        self.inside = inside
        self.claimed: dict[str, float] = {}
        """When each instance was last claimed: a moment before the claim's transaction."""
        if inside:
            # Private: the transaction's body is looked up on this module at each commit.
            real = pg_sql.commit_all

            async def commit_all(tx: Any, commits: Sequence[OrchestrationCommit], take: Any) -> Any:
                result = await real(tx, commits, take)
                self.reached(commits)
                return result

            pg_sql.commit_all = commit_all

    def reached(self, commits: Sequence[OrchestrationCommit]) -> None:
        hit = [
            c.item.instance_id
            for c in commits
            if any(self.needle in (a.input or "") for a in c.activities)
        ]
        if not hit:
            return
        try:  # the first process only: the others go on and take the work over
            fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        claimed = self.claimed.get(hit[0])
        append(fd, {"pid": os.getpid(), "instances": hit, "claimed": claimed, "time": time.time()})
        os.close(fd)
        # The lease runs out while we stand. Sent to this thread, the stop begins before
        # the call returns; sent to the process, another thread may take it, and this one
        # run on for a while (long enough, on a busy machine, to commit).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)

    async def claim_orchestrations(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[OrchestrationWorkItem]:
        before = time.time()
        items = await super().claim_orchestrations(owner, limit, lease_seconds)
        self.claimed.update((item.instance_id, before) for item in items)
        return items

    async def commit_orchestrations(
        self, commits: Sequence[OrchestrationCommit], take: ActivityTake | None = None
    ) -> list[Exception | None]:
        if not self.inside:
            self.reached(commits)
        return await super().commit_orchestrations(commits, take)


def open_store(args: argparse.Namespace) -> durable.Store:
    store = durable.open_store(args.url)
    if args.freeze_on is None:
        return store
    assert isinstance(store, durable.PostgresStore) and args.freeze_marker is not None
    return FreezingStore(
        store.url,
        hub=store.hub,
        tag=args.freeze_on,
        marker=args.freeze_marker,
        inside=args.freeze_inside,
    )


async def serve(args: argparse.Namespace) -> None:
    global _side_effect_log  # noqa: PLW0603 - one side-effect log per process
    _side_effect_log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if args.decisions is not None:
        decisions = logging.getLogger("durable.worker.decisions")
        decisions.setLevel(logging.DEBUG)
        decisions.propagate = False
        decisions.addHandler(JsonLines(args.decisions, decision_fields))
    if args.warnings is not None:
        handler = JsonLines(args.warnings, warning_fields)
        handler.setLevel(logging.WARNING)
        logging.getLogger("durable").addHandler(handler)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    store = open_store(args)
    worker = durable.Worker(
        store,
        orchestrators=ORCHESTRATORS,
        activities=ACTIVITIES,
        entities=ENTITIES,
        lease_seconds=args.lease,
        poll_interval=args.poll,
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
    p.add_argument("url", help="postgresql://...?durable_hub=NAME")
    p.add_argument("--log", type=Path, required=True, help="the side-effect log")
    p.add_argument("--decisions", type=Path, help="committed decisions, one JSON line each")
    p.add_argument("--warnings", type=Path, help="warnings logged under `durable`")
    p.add_argument("--ready", type=Path, help="written once the worker runs")
    p.add_argument("--freeze-on", help="SIGSTOP before committing the scheduling of this tag")
    p.add_argument("--freeze-marker", type=Path, help="written by the process that froze")
    p.add_argument("--freeze-inside", action="store_true", help="... in the commit transaction")
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-seconds", type=float, default=300.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(serve(parse(sys.argv[1:])))
