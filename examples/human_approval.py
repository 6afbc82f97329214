"""Human approval: an orchestration drafts, waits for a person, then publishes or discards.

Use it whenever a person must sign off before a side effect (publishing, paying, emailing).
`ai.wait_for_approval` publishes the request as the custom status, then races an external
event against a durable timer. The event's data is `{"approved": bool, "reason": str,
"request_id": str}` (or a bare true/false); echoing the status's `request_id` ties the
answer to this request. On timeout the decision is `approve_on_timeout` (default: deny).
It returns an `ai.Approval`.

What survives a crash: the draft is recorded, and the wait is durable: it holds no thread
or memory, and may last days across worker restarts and deploys. An approval sent while no
worker runs is stored and delivered later. The timer fires on time even if the worker that
created it is gone.

This program runs three posts: one approved, one denied with a reason, one never answered
(it is discarded when the 2-second timeout fires).

Run it: `python examples/human_approval.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import durable
from durable import ai, task
from durable.ai.testing import Call, gemini_or_scripted, reply

published: list[str] = []


def publish(ctx: task.ActivityContext, text: str) -> str:
    """The side effect a human must approve (a CMS or social-media API in real life)."""
    published.append(text)
    return f"post-{len(published)}"


def social_post(ctx: task.OrchestrationContext, topic: str):
    """Our orchestrator: draft -> wait for approval (2 s here, days in real life) -> act."""
    draft = yield ai.generate(
        ctx,
        f"Write a LinkedIn post of at most 50 words announcing: {topic}",
        system="You write friendly, factual posts for a software company. No hashtags.",
    )
    decision = yield from ai.wait_for_approval(
        ctx, timeout=timedelta(seconds=2), request={"topic": topic, "draft": draft.text}
    )
    if not decision.approved:
        return {"topic": topic, "published": False, "reason": decision.reason}
    post_id = yield ctx.call_activity(publish, input=draft.text)
    return {"topic": topic, "published": True, "post_id": post_id}


def script(call: Call) -> ai.ModelResponse:
    topic = call.prompt.split("announcing: ", 1)[1]
    return reply(f"We're happy to share: {topic}. Thanks to everyone who made it happen!")


# What the "human" answers for each topic (None: never answers).
ANSWERS = {
    "our 3.0 release is out": {"approved": True},
    "we are 20% cheaper than our competitor": {"approved": False, "reason": "legal: no claims"},
    "the team offsite photos": None,
}


async def wait_for_request(client: durable.Client, iid: str) -> dict:
    """Poll until the orchestration asks for approval; returns the waiting status."""
    while True:
        state = await client.get_orchestration_state(iid)
        assert state is not None and not state.runtime_status.is_terminal, "it ended early"
        status = state.get_custom_status() or {}
        if status.get("step") == "approval":
            return status
        await asyncio.sleep(0.05)


async def human(client: durable.Client, topic: str, answer: dict | None):
    """Start one post and play the human who reviews it."""
    iid = await client.schedule_new_orchestration(social_post, input=topic)
    status = await wait_for_request(client, iid)
    print(f"approval requested: {status['request']['draft']!r}")
    if answer is not None:
        answer = {**answer, "request_id": status["request_id"]}
        await client.raise_orchestration_event(iid, "approval", data=answer)
    return await client.wait_for_orchestration_completion(iid, timeout=300)


async def main() -> None:
    with gemini_or_scripted(script) as gemini, tempfile.TemporaryDirectory() as tmp:
        async with durable.SqliteStore(Path(tmp) / "approval.db") as store:
            worker = durable.Worker(store)
            ai.register(worker, models={"default": gemini})
            worker.add_orchestrator(social_post)
            worker.add_activity(publish)
            client = durable.Client(store)
            async with worker:
                states = await asyncio.gather(
                    *(human(client, topic, answer) for topic, answer in ANSWERS.items())
                )
    results = {}
    for state in states:
        assert state is not None
        state.raise_if_failed()
        results[state.get_input()] = state.get_output()
    print()
    for topic, result in results.items():
        if result["published"]:
            print(f"{topic!r}: published as {result['post_id']}")
        else:
            print(f"{topic!r}: discarded ({result['reason']})")
    approved, denied, ignored = (results[topic] for topic in ANSWERS)
    assert approved["published"] and len(published) == 1
    assert not denied["published"] and denied["reason"] == "legal: no claims"
    assert not ignored["published"] and "no answer within 0:00:02" in ignored["reason"]


if __name__ == "__main__":
    asyncio.run(main())
