"""Routing: a classifier sends each request to the agent specialised for it.

Use it when requests fall into distinct kinds that are better served by different
instructions, tools or models (billing questions, technical problems, everything else).
`ai.route` asks the model for one label (structured output constrained to the labels),
then runs the chosen `ai.Agent` as a child orchestration and returns its `AgentResult`.

What survives a crash: the classification is recorded in history, so a restarted worker
never re-classifies (and never switches routes half-way); the chosen agent's finished
model and tool calls are recorded in its own history and are not made again.

Run it: `python examples/routing.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply


@ai.tool
def find_invoice(customer_email: str) -> dict[str, object]:
    """Look up the customer's latest invoice.

    Args:
        customer_email: the email address the customer signed up with.
    """
    return {"invoice": "INV-1042", "amount_eur": 49.0, "status": "charged twice"}


billing = ai.Agent(
    "billing",
    instructions="You handle billing questions. Look up the invoice before you answer. "
    "Be brief and say what happens next.",
    tools=[find_invoice],
)
technical = ai.Agent(
    "technical",
    instructions="You are a support engineer. Give numbered troubleshooting steps.",
)
general = ai.Agent("general", instructions="You answer general questions about our product.")
ROUTES = {"billing": billing, "technical": technical, "general": general}


def support(ctx: task.OrchestrationContext, message: str):
    """Our orchestrator: classify the message, then let the right agent answer it."""
    result = yield from ai.route(
        ctx,
        message,
        ROUTES,
        instructions="Route the customer's message: billing (charges, invoices, refunds), "
        "technical (errors, crashes, setup), general (anything else).",
    )
    return result


# -- the scripted model ----------------------------------------------------------------

answered: Counter[str] = Counter()


def script(call: Call) -> ai.ModelResponse | str:
    if call.request.response_json_schema:  # the classifier
        answered["classifier"] += 1
        text = call.prompt.lower()
        label = "billing" if "charged" in text else "technical" if "error" in text else "general"
        return f'{{"label": "{label}"}}'
    if "find_invoice" in call.tool_names:  # the billing agent
        answered["billing"] += 1
        if not call.function_responses:
            return call_tools(("find_invoice", {"customer_email": "ana@example.com"}))
        return reply(
            "Invoice INV-1042 was charged twice. I've flagged the duplicate 49 EUR "
            "for a refund; you'll get a confirmation email within a day."
        )
    if "troubleshooting" in call.system:  # the technical agent
        answered["technical"] += 1
        return reply("1. Update to 2.4.1. 2. Delete the cache folder. 3. Restart the app.")
    answered["general"] += 1
    return reply("Yes: the Team plan includes up to 10 seats.")


MESSAGES = [
    "Hi, I'm ana@example.com and I was charged twice this month!",
    "The desktop app shows 'error 0x80' and closes right after start.",
    "Does the Team plan include more than one seat?",
]


async def main() -> None:
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "routing.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini}, agents=ROUTES.values())
            worker.add_orchestrator(support)
            client = durable.Client(store)
            async with worker:
                ids = [await client.schedule_new_orchestration(support, input=m) for m in MESSAGES]
                states = [
                    await client.wait_for_orchestration_completion(i, timeout=300) for i in ids
                ]
    routed = []
    for message, state in zip(MESSAGES, states, strict=True):
        assert state is not None
        state.raise_if_failed()
        result = state.get_output(ai.AgentResult)
        routed.append(result.agent)
        print(f"{message}\n  -> {result.agent} ({result.turns} turns): {result.text}\n")
    if answered:
        print(f"the scripted model answered: {dict(answered)}")
    assert routed == ["billing", "technical", "general"], routed


if __name__ == "__main__":
    asyncio.run(main())
