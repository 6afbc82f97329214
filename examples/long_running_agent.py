"""A long-running agent whose history stays bounded: continue-as-new with compaction.

Use these settings for agents that run for many turns (hours of tool calls, a chat that
lasts weeks). Every turn adds events to the orchestration's history, and a long history
makes each replay slower. With `continue_as_new_every=5` the agent restarts itself as a
fresh execution every 5 turns, carrying a compacted conversation: the last
`keep_messages` messages verbatim, and the older ones summarized by the `summarizer`
model (without a summarizer they are dropped; the first user message always stays).
The turn count carries over, so `max_turns` holds across executions.

What survives a crash: everything, as with any agent; continue-as-new is itself recorded,
so a crash during the switch resumes in the right execution with the right conversation.

Here the agent reads a 39-page report, one `read_page` call per turn, and answers on turn
40. The program prints how many executions that took and how long the history is.

Run it: `python examples/long_running_agent.py` (offline, against a scripted
Gemini-compatible server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import durable
from durable import ai
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply

PAGES = 39
EVERY = 5


@ai.tool
def read_page(page: int) -> dict[str, object]:
    """Read one page of the incident report.

    Args:
        page: the page number, from 1.
    """
    if not 1 <= page <= PAGES:
        return {"error": f"the report has pages 1 to {PAGES}"}
    incidents = page % 3  # a made-up report: 0, 1 or 2 incidents per page
    return {
        "page": page,
        "text": f"Page {page}: {incidents} incident(s) in region {page % 4}.",
        "next_page": page + 1 if page < PAGES else None,
    }


reader = ai.Agent(
    "reader",
    instructions="Read the incident report with read_page: one page per turn, starting at "
    "page 1 and following next_page until it is null. Keep a running count of incidents. "
    "When done, answer with the total number of incidents and the worst region.",
    tools=[read_page],
    max_turns=60,
    continue_as_new_every=EVERY,
    keep_messages=6,
    summarizer="default",
)


# -- the scripted model: reads page after page, then answers -------------------------


def script(call: Call) -> ai.ModelResponse:
    if not call.tool_names:  # the summarizer is offered no tools
        return reply("Reading the report page by page; incidents are counted as they come.")
    answers = [r.response for r in call.function_responses]
    if not answers:
        return call_tools(("read_page", {"page": 1}))
    if answers[-1].get("next_page"):
        return call_tools(("read_page", {"page": answers[-1]["next_page"]}))
    return reply("I read all 39 pages: 39 incidents in total; region 2 had the most.")


async def main() -> None:
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "long.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini}, agents=[reader])
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(
                    reader.orchestrator,
                    input=ai.AgentInput(prompt="Summarize the incident report."),
                )
                state = await client.wait_for_orchestration_completion(iid, timeout=600)
                history = await client.get_orchestration_history(iid)
    assert state is not None
    state.raise_if_failed()
    result = state.get_output(ai.AgentResult)
    # The last execution started from the compacted conversation, at turn `last.turn`.
    last = state.get_input(ai.AgentInput)
    executions = last.turn // EVERY + 1
    print(f"answer: {result.text}")
    print(f"{result.turns} turns in {executions} executions (continue-as-new every {EVERY})")
    print(f"the last execution started at turn {last.turn} with {len(last.messages)} messages")
    per_turn = len(history) / (result.turns - last.turn)
    print(f"its history has {len(history)} events (~{per_turn:.0f} a turn); a single execution")
    print(f"would have ~{per_turn * result.turns:.0f} by now, and grow with every turn")
    assert result.stopped == "done"
    assert len(last.messages) <= 7 and len(history) < 100, "the history was not bounded"
    if not os.environ.get("GEMINI_API_KEY"):
        assert result.turns == PAGES + 1 and executions == 8


if __name__ == "__main__":
    asyncio.run(main())
