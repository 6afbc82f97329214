"""TestEnvironment: virtual time, so timers of days or months take no wall time."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

import durable
from durable import task
from durable.testing import TestEnvironment, VirtualClock

S = durable.OrchestrationStatus


def wait_a_month(ctx: task.OrchestrationContext, _: Any) -> Any:
    started = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(days=30))
    return (ctx.current_utc_datetime - started).days


async def slow(ctx: task.ActivityContext, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "activity"


def race(ctx: task.OrchestrationContext, seconds: float) -> Any:
    work = ctx.call_activity(slow, input=seconds)
    deadline = ctx.create_timer(timedelta(hours=1))
    winner = yield task.when_any([work, deadline])
    return "activity" if winner is work else "timer"


ATTEMPTS: list[int] = []


def flaky(ctx: task.ActivityContext, _: Any) -> int:
    ATTEMPTS.append(ctx.attempt)
    if ctx.attempt < 4:
        raise ConnectionError("try again tomorrow")
    return ctx.attempt


def patient(ctx: task.OrchestrationContext, _: Any) -> Any:
    policy = durable.RetryPolicy(first_retry_interval=timedelta(days=1), max_number_of_attempts=5)
    return (yield ctx.call_activity(flaky, retry_policy=policy))


def reminders(ctx: task.OrchestrationContext, count: int) -> Any:
    """An agent that checks in every week for `count` weeks, then stops."""
    seen = []
    for _ in range(count):
        yield ctx.create_timer(timedelta(weeks=1))
        seen.append(ctx.current_utc_datetime.isoformat())
    return seen


async def test_a_30_day_timer_completes_in_well_under_a_second() -> None:
    async with TestEnvironment(orchestrators=[wait_a_month]) as env:
        began = time.perf_counter()
        iid = await env.client.schedule_new_orchestration(wait_a_month)
        st = await env.client.wait_for_orchestration_completion(iid, timeout=5)
        wall = time.perf_counter() - began
    assert st is not None and st.get_output() == 30
    assert wall < 1.0, f"took {wall:.2f}s of wall time"


async def test_a_year_of_weekly_timers_takes_no_wall_time() -> None:
    async with TestEnvironment(orchestrators=[reminders]) as env:
        start = env.now()
        iid = await env.client.schedule_new_orchestration(reminders, input=52)
        st = await env.client.wait_for_orchestration_completion(iid, timeout=10)
    assert st is not None and len(st.get_output()) == 52
    assert env.now() - start >= timedelta(weeks=52)


async def test_retries_a_day_apart_run_at_once() -> None:
    ATTEMPTS.clear()
    async with TestEnvironment(orchestrators=[patient], activities=[flaky]) as env:
        iid = await env.client.schedule_new_orchestration(patient)
        st = await env.client.wait_for_orchestration_completion(iid, timeout=5)
    assert st is not None and st.get_output() == 4
    assert ATTEMPTS == [1, 2, 3, 4]


async def test_work_in_flight_holds_time_still() -> None:
    # The activity takes real time; the hour-long timer must not jump ahead of it.
    async with TestEnvironment(orchestrators=[race], activities=[slow]) as env:
        iid = await env.client.schedule_new_orchestration(race, input=0.3)
        st = await env.client.wait_for_orchestration_completion(iid, timeout=5)
    assert st is not None and st.get_output() == "activity"


async def test_without_auto_advance_time_moves_only_by_hand() -> None:
    async with TestEnvironment(orchestrators=[wait_a_month], auto_advance=False) as env:
        iid = await env.client.schedule_new_orchestration(wait_a_month)
        with pytest.raises(TimeoutError):
            await env.client.wait_for_orchestration_completion(iid, timeout=0.3)
        await env.advance(timedelta(days=29))
        with pytest.raises(TimeoutError):
            await env.client.wait_for_orchestration_completion(iid, timeout=0.3)
        await env.advance(timedelta(days=1))
        st = await env.client.wait_for_orchestration_completion(iid, timeout=5)
    assert st is not None and st.get_output() == 30


def test_the_virtual_clock_never_goes_back() -> None:
    clock = VirtualClock()
    start = clock()
    clock.set(start - timedelta(days=1))
    assert clock() == start
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(timedelta(seconds=-1))
    clock.advance(timedelta(hours=2))
    assert clock() == start + timedelta(hours=2)
