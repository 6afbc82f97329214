"""`durable demo`: a research agent that survives a SIGKILL of its worker, on SQLite.

The demo process is the client. It starts a worker in a child process, schedules the
agent, kills the worker with SIGKILL in the middle of the parallel drafting, starts a new
worker on the same database file, answers the agent's request for approval, and shows from
the history and from the activities' own log that the run resumed where it stopped: no
step that had completed ran again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable import task
from durable.client import Client
from durable.core.events import TaskCompleted, TaskScheduled, TimerCreated, TimerFired
from durable.store.sqlite import SqliteStore
from durable.worker import Worker

DB_NAME = "durable-demo.db"
RUNS_NAME = "durable-demo.runs"  # one line per activity execution, written by the workers
_SECTIONS = ("history", "how replay works", "failure modes", "open problems")


# -- the agent: activities are stand-ins for model calls (offline, no key) -------------


def _record(ctx: task.ActivityContext, what: str) -> None:
    runs = Path(os.environ.get("DURABLE_DEMO_RUNS", RUNS_NAME))
    with runs.open("a") as f:
        f.write(f"{ctx.task_id}\t{ctx.name}\t{what}\n")
    print(f"    [worker {os.getpid()}] {ctx.name}({what}) done", flush=True)


async def plan(ctx: task.ActivityContext, topic: str) -> list[str]:
    """Split the topic into sections (a model call in a real agent)."""
    await asyncio.sleep(0.2)
    _record(ctx, topic)
    return [f"{topic}: {s}" for s in _SECTIONS]


async def write_section(ctx: task.ActivityContext, section: str) -> str:
    """Draft one section; each takes a different time, like real model calls."""
    await asyncio.sleep(0.3 + 0.4 * (len(section) % 4))
    _record(ctx, section)
    return f"[{section}] drafted"


async def review(ctx: task.ActivityContext, drafts: list[str]) -> str:
    """Check the drafts against each other (an evaluator model call)."""
    await asyncio.sleep(0.2)
    _record(ctx, f"{len(drafts)} drafts")
    return f"{len(drafts)} sections reviewed, consistent"


def publish(ctx: task.ActivityContext, report: dict[str, Any]) -> str:
    """The side effect at the end: publish the approved report."""
    _record(ctx, report["topic"])
    return f"published {len(report['sections'])} sections on {report['topic']!r}"


def research_agent(ctx: task.OrchestrationContext, topic: str) -> Any:
    """Plan, draft sections in parallel, review, wait for a human, wait a moment, publish."""
    sections = yield ctx.call_activity(plan, input=topic)
    ctx.set_custom_status({"stage": "drafting", "sections": len(sections)})
    drafts = yield task.when_all([ctx.call_activity(write_section, input=s) for s in sections])
    verdict = yield ctx.call_activity(review, input=drafts)
    ctx.set_custom_status({"stage": "waiting for approval", "review": verdict})
    approval = ctx.wait_for_external_event("approval")
    deadline = ctx.create_timer(timedelta(days=7))
    winner = yield task.when_any([approval, deadline])
    if winner is not approval or not approval.get_result():
        return {"topic": topic, "published": False}
    deadline.cancel()
    ctx.set_custom_status({"stage": "approved; publishing in 1 s"})
    yield ctx.create_timer(timedelta(seconds=1))
    receipt = yield ctx.call_activity(publish, input={"topic": topic, "sections": drafts})
    return {"topic": topic, "published": True, "receipt": receipt, "sections": drafts}


ORCHESTRATORS: list[Callable[..., Any]] = [research_agent]
ACTIVITIES: list[Callable[..., Any]] = [plan, write_section, review, publish]


# -- the worker process ---------------------------------------------------------------


async def run_worker(db: Path) -> None:
    """Work on `db` until killed or interrupted (the demo's child process)."""
    async with (
        SqliteStore(db) as store,
        Worker(store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, lease_seconds=2.0),
    ):
        await asyncio.Event().wait()


def _start_worker(db: Path, runs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DURABLE_DEMO_RUNS": str(runs)}
    command = [sys.executable, "-m", "durable", "demo", "--worker", str(db)]
    return subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter and module


# -- the demo -------------------------------------------------------------------------


async def run_demo(directory: Path | None = None) -> dict[str, Any]:
    """Run the demo in `directory` (the current one by default); returns the agent's output."""
    directory = directory or Path.cwd()
    db, runs = directory / DB_NAME, directory / RUNS_NAME
    for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), runs):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    print(f"durable demo: a research agent on SQLite ({db})")
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with SqliteStore(db) as store:
            client = Client(store, poll_interval=0.05)
            first = _start_worker(db, runs)
            workers.append(first)
            print(f"started worker process {first.pid}")
            iid = await client.schedule_new_orchestration(
                research_agent, input="durable execution", instance_id="research-agent"
            )
            print(f"scheduled research_agent as {iid!r}")

            await _until(client, iid, lambda h: _completed(h, "write_section") >= 2)
            first.send_signal(signal.SIGKILL)
            first.wait()
            at_kill = await client.get_orchestration_history(iid)
            done_at_kill = {e.task_id for e in at_kill if isinstance(e, TaskCompleted)}
            print(
                f"\n*** killed worker {first.pid} with SIGKILL: "
                f"{_completed(at_kill, 'write_section')} of {len(_SECTIONS)} sections were "
                "drafted, the rest were in flight ***\n"
            )
            second = _start_worker(db, runs)
            workers.append(second)
            print(f"started worker process {second.pid} on the same file; it resumes the run")

            await _until(client, iid, lambda h: _completed(h, "review") >= 1)
            await _waiting_for_approval(client, iid)
            print("the agent asks for approval (a durable external event); approving in 0.5 s")
            await asyncio.sleep(0.5)
            await client.raise_orchestration_event(iid, "approval", data=True)

            final = await client.wait_for_orchestration_completion(iid, timeout=60)
            assert final is not None
            final.raise_if_failed()
            output: dict[str, Any] = final.get_output()
            history = await client.get_orchestration_history(iid)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(5)
    _report(output, history, done_at_kill, runs, time.perf_counter() - started)
    return output


async def _until(client: Client, iid: str, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done(await client.get_orchestration_history(iid)):
        if time.monotonic() > deadline:
            raise TimeoutError("the demo's agent made no progress; is the worker running?")
        await asyncio.sleep(0.05)


async def _waiting_for_approval(client: Client, iid: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        state = await client.get_orchestration_state(iid)
        status = state.get_custom_status() if state and state.serialized_custom_status else {}
        if status.get("stage") == "waiting for approval":
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the demo's agent never asked for approval")
        await asyncio.sleep(0.05)


def _completed(history: Any, name: str) -> int:
    names = {e.task_id: e.name for e in history if isinstance(e, TaskScheduled)}
    return sum(1 for e in history if isinstance(e, TaskCompleted) and names.get(e.task_id) == name)


def _report(
    output: dict[str, Any], history: Any, done_at_kill: set[int], runs: Path, seconds: float
) -> None:
    executions = Counter(int(line.split("\t")[0]) for line in runs.read_text().splitlines())
    completed = {e.task_id for e in history if isinstance(e, TaskCompleted)}
    names = {e.task_id: e.name for e in history if isinstance(e, TaskScheduled)}
    print(f"\nresult: {output['receipt']}")
    timers = {e.task_id: e.fire_at for e in history if isinstance(e, TimerCreated)}
    fired = {e.task_id for e in history if isinstance(e, TimerFired)}
    print(f"history: {len(history)} events. Each step, and how often its activity ran:")
    for task_id in sorted(names.keys() | timers.keys()):
        if task_id in timers:
            what = "fired" if task_id in fired else "not needed: the approval came first"
            print(f"  step {task_id:>2}  {'timer':<14} {what}")
            continue
        name = names[task_id]
        count = executions[task_id]
        if task_id in done_at_kill:
            note = "completed before the kill"
        elif count > 1:
            note = "finished as the worker died, before its result was recorded: ran again"
        else:
            note = (
                "scheduled after the kill"
                if task_id > max(done_at_kill, default=-1)
                else "in flight at the kill: run by the new worker"
            )
        print(f"  step {task_id:>2}  {name:<14} ran {count}x  ({note})")
    if completed != set(names):
        raise AssertionError("a step did not complete")
    again = [t for t in done_at_kill if executions[t] != 1]
    if again:
        raise AssertionError(f"completed steps ran again: {again}")
    print(
        f"no step completed before the kill ran again ({len(done_at_kill)} of them); "
        f"done in {seconds:.1f}s."
    )
