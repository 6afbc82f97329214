"""An agent that runs for hundreds of turns keeps every execution's history bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

import durable
from durable import ai
from durable.ai.testing import Call, ScriptedGemini, call_tools, reply

TURNS = 500
EVERY = 20
MAX_EVENTS = 200  # the configured bound: a run that grew past it would fail the instance
MAX_PAYLOAD = 16 * 1024  # the conversation carried across continue-as-new must stay small


@ai.tool
def lookup(page: int) -> dict[str, object]:
    """Read one page of a long document.

    Args:
        page: the page number.
    """
    return {"page": page, "text": f"page {page} says something worth {page * 3} words"}


def script(call: Call) -> ai.ModelResponse | str:
    if not call.tool_names:  # the summarizer: no tools offered
        return "Summary: pages were read one by one; nothing is open."
    if agent_turns(call) < TURNS:
        return call_tools(("lookup", {"page": agent_turns(call)}))
    return reply("All pages read.")


def agent_turns(call: Call) -> int:
    # The conversation is compacted, so the count comes from the server's own log.
    return sum(1 for c in SERVER.calls[: call.index + 1] if c.tool_names)


SERVER = ScriptedGemini(script)


async def test_a_500_turn_agent_keeps_each_execution_under_the_bound(tmp_path: Path) -> None:
    agent = ai.Agent(
        "reader",
        instructions="Read the document page by page with `lookup`, then say you are done.",
        tools=[lookup],
        max_turns=TURNS + 10,
        continue_as_new_every=EVERY,
        keep_messages=8,
        summarizer="default",
    )
    with SERVER:
        store = durable.SqliteStore(tmp_path / "agent.db", synchronous="NORMAL")
        worker = durable.Worker(
            store,
            engine_options=durable.EngineOptions(max_history_events=MAX_EVENTS),
            max_payload_bytes=MAX_PAYLOAD,
        )
        ai.register(
            worker,
            models={"default": ai.Gemini(api_key="test-key", base_url=SERVER.url)},
            agents=[agent],
        )
        client = durable.Client(store)
        async with store, worker:
            iid = await client.schedule_new_orchestration(agent.orchestrator, input="Read it.")
            peak, executions = 0, set()
            while True:
                state = await client.get_orchestration_state(iid)
                assert state is not None
                history = await client.get_orchestration_history(iid)
                peak = max(peak, len(history))
                executions.add(state.execution_id)
                if state.runtime_status.is_terminal:
                    break
                await asyncio.sleep(0.05)
        state.raise_if_failed()
        result = msgspec_result(state)
        assert result.turns == TURNS
        assert result.text == "All pages read."
        assert peak <= MAX_EVENTS
        # One execution per EVERY turns, give or take the first and the last.
        assert len(executions) >= TURNS // EVERY - 2
        summaries = [c for c in SERVER.calls if not c.tool_names]
        assert len(summaries) == (TURNS - 1) // EVERY
        print(f"\n{TURNS} turns, {len(executions)} executions seen, peak history {peak} events")


def msgspec_result(state: durable.OrchestrationState) -> ai.AgentResult:
    assert state.serialized_output is not None
    return msgspec.json.decode(state.serialized_output, type=ai.AgentResult)
