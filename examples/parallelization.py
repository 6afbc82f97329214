"""Parallelization: sectioning (independent parts at once) and voting (several models).

Use sectioning when a task splits into parts that do not depend on each other: `ai.sections`
sends every prompt at once and returns the answers in order. Use voting when one answer
matters enough to ask several times, or several models: `ai.vote` sends the same prompt to
each model alias and picks the most common (normalized) answer.

Here a launch announcement is written in three parallel sections, then three different
models vote on whether it needs a legal review. The models are registered as aliases
("default", "judge-a", "judge-b"); offline each alias gets its own scripted server.

What survives a crash: each call is an activity. If the worker dies after two of the three
sections came back, the new worker waits only for the third; the same holds for the votes.

Run it: `python examples/parallelization.py` (offline, against scripted Gemini-compatible
servers), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, gemini_or_scripted, reply

PRODUCT = "Acme Notes 3.0, a note-taking app that now syncs offline and encrypts every note"


def launch(ctx: task.OrchestrationContext, product: str):
    """Our orchestrator: write three sections at once, then let three models vote."""
    headline, features, faq = yield from ai.sections(
        ctx,
        [
            f"Write a one-line launch headline for {product}.",
            f"Write a three-sentence summary of the new features of {product}.",
            f"Write two short FAQ entries (question and answer) about {product}.",
        ],
        system="You write clear, factual product launch copy. No superlatives.",
    )
    announcement = f"{headline}\n\n{features}\n\n{faq}"
    verdict = yield from ai.vote(
        ctx,
        "Does this announcement make claims that need legal review (guarantees, comparisons "
        "with competitors, security promises)? Answer with one word: yes or no.\n\n" + announcement,
        models=["default", "judge-a", "judge-b"],
        normalize=lambda text: text.strip().rstrip(".!").lower(),
    )
    return {"announcement": announcement, "legal_review": verdict.winner, "votes": verdict.answers}


# -- the scripted models: each server knows which model id it was called with ---------

answered: Counter[str] = Counter()


def script(call: Call) -> ai.ModelResponse:
    answered[call.model] += 1
    if call.prompt.startswith("Does this announcement"):
        # The lite model is the cautious one: "encrypts every note" sounds like a promise.
        return reply("Yes." if call.model.endswith("lite") else "No")
    if "headline" in call.prompt:
        return reply("Acme Notes 3.0: your notes, offline and encrypted")
    if "summary" in call.prompt:
        return reply("Notes now sync when you are back online. Every note is encrypted...")
    return reply("Q: Does it work offline? A: Yes. Q: Is it encrypted? A: Yes, end to end.")


async def main() -> None:
    with (
        gemini_or_scripted(script, model="gemini-2.5-flash") as flash,
        gemini_or_scripted(script, model="gemini-2.5-flash-lite") as lite,
        gemini_or_scripted(script, model="gemini-2.5-pro") as pro,
        tempfile.TemporaryDirectory() as tmp,
    ):
        async with durable.SqliteStore(Path(tmp) / "parallel.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": flash, "judge-a": lite, "judge-b": pro})
            worker.add_orchestrator(launch)
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(launch, input=PRODUCT)
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
    assert state is not None
    state.raise_if_failed()
    result = state.get_output()
    print(result["announcement"], "\n")
    print(f"votes {result['votes']} -> legal review needed: {result['legal_review']}")
    if answered:
        print(f"the scripted models answered: {dict(answered)}")
    assert len(result["announcement"].split("\n\n")) >= 3
    assert len(result["votes"]) == 3
    if not os.environ.get("GEMINI_API_KEY"):
        assert result["legal_review"] == "no" and result["votes"].count("no") == 2


if __name__ == "__main__":
    asyncio.run(main())
