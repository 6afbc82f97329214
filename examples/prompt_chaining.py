"""Prompt chaining: a fixed sequence of model calls, each working on the previous output.

Use it when a task splits cleanly into steps (outline -> post -> headline) and you can
check the output between steps in code. `ai.chain` runs the steps; a step's `gate` is a
plain function that returns None when the output is fine, or a complaint. On a complaint
the step is asked again with "Fix this: <complaint>" appended (`retries` times), and the
chain fails with `ai.GateFailedError` if it never passes. Gates run inside the
orchestrator, so they must be deterministic: no I/O, no clock, no printing.

What survives a crash: every model call is an activity whose answer is recorded in the
orchestration's history. A worker that dies after the outline was accepted resumes at the
post; the outline is not asked for (or paid for) again.

Run it: `python examples/prompt_chaining.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, gemini_or_scripted, reply


def outline_complaint(text: str) -> str | None:
    """The gate: None if the outline has 3 to 5 bullet points, else what is wrong."""
    bullets = [line for line in text.splitlines() if line.strip().startswith(("-", "*"))]
    if not 3 <= len(bullets) <= 5:
        return f"the outline has {len(bullets)} bullet points; it must have 3 to 5"
    return None


STEPS = [
    ai.Step(
        "Write an outline for a short blog post about {input}. Answer with 3 to 5 bullet "
        "points, one per line, each starting with '- '. No other text.",
        gate=outline_complaint,
        retries=2,
    ),
    ai.Step("Write a blog post of about 120 words that follows this outline:\n\n{input}"),
    ai.Step("Write one catchy headline for this blog post. Only the headline:\n\n{input}"),
]


def blog_post(ctx: task.OrchestrationContext, topic: str):
    """Our orchestrator: outline (gated) -> post -> headline."""
    outline, post, headline = yield from ai.chain(ctx, STEPS, topic)
    return {"outline": outline, "post": post, "headline": headline.strip()}


# -- the scripted model: answers as a (slightly over-eager) model would ---------------

asked: list[str] = []  # what the scripted server was asked, for the printout


def script(call: Call) -> ai.ModelResponse:
    if call.prompt.startswith("Write an outline"):
        if "Fix this" not in call.prompt:
            asked.append("outline (7 bullets: too many)")
            return reply("\n".join(f"- point {n}" for n in range(1, 8)))
        asked.append("outline again, with the gate's complaint (4 bullets)")
        return reply(
            "- Why agents crash mid-task\n- Replay from history\n"
            "- Never pay twice for a model call\n- Getting started"
        )
    if call.prompt.startswith("Write a blog post"):
        asked.append("post")
        return reply("Agents crash. Durable execution records every step... (120 words)")
    asked.append("headline")
    return reply("Crash-Proof Agents: Replay, Don't Repay")


async def main() -> None:
    topic = "durable execution for AI agents"
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "chain.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini})
            worker.add_orchestrator(blog_post)
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(blog_post, input=topic)
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
    assert state is not None
    state.raise_if_failed()
    result = state.get_output()
    print(f"headline: {result['headline']}")
    print(f"outline:\n{result['outline']}")
    print(f"post: {result['post'][:200]}")
    for n, what in enumerate(asked, 1):
        print(f"  model call {n}: {what}")
    assert outline_complaint(result["outline"]) is None, "the gate let a bad outline through"
    assert result["post"] and result["headline"]
    if not os.environ.get("GEMINI_API_KEY"):
        assert len(asked) == 4, asked  # the outline was asked twice


if __name__ == "__main__":
    asyncio.run(main())
