"""`durable demo`: a small research agent that shows replay, fan-out and human approval."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from durable import task
from durable.client import Client
from durable.store.base import Store
from durable.store.memory import MemoryStore
from durable.worker import Worker

CALLS: Counter[str] = Counter()


def plan(ctx: task.ActivityContext, topic: str) -> list[str]:
    """A stand-in for a model call that splits a topic into sections."""
    CALLS["plan"] += 1
    return [f"{topic}: history", f"{topic}: how it works", f"{topic}: open problems"]


async def write_section(ctx: task.ActivityContext, section: str) -> str:
    """A stand-in for a model call that drafts one section."""
    CALLS["write_section"] += 1
    await asyncio.sleep(0.05)
    return f"[{section}] drafted (attempt {ctx.attempt})"


def publish(ctx: task.ActivityContext, report: dict[str, Any]) -> str:
    """A stand-in for a side effect: publishing the approved report."""
    CALLS["publish"] += 1
    return f"published {len(report['sections'])} sections on {report['topic']!r}"


def research_agent(ctx: task.OrchestrationContext, topic: str) -> Any:
    """Plan, draft the sections in parallel, wait for a human, publish."""
    sections = yield ctx.call_activity(plan, input=topic)
    ctx.set_custom_status({"stage": "drafting", "sections": len(sections)})
    drafts = yield task.when_all([ctx.call_activity(write_section, input=s) for s in sections])
    ctx.set_custom_status({"stage": "waiting for approval"})
    approval = ctx.wait_for_external_event("approval")
    timeout = ctx.create_timer(
        ctx.current_utc_datetime.replace(year=ctx.current_utc_datetime.year + 1)
    )
    winner = yield task.when_any([approval, timeout])
    if winner is not approval or not approval.get_result():
        return {"topic": topic, "published": False}
    timeout.cancel()
    receipt = yield ctx.call_activity(publish, input={"topic": topic, "sections": drafts})
    return {"topic": topic, "published": True, "receipt": receipt, "sections": drafts}


async def run_demo(store: Store | None = None) -> dict[str, Any]:
    """Run the demo on `store` (in memory by default) and print what happens."""
    store = store or MemoryStore()
    started = time.perf_counter()
    async with Worker(
        store, orchestrators=[research_agent], activities=[plan, write_section, publish]
    ):
        client = Client(store)
        iid = await client.schedule_new_orchestration(research_agent, input="durable execution")
        print(f"started research_agent as {iid}")
        while True:
            state = await client.get_orchestration_state(iid)
            assert state is not None
            status = state.get_custom_status()
            if status and status.get("stage") == "waiting for approval":
                break
            await asyncio.sleep(0.01)
        print("drafts done; the agent waits for a human (a durable external event)")
        await client.raise_orchestration_event(iid, "approval", data=True)
        print("approved")
        final = await client.wait_for_orchestration_completion(iid, timeout=30)
        assert final is not None
        final.raise_if_failed()
        output: dict[str, Any] = final.get_output()
        history = await client.get_orchestration_history(iid)
    print(f"result: {output['receipt']}")
    for section in output["sections"]:
        print(f"  {section}")
    print(f"history: {len(history)} events; activity calls: {dict(CALLS)}")
    print(f"done in {time.perf_counter() - started:.2f}s")
    return output
