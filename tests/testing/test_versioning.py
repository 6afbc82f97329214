"""A worked upgrade: an agent loop running on v1 goes on under v2, guarded by is_patched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import durable
from durable import task
from durable.core.events import PatchApplied
from durable.testing import Replayer

S = durable.OrchestrationStatus
CALLS: list[str] = []


def call_model(ctx: task.ActivityContext, turn: int) -> str:
    CALLS.append(f"model {turn}")
    return f"reply {turn}"


def moderate(ctx: task.ActivityContext, reply: str) -> str:
    CALLS.append(f"moderate {reply}")
    return f"{reply} (moderated)"


def agent_v1(ctx: task.OrchestrationContext, state: dict[str, Any]) -> Any:
    reply = yield ctx.call_activity(call_model, input=state["turn"])
    ctx.set_custom_status({"waiting": state["turn"]})
    yield ctx.wait_for_external_event("next")
    state["replies"].append(reply)
    state["turn"] += 1
    if state["turn"] == 4:
        return state["replies"]
    ctx.continue_as_new(state)
    return None


def agent_v2(ctx: task.OrchestrationContext, state: dict[str, Any]) -> Any:
    reply = yield ctx.call_activity(call_model, input=state["turn"])
    if ctx.is_patched("moderate-replies"):
        reply = yield ctx.call_activity(moderate, input=reply)
    ctx.set_custom_status({"waiting": state["turn"]})
    yield ctx.wait_for_external_event("next")
    state["replies"].append(reply)
    state["turn"] += 1
    if state["turn"] == 4:
        return state["replies"]
    ctx.continue_as_new(state)
    return None


def agent_v3(ctx: task.OrchestrationContext, state: dict[str, Any]) -> Any:
    """Once no instance predates the change: the old branch is gone."""
    ctx.deprecate_patch("moderate-replies")
    reply = yield ctx.call_activity(call_model, input=state["turn"])
    reply = yield ctx.call_activity(moderate, input=reply)
    ctx.set_custom_status({"waiting": state["turn"]})
    yield ctx.wait_for_external_event("next")
    state["replies"].append(reply)
    state["turn"] += 1
    if state["turn"] == 4:
        return state["replies"]
    ctx.continue_as_new(state)
    return None


def worker(store: durable.Store, version: Any) -> durable.Worker:
    w = durable.Worker(store, activities=[call_model, moderate], poll_interval=0.05)
    w.add_orchestrator(version, name="agent")
    return w


async def waiting(client: durable.Client, iid: str, turn: int) -> durable.History:
    """Wait until the agent waits for "next" in `turn`; its history then."""
    for _ in range(500):
        st = await client.get_orchestration_state(iid)
        assert st is not None and not st.runtime_status.is_terminal, st
        if st.serialized_custom_status and st.get_custom_status() == {"waiting": turn}:
            return await client.get_orchestration_history(iid)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the agent never waited in turn {turn}")


async def test_a_running_agent_upgrades_without_breaking(tmp_path: Path) -> None:
    CALLS.clear()
    start = {"turn": 0, "replies": []}
    async with durable.SqliteStore(tmp_path / "agents.db") as store:
        client = durable.Client(store)
        async with worker(store, agent_v1):
            old = await client.schedule_new_orchestration("agent", input=start, instance_id="old")
            recorded = await waiting(client, old, 0)

        # The deploy: v2 replays v1's history (no PatchApplied there: the old branch)...
        replayer = Replayer()
        replayer.add_orchestrator(agent_v2, name="agent")
        assert replayer.replay(recorded) is S.RUNNING

        async with worker(store, agent_v2):
            await client.raise_orchestration_event(old, "next")
            await waiting(client, old, 1)  # ...and the next execution takes the new branch
            new = await client.schedule_new_orchestration("agent", input=start, instance_id="new")
            await waiting(client, new, 0)
            history = await client.get_orchestration_history(new)
            assert [e.patch_id for e in history if isinstance(e, PatchApplied)] == [
                "moderate-replies"
            ]
            for turn in (1, 2):
                await client.raise_orchestration_event(new, "next")
                await waiting(client, new, turn)
                await client.raise_orchestration_event(old, "next")
                await waiting(client, old, turn + 1)
            await client.raise_orchestration_event(new, "next")
            await waiting(client, new, 3)
            await client.raise_orchestration_event(old, "next")
            await client.raise_orchestration_event(new, "next")
            old_done = await client.wait_for_orchestration_completion(old, timeout=5)
            new_done = await client.wait_for_orchestration_completion(new, timeout=5)

    assert old_done is not None and new_done is not None
    # Turn 0 of the old instance ran on v1; every later execution took the new branch.
    assert old_done.get_output() == [
        "reply 0",
        "reply 1 (moderated)",
        "reply 2 (moderated)",
        "reply 3 (moderated)",
    ]
    assert new_done.get_output() == [f"reply {t} (moderated)" for t in range(4)]
    # Each model call ran once: the upgrade re-ran nothing.
    assert sorted(c for c in CALLS if c.startswith("model")) == sorted(
        [f"model {t}" for t in range(4)] * 2
    )

    # v3 (the old branch removed) still replays histories that recorded the patch.
    v3 = Replayer()
    v3.add_orchestrator(agent_v3, name="agent")
    assert v3.replay(history) is S.RUNNING
