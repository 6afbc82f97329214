"""Workflow agents (as in Google's ADK): sequential, parallel and loop composition.

Use them when the shape of the work is fixed but each step is an agent:
- `ai.SequentialAgent` runs its agents one after the other;
- `ai.ParallelAgent` runs them at once;
- `ai.LoopAgent` runs them in rounds until one calls `escalate` (an agent made with
  `can_escalate=True`) or `max_iterations` rounds are done.
Agents share a `state` dict: an agent's `output_key` stores its final text there, and
`{key}` in an agent's instructions is replaced by `state[key]`. Seed keys that are used
before any agent sets them (here `feedback`) in the input's state.

Here two researchers work in parallel, then a planner and a critic loop until the critic
is satisfied.

What survives a crash: every agent run is a child orchestration, and the state is passed
in their recorded inputs and results. A crash in round 2 of the loop resumes in round 2;
the research is not done again.

Run it: `python examples/workflow_agents.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path

import durable
from durable import ai
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply

weather = ai.Agent(
    "weather",
    instructions="Describe the usual weather at the user's destination and dates in one sentence.",
    output_key="weather",
)
sights = ai.Agent(
    "sights",
    instructions="List the four sights most worth seeing for the user's trip, one line each.",
    output_key="sights",
)
planner = ai.Agent(
    "planner",
    instructions="Write a day-by-day itinerary for the user's trip.\nWeather: {weather}\n"
    "Sights to fit in:\n{sights}\nThe critic's feedback on your last plan: {feedback}",
    output_key="plan",
)
critic = ai.Agent(
    "critic",
    instructions="Review this itinerary:\n{plan}\n\nIf it includes every one of these sights "
    "and suits the weather, call escalate and say nothing else:\n{sights}\n"
    "Otherwise answer with one sentence of feedback.",
    output_key="feedback",
    can_escalate=True,
)
trip_planner = ai.SequentialAgent(
    "trip_planner",
    [
        ai.ParallelAgent("research", [weather, sights]),
        ai.LoopAgent("refine_plan", [planner, critic], max_iterations=3),
    ],
)


# -- the scripted model ----------------------------------------------------------------

answered: Counter[str] = Counter()


def script(call: Call) -> ai.ModelResponse:
    if call.system.startswith("Describe the usual weather"):
        answered["weather"] += 1
        return reply("Lisbon in May is sunny and warm, around 22 °C.")
    if call.system.startswith("List the four sights"):
        answered["sights"] += 1
        return reply("Belém Tower\nAlfama\nLX Factory\nSintra")
    if call.system.startswith("Write a day-by-day"):
        answered["planner"] += 1
        if "none yet" in call.system:  # the first plan forgets Sintra
            return reply("Day 1: Alfama. Day 2: Belém Tower. Day 3: LX Factory.")
        return reply("Day 1: Alfama. Day 2: Belém Tower and LX Factory. Day 3: Sintra.")
    answered["critic"] += 1
    if "Sintra" in call.system.split("\n\n")[0]:  # the plan, before the list of sights
        return call_tools(("escalate", {}))
    return reply("The plan leaves out Sintra; give it a day of its own.")


async def main() -> None:
    start = ai.AgentInput(
        prompt="Plan a 3-day trip to Lisbon in May.", state={"feedback": "none yet"}
    )
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "workflow.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini}, agents=[trip_planner])
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(
                    trip_planner.orchestrator, input=start
                )
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
    assert state is not None
    state.raise_if_failed()
    result = state.get_output(ai.AgentResult)
    print(f"weather: {result.state['weather']}")
    print(f"plan:    {result.state['plan']}")
    ended = "the critic escalated" if result.stopped == "done" else "max_iterations reached"
    print(f"{result.turns} model turns; the loop ended because {ended}")
    if answered:
        print(f"the scripted model answered: {dict(answered)}")
    assert {"weather", "sights", "plan", "feedback"} <= result.state.keys()
    if not os.environ.get("GEMINI_API_KEY"):
        assert result.stopped == "done" and answered["planner"] == 2
        assert "Sintra" in result.state["plan"]


if __name__ == "__main__":
    asyncio.run(main())
