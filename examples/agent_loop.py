"""Agent loop: a model calls tools until it can answer; risky tools wait for a human.

Use an `ai.Agent` when the steps are not known in advance and the model should decide
which tools to call. Each turn is a model call (an activity), then the tools it asked for
run as parallel activities. `@ai.tool` turns a plain function (sync or async) into a tool;
its declaration comes from the signature and docstring. A tool with `needs_approval=True`
pauses the agent: the custom status shows the pending calls, and the agent waits for an
"approval" event (or a timeout, a durable timer). With `stream="answer"` the model's text
is written to an orchestration stream that clients read while the agent runs.

What survives a crash: every model turn and tool result is in history. The refund below
is asked for, approved and made exactly once, even if workers die in between; the wait
for approval can last days and survives restarts. A retried tool gets the same
`ctx.orchestration_id`/`ctx.task_id`, which make an idempotency key for the payment API.

Run it: `python examples/agent_loop.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import durable
from durable import ai
from durable.ai.testing import Call, call_tools, gemini_or_scripted, reply

refunds: list[str] = []  # what the payment API was asked to do


@ai.tool
def get_order(order_id: str) -> dict[str, object]:
    """Look up an order by its id."""
    return {"order_id": order_id, "item": "headphones", "total_eur": 89.0, "tracking": "TR-77"}


@ai.tool
async def track_parcel(tracking_number: str) -> dict[str, object]:
    """Ask the carrier where a parcel is."""
    await asyncio.sleep(0.05)  # an HTTP call in real life
    return {"tracking_number": tracking_number, "status": "lost in transit"}


@ai.tool(needs_approval=True)
def issue_refund(
    ctx: durable.ActivityContext, order_id: str, amount_eur: float
) -> dict[str, float]:
    """Refund an order. A human approves every refund."""
    key = f"{ctx.orchestration_id}/{ctx.task_id}"  # the payment API's idempotency key
    refunds.append(f"{order_id}: {amount_eur} EUR (idempotency key {key})")
    return {"refunded_eur": amount_eur}


support = ai.Agent(
    "support",
    instructions="You are a shop's support agent. Look up the order, track its parcel, and "
    "if the parcel is lost, refund the order's total with issue_refund. Then tell the "
    "customer in two sentences what you did.",
    tools=[get_order, track_parcel, issue_refund],
    stream="answer",
)


# -- the scripted model: one tool per turn, then the answer ---------------------------


def script(call: Call) -> ai.ModelResponse:
    done = {r.name: r.response for r in call.function_responses}
    if not done:
        return call_tools(("get_order", {"order_id": "A-1001"}), text="Let me check. ")
    if "get_order" in done:
        return call_tools(("track_parcel", {"tracking_number": done["get_order"]["tracking"]}))
    if "track_parcel" in done:
        return call_tools(("issue_refund", {"order_id": "A-1001", "amount_eur": 89.0}))
    return reply("Your parcel was lost, so I refunded the full 89 EUR. Sorry about that!")


async def show_stream(client: durable.Client, iid: str) -> None:
    """Print the model's text as it arrives, one line per model call."""
    last_task = None
    async for chunk in client.read_stream(iid, "answer"):
        if chunk.task_id != last_task:
            print(f"\n  [model, step {chunk.task_id}] ", end="")
            last_task = chunk.task_id
        print(chunk.data, end="", flush=True)
    print()


async def wait_for_step(client: durable.Client, iid: str, step: str) -> dict:
    """Poll the agent's custom status until it shows `step` (a UI would do the same)."""
    while True:
        state = await client.get_orchestration_state(iid)
        assert state is not None and not state.runtime_status.is_terminal, "the agent ended"
        status = state.get_custom_status() or {}
        if status.get("step") == step:
            return status
        await asyncio.sleep(0.05)


async def main() -> None:
    message = "My order A-1001 never arrived. Can you help?"
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "agent.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini}, agents=[support])
            client = durable.Client(store)
            async with worker:
                iid = await client.schedule_new_orchestration(support.orchestrator, input=message)
                reader = asyncio.create_task(show_stream(client, iid))
                status = await wait_for_step(client, iid, "approval")
                print(f"\n  [approval needed] {status.get('calls')}")
                # Echoing request_id makes this answer count for this request only.
                answer = {"approved": True, "request_id": status["request_id"]}
                await client.raise_orchestration_event(iid, "approval", data=answer)
                state = await client.wait_for_orchestration_completion(iid, timeout=300)
                await reader
    assert state is not None
    state.raise_if_failed()
    result = state.get_output(ai.AgentResult)
    print(f"\nanswer after {result.turns} turns: {result.text}")
    print(f"refunds made: {refunds}")
    assert result.stopped == "done" and len(refunds) == 1, refunds
    if not os.environ.get("GEMINI_API_KEY"):
        assert result.turns == 4


if __name__ == "__main__":
    asyncio.run(main())
