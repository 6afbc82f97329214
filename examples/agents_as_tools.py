"""Multi-agent: agents as tools, and LLM-driven transfer to sub-agents.

Two ways for agents to work together:
- `ai.agent_tool(researcher)` offers an agent to another as a tool. The caller's model
  asks it a question (`{"request": "..."}`), the researcher runs as a child orchestration,
  and its final text comes back as the tool's answer; the caller stays in charge.
- `ai.Agent(..., sub_agents=[writer, translator])` gives the model a `transfer_to_<name>`
  tool per sub-agent. Calling one hands the whole conversation over: the sub-agent runs
  as a child orchestration and its answer is the final answer.

Here a front desk transfers each request to the writer or the translator; the writer asks
the researcher (a tool) for facts before it writes.

What survives a crash: each agent is its own orchestration with its own history, linked
to its parent. A crash inside the researcher resumes the researcher; the front desk's
decision and the writer's earlier turns are not made again.

Run it: `python examples/agents_as_tools.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import durable
from durable import ai
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply

NOTES = {
    "replay": "Durable execution replays an orchestration from its history (Temporal docs).",
    "cost": "Agent runs that crash mid-way are often restarted from scratch (team survey).",
}


@ai.tool
def search_notes(query: str) -> dict[str, object]:
    """Search the team's research notes."""
    return {"query": query, "notes": list(NOTES.values())}


researcher = ai.Agent(
    "researcher",
    description="Finds facts, with their sources, about a topic.",
    instructions="Find facts with search_notes. Answer with at most two facts and sources.",
    tools=[search_notes],
)
writer = ai.Agent(
    "writer",
    description="Writes short blog paragraphs.",
    instructions="You write blog paragraphs of 3 or 4 sentences. Before writing, ask the "
    "researcher for facts, and use one of them with its source.",
    tools=[ai.agent_tool(researcher)],
)
translator = ai.Agent(
    "translator",
    description="Translates text into another language.",
    instructions="Translate the user's text as asked. Answer with the translation only.",
)
front_desk = ai.Agent(
    "front_desk",
    instructions="You are the front desk of a content team. Never do the work yourself: "
    "transfer writing requests to the writer and translation requests to the translator.",
    sub_agents=[writer, translator],
)


# -- the scripted model: each agent is recognised by the tools it is offered ----------


def script(call: Call) -> ai.ModelResponse:
    answers = {r.name: r.response for r in call.function_responses}
    if "transfer_to_writer" in call.tool_names:  # the front desk
        target = "translator" if "translate" in call.prompt.lower() else "writer"
        return call_tools((f"transfer_to_{target}", {}))
    if "researcher" in call.tool_names:  # the writer
        if "researcher" not in answers:
            return call_tools(("researcher", {"request": "facts on durable execution"}))
        return reply(
            "Agents fail half-way more often than we admit. Durable execution replays a "
            "run from its history (Temporal docs), so finished steps are not paid twice."
        )
    if "search_notes" in call.tool_names:  # the researcher
        if "search_notes" not in answers:
            return call_tools(("search_notes", {"query": "durable execution"}))
        return reply("\n".join(answers["search_notes"]["notes"]))
    return reply("Danke für Ihre Bestellung!")  # the translator


REQUESTS = [
    "Write a paragraph for our blog on why AI agents need durable execution.",
    "Translate 'Thank you for your order!' into German.",
]


async def main() -> None:
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "agents.db") as store:
            worker = durable.Worker(store)
            # Registers the front desk and, recursively, every agent and tool under it.
            ai.register(worker, models={"default": gemini}, agents=[front_desk])
            client = durable.Client(store)
            async with worker:
                ids = [
                    await client.schedule_new_orchestration(
                        front_desk.orchestrator, input=r, instance_id=f"request-{n}"
                    )
                    for n, r in enumerate(REQUESTS, 1)
                ]
                states = [
                    await client.wait_for_orchestration_completion(i, timeout=300) for i in ids
                ]
                runs = sorted([(s.instance_id, s.name) async for s in client.list_orchestrations()])
    results = []
    for request, state in zip(REQUESTS, states, strict=True):
        assert state is not None
        state.raise_if_failed()
        results.append(state.get_output(ai.AgentResult))
        print(f"{request}\n  -> answered by {results[-1].agent}: {results[-1].text}\n")
    print("orchestrations (children are named <parent id>:<step>):")
    for instance_id, name in runs:
        print(f"  {name:<11} {instance_id}")
    assert [r.agent for r in results] == ["writer", "translator"]
    names = [name for _, name in runs]
    assert names.count("researcher") >= 1 and names.count("front_desk") == 2


if __name__ == "__main__":
    asyncio.run(main())
