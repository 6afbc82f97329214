"""Orchestrators and activities of benchmarks/sqlite.py, and its worker process.

Run as a script, it is the worker that benchmarks/sqlite.py kills to measure recovery:
`python benchmarks/_sqlite_worker.py DB LEASE_SECONDS MAX_SECONDS`. It prints `ready`
once working, then one line per finished activity, and exits by itself after
MAX_SECONDS (so that it never outlives a benchmark that died).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import durable
from durable import task

# Activity timings, (instance id, step) -> time.perf_counter(); cleared by each workload.
STARTS: dict[tuple[str, int], float] = {}
ENDS: dict[tuple[str, int], float] = {}
# Called with the step when a slow activity finishes (the worker process prints it).
ON_SLOW_DONE: Callable[[int], None] | None = None
SLOW_SECONDS = 0.02


async def sq_step(ctx: task.ActivityContext, x: int) -> int:
    STARTS[ctx.orchestration_id, x] = time.perf_counter()
    result = x + 1
    ENDS[ctx.orchestration_id, x] = time.perf_counter()
    return result


async def sq_slow_step(ctx: task.ActivityContext, x: int) -> int:
    await asyncio.sleep(SLOW_SECONDS)
    if ON_SLOW_DONE is not None:
        ON_SLOW_DONE(x)
    return x + 1


def sq_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(sq_step, input=x)
    return x


def sq_slow_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(sq_slow_step, input=x)
    return x


def sq_fanout(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(sq_step, input=i) for i in range(n)])
    return len(results)


ORCHESTRATORS = [sq_chain, sq_slow_chain, sq_fanout]
ACTIVITIES = [sq_step, sq_slow_step]


async def serve(path: str, lease_seconds: float, max_seconds: float) -> None:
    global ON_SLOW_DONE  # noqa: PLW0603 - the process's one worker reports through it

    def report(step: int) -> None:
        sys.stdout.write(f"{step}\n")
        sys.stdout.flush()

    ON_SLOW_DONE = report
    async with durable.SqliteStore(path, synchronous="FULL") as store:
        worker = durable.Worker(
            store,
            orchestrators=ORCHESTRATORS,
            activities=ACTIVITIES,
            max_concurrent_activities=1000,
            max_concurrent_orchestrations=500,
            lease_seconds=lease_seconds,
        )
        async with worker:
            print("ready", flush=True)
            await asyncio.sleep(max_seconds)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))
