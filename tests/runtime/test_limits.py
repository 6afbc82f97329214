"""End to end: concurrency and rate limits on activities, held in the store for every worker.

Activities record what they see (how many run at once, when each started); the limits
must hold over those records, and every call must still complete: work over the budget
is deferred, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls, eventually

import durable
from durable import task
from durable.limits import ActivityLimit

CALLS = Calls()
GATES: dict[str, asyncio.Event] = {}
SLACK = 0.02
"""Seconds between the store granting a start and the activity recording it."""


class Gauge:
    """How many activities run at once (activities here are async: one thread)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


GAUGE = Gauge()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATES.clear()
    GAUGE.reset()


# -- activities and orchestrators ------------------------------------------------------


async def slow(ctx: durable.ActivityContext, n: int) -> int:
    with GAUGE:
        await asyncio.sleep(0.05)
    CALLS.add("slow", n)
    return n


async def stamp(ctx: durable.ActivityContext, n: int) -> int:
    CALLS.add("start", time.monotonic())
    return n


async def held(ctx: durable.ActivityContext, n: int) -> int:
    CALLS.add("held started", n)
    await asyncio.wait_for(GATES["open"].wait(), WAIT)
    CALLS.add("held done", n)
    return n


async def free(ctx: durable.ActivityContext, _: Any) -> str:
    CALLS.add("free", CALLS.counts["held done"])
    return "free"


async def llm(ctx: durable.ActivityContext, req: dict[str, Any]) -> dict[str, Any]:
    CALLS.add("llm", (time.monotonic(), req["est"]))
    return {"used": req.get("used")}


def fan_out(ctx: task.OrchestrationContext, args: list[Any]):
    """Calls activity args[0] once for each input in args[1], all at once."""
    name, inputs = args
    return (yield task.when_all([ctx.call_activity(name, input=x) for x in inputs]))


def one_by_one(ctx: task.OrchestrationContext, args: list[Any]):
    name, inputs = args
    results = []
    for x in inputs:
        results.append((yield ctx.call_activity(name, input=x)))
    return results


def held_and_free(ctx: task.OrchestrationContext, n: int):
    limited = [ctx.call_activity(held, input=i) for i in range(n)]
    alone = ctx.call_activity(free)
    return (yield task.when_all([*limited, alone]))


def make_worker(store: durable.Store, *limits: ActivityLimit, **kwargs: Any) -> durable.Worker:
    return durable.Worker(
        store,
        orchestrators=[fan_out, one_by_one, held_and_free],
        activities=[slow, stamp, held, free, llm],
        limits=limits,
        shutdown_grace=1,
        **kwargs,
    )


async def run(client: durable.Client, orchestrator: Any, args: Any) -> Any:
    iid = await client.schedule_new_orchestration(orchestrator, input=args)
    state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None, iid
    state.raise_if_failed()
    assert state.runtime_status is durable.OrchestrationStatus.COMPLETED
    return state.get_output()


# -- concurrency -----------------------------------------------------------------------


async def test_max_concurrent_caps_a_fan_out(store: durable.Store) -> None:
    async with make_worker(store, ActivityLimit(slow, max_concurrent=2)):
        out = await run(durable.Client(store), fan_out, ["slow", list(range(10))])
    assert out == list(range(10))
    assert sorted(CALLS.values["slow"]) == list(range(10))  # each ran once
    assert GAUGE.peak == 2


async def test_two_workers_share_one_concurrency_budget(store: durable.Store) -> None:
    # Each worker could run 2 at once by itself: together they must still run only 2.
    limit = ActivityLimit("slow", max_concurrent=2)
    one = make_worker(store, limit, max_concurrent_activities=2)
    two = make_worker(store, ActivityLimit(slow, max_concurrent=2), max_concurrent_activities=2)
    async with one, two:
        out = await run(durable.Client(store), fan_out, ["slow", list(range(10))])
    assert out == list(range(10))
    assert sorted(CALLS.values["slow"]) == list(range(10))
    assert 1 <= GAUGE.peak <= 2


# -- rates -----------------------------------------------------------------------------


async def test_max_requests_per_window(store: durable.Store) -> None:
    window = 0.5
    async with make_worker(store, ActivityLimit(stamp, max_requests=3, window=window)):
        began = time.monotonic()
        out = await run(durable.Client(store), fan_out, ["stamp", list(range(9))])
    assert out == list(range(9))
    starts = sorted(CALLS.values["start"])
    assert len(starts) == 9
    for first, fourth in zip(starts, starts[3:], strict=False):
        assert fourth - first >= window - SLACK, starts
    assert starts[-1] - began >= 2 * window - SLACK  # three windows' worth of starts


async def test_max_tokens_counts_the_estimate(store: durable.Store) -> None:
    limit = ActivityLimit(
        llm, max_tokens=100, window=timedelta(seconds=0.6), estimate=lambda req: req["est"]
    )
    async with make_worker(store, limit):
        reqs = [{"est": 60}, {"est": 60}, {"est": 30}]
        await run(durable.Client(store), one_by_one, ["llm", reqs])
    (t1, _), (t2, _), (t3, _) = CALLS.values["llm"]
    assert t2 - t1 >= 0.6 - SLACK  # 60 + 60 > 100: the second waits for the first to leave
    assert t3 - t2 < 0.3  # 60 + 30 fits: the third is not held back


async def test_usage_replaces_the_estimate_once_the_run_ends(store: durable.Store) -> None:
    limit = ActivityLimit(
        llm,
        max_tokens=100,
        window=10,
        estimate=lambda req: req["est"],
        usage=lambda result: result["used"],
    )
    async with make_worker(store, limit):
        reqs = [{"est": 60, "used": 5}] * 3
        began = time.monotonic()
        await run(durable.Client(store), one_by_one, ["llm", reqs])
    # By the estimates alone the second would wait 10 s; each used only 5 tokens.
    assert len(CALLS.values["llm"]) == 3
    assert time.monotonic() - began < 2


async def test_an_oversize_call_still_runs(store: durable.Store) -> None:
    limit = ActivityLimit(llm, max_tokens=100, window=5, estimate=lambda req: req["est"])
    async with make_worker(store, limit):
        out = await run(durable.Client(store), one_by_one, ["llm", [{"est": 500}]])
    assert out == [{"used": None}]


# -- isolation -------------------------------------------------------------------------


async def test_limited_work_waiting_does_not_block_other_activities(
    store: durable.Store,
) -> None:
    # One slot for `held`, taken by a run that waits for the gate; the other `held` calls
    # wait for it, while `free` (no limit) runs, even with only 2 activity slots.
    GATES["open"] = gate = asyncio.Event()
    limit = ActivityLimit(held, max_concurrent=1)
    async with make_worker(store, limit, max_concurrent_activities=2):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(held_and_free, input=4)

        async def free_ran() -> bool:
            return CALLS.counts["free"] == 1

        await eventually(free_ran, timeout=1.5)
        assert CALLS.values["free"] == [0]  # no limited call had finished
        assert CALLS.counts["held started"] == 1
        gate.set()
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None and state.get_output() == [0, 1, 2, 3, "free"]
    assert sorted(CALLS.values["held done"]) == [0, 1, 2, 3]


# -- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_concurrent": 0},
        {"max_requests": 0},
        {"max_tokens": 0},
        {"max_concurrent": -1},
        {"max_requests": 1, "window": 0},
        {"max_requests": 1, "window": -1.5},
        {"max_tokens": 10, "window": timedelta(0)},
    ],
)
def test_bad_limit_arguments_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ActivityLimit(slow, **kwargs)


def test_one_limit_per_activity() -> None:
    store = durable.MemoryStore()
    worker = make_worker(store, ActivityLimit(slow, max_concurrent=1))
    with pytest.raises(ValueError, match="slow"):
        worker.add_limit(ActivityLimit("slow", max_requests=5))
    worker.add_limit(ActivityLimit(stamp, max_requests=5))  # another activity is fine
    with pytest.raises(ValueError, match="stamp"):
        worker.add_limit(ActivityLimit(stamp, max_tokens=5))
    with pytest.raises(ValueError):
        make_worker(store, ActivityLimit(slow, max_concurrent=1), ActivityLimit(slow, max_tokens=1))
