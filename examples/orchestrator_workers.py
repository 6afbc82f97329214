"""Orchestrator-workers: a planner splits the task, worker agents do the parts, one call
combines them.

Use it when you cannot know the subtasks in advance (they depend on the input), but each
one, once named, can be done on its own. `ai.plan_and_run` asks the model for a list of
subtasks (structured output), then runs one child orchestration of the worker `ai.Agent`
per subtask, all at once, and returns (subtask, AgentResult) pairs in the planner's order.
A final `ai.generate` synthesizes the answers.

What survives a crash: the plan is recorded, so a restarted worker never re-plans into a
different set of subtasks. Each worker agent is a child orchestration with its own history:
finished ones are not run again, and unfinished ones resume at their last recorded step.

Run it: `python examples/orchestrator_workers.py` (offline, against a scripted
Gemini-compatible server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply

PRICES = {  # what our (made-up) pricing database knows, in EUR per month
    "hetzner": {"managed_postgres": None, "vm_8gb": 15.9, "regions": ["DE", "FI"]},
    "scaleway": {"managed_postgres": 29.0, "vm_8gb": 35.0, "regions": ["FR", "NL", "PL"]},
    "ovhcloud": {"managed_postgres": 42.0, "vm_8gb": 22.0, "regions": ["FR", "DE", "PL", "UK"]},
}


@ai.tool
def lookup_pricing(provider: str) -> dict[str, object]:
    """Current prices and regions of a cloud provider.

    Args:
        provider: the provider's name, e.g. "scaleway".
    """
    found = PRICES.get(provider.lower().split()[0])
    return {"provider": provider, **found} if found else {"error": f"unknown: {provider}"}


analyst = ai.Agent(
    "analyst",
    instructions="You research one cloud provider for hosting Postgres. Use lookup_pricing, "
    "then answer in two sentences with concrete prices and regions.",
    tools=[lookup_pricing],
)


def due_diligence(ctx: task.OrchestrationContext, question: str):
    """Our orchestrator: plan, run one analyst per subtask in parallel, then synthesize."""
    done = yield from ai.plan_and_run(
        ctx,
        question,
        analyst,
        instructions="Split the task into one subtask per cloud provider to research.",
        max_subtasks=5,
    )
    findings = "\n".join(f"- {subtask}: {result.text}" for subtask, result in done)
    summary = yield ai.generate(
        ctx,
        f"Task: {question}\n\nFindings:\n{findings}\n\nWrite a short recommendation.",
        system="You are a pragmatic CTO. Recommend one provider and say why in 3 sentences.",
    )
    return {"subtasks": [s for s, _ in done], "recommendation": summary.text}


# -- the scripted model ----------------------------------------------------------------

answered: Counter[str] = Counter()


def script(call: Call) -> ai.ModelResponse | str:
    if call.request.response_json_schema:  # the planner
        answered["planner"] += 1
        subtasks = [f"Research {p} for an 8 GB Postgres in the EU" for p in PRICES]
        return json.dumps({"subtasks": subtasks})
    if "lookup_pricing" in call.tool_names:  # an analyst
        answered["analyst"] += 1
        if not call.function_responses:
            provider = call.prompt.split()[1]
            return call_tools(("lookup_pricing", {"provider": provider}))
        facts = call.function_responses[0].response
        price, vm = facts["managed_postgres"], facts["vm_8gb"]
        offer = f"managed Postgres {price} EUR" if price else f"no managed Postgres, VM {vm} EUR"
        return reply(f"{facts['provider']}: {offer}; regions {', '.join(facts['regions'])}.")
    answered["synthesis"] += 1
    return reply("Pick Scaleway: managed Postgres at 29 EUR in three EU regions...")


async def main() -> None:
    question = "Which EU cloud should host our 8 GB Postgres: Hetzner, Scaleway or OVHcloud?"
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "workers.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini}, agents=[analyst])
            worker.add_orchestrator(due_diligence)
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(due_diligence, input=question)
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
                children = [s async for s in client.list_orchestrations(name="analyst")]
    assert state is not None
    state.raise_if_failed()
    result = state.get_output()
    for child in children:
        output = child.get_output(ai.AgentResult)
        print(f"child {child.instance_id} ({child.runtime_status.value}): {output.text}")
    print(f"\nrecommendation: {result['recommendation']}")
    if answered:
        print(f"the scripted model answered: {dict(answered)}")
    assert len(children) == len(result["subtasks"]) >= 2
    assert all(c.runtime_status is durable.OrchestrationStatus.COMPLETED for c in children)
    assert result["recommendation"]


if __name__ == "__main__":
    asyncio.run(main())
