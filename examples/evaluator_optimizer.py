"""Evaluator-optimizer: one model writes, another judges, the writer revises.

Use it when you can say clearly what a good answer is, and a first draft often misses it:
`ai.refine` drafts, asks the judge for a structured verdict ({"pass": bool, "feedback":
str}), and revises with the feedback until the judge passes the draft or `max_rounds`
drafts were made. It returns an `ai.Refined` (text, passed, rounds, feedback). The judge
can be a different model alias (`judge_model`), e.g. a stronger or cheaper model.

What survives a crash: every draft and every verdict is recorded in history. A worker that
dies after the second verdict resumes there: no draft is written, and no verdict given,
twice (and a replay can never draw a different verdict).

Run it: `python examples/evaluator_optimizer.py` (offline, against a scripted
Gemini-compatible server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, gemini_or_scripted, reply

TASK = (
    "Write a tagline for Acme Notes 3.0, a note-taking app. It must be at most 8 words "
    "and mention both offline sync and encryption. Answer with the tagline only."
)


def tagline(ctx: task.OrchestrationContext, brief: str):
    """Our orchestrator: refine until the judge is satisfied (at most 3 drafts)."""
    refined = yield from ai.refine(
        ctx,
        brief,
        writer="You are a copywriter. Do the task. If feedback is given, revise the draft.",
        evaluator="You are a strict editor. Check every requirement of the task, counting "
        "words exactly. Pass the draft only if it meets all of them; otherwise say what to fix.",
        max_rounds=3,
        judge_model="judge",
    )
    return refined


# -- the scripted model: the writer forgets a requirement once; the judge notices ------

drafts: list[str] = []


def script(call: Call) -> ai.ModelResponse | str:
    if call.request.response_json_schema:  # the judge
        draft = call.prompt.split("Draft:\n", 1)[1].strip().lower()
        if len(draft.split()) > 8 or "encrypt" not in draft:
            return json.dumps({"pass": False, "feedback": "It never mentions encryption."})
        return json.dumps({"pass": True, "feedback": "Meets every requirement."})
    text = (
        "Your notes, synced offline."
        if "Feedback:" not in call.prompt
        else ("Offline sync. End-to-end encryption. Your notes.")
    )
    drafts.append(text)
    return reply(text)


async def main() -> None:
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "refine.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini, "judge": gemini})
            worker.add_orchestrator(tagline)
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(tagline, input=TASK)
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
    assert state is not None
    state.raise_if_failed()
    result = state.get_output(ai.Refined)
    for n, draft in enumerate(drafts, 1):
        print(f"draft {n}: {draft}")
    print(f"final after {result.rounds} round(s), passed={result.passed}: {result.text}")
    print(f"judge: {result.feedback}")
    assert result.passed, "the judge never passed a draft"
    assert len(result.text.split()) <= 8, "the judge passed a tagline that is too long"
    if not os.environ.get("GEMINI_API_KEY"):
        assert result.rounds == 2 and len(drafts) == 2


if __name__ == "__main__":
    asyncio.run(main())
