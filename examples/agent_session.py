"""Agent session: a chat whose conversation lives in a durable entity.

The second way to make an agent durable: keep the framework you already have, with its
own tool loop, and put each session in an entity. Here the framework is google-genai
itself: a chat given Python functions as tools calls them by itself until the model
answers (automatic function calling). The `ChatSession` entity's `message`
operation appends the user's message, runs that loop over the whole conversation, stores
the reply and returns it.

What the entity gives: a session handles one message at a time, in arrival order, even
when many clients and orchestrations write to it; the conversation and the reply are
committed together, so each message is answered exactly once in the stored
conversation, even when the worker dies in the middle of an answer (the answer is then
asked for again, from the conversation as it was before that message). The operation
runs in a worker thread and its lease is renewed while the model thinks.

Run it: `python examples/agent_session.py` (offline, against a scripted Gemini-compatible
server), or with GEMINI_API_KEY set to use the real Gemini API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import durable
from durable import task
from durable.ai.testing import Call, ScriptedGemini, call_tools, reply
from durable.entities import DurableEntity, EntityInstanceId

MODEL = "gemini-2.5-flash"
INSTRUCTIONS = "You are a travel assistant. Use get_exchange_rate for any currency question."

_genai_client: Any = None  # google.genai.Client, set by `use_gemini`


def use_gemini(api_key: str, base_url: str | None = None) -> None:
    """Point the sessions at Gemini (or, with `base_url`, at a compatible server)."""
    from google import genai  # noqa: PLC0415 - the `genai` extra
    from google.genai import types  # noqa: PLC0415

    global _genai_client  # noqa: PLW0603 - one model client per process
    options = types.HttpOptions(base_url=base_url) if base_url else None
    _genai_client = genai.Client(api_key=api_key, http_options=options)


def get_exchange_rate(currency: str) -> float:
    """How many units of `currency` one euro buys (USD, GBP or JPY)."""
    return {"USD": 1.08, "GBP": 0.85, "JPY": 162.0}.get(currency.upper(), 1.0)


class ChatSession(DurableEntity):
    """One user's conversation: a list of {"role", "text"} turns."""

    def message(self, text: str) -> str:
        from google.genai import types  # noqa: PLC0415

        turns: list[dict[str, str]] = self.get_state(list, [])
        chat = _genai_client.chats.create(
            model=MODEL,
            config=types.GenerateContentConfig(
                system_instruction=INSTRUCTIONS, tools=[get_exchange_rate]
            ),
            history=[
                types.Content(role=t["role"], parts=[types.Part(text=t["text"])]) for t in turns
            ],
        )
        answer = chat.send_message(text).text or ""
        self.set_state([*turns, {"role": "user", "text": text}, {"role": "model", "text": answer}])
        return answer

    def transcript(self) -> list[dict[str, str]]:
        return self.get_state(list, [])


def conversation(ctx: task.OrchestrationContext, plan: dict[str, Any]) -> Any:
    """Send a session its messages one after another; the replies, in order."""
    session = EntityInstanceId("ChatSession", plan["session"])
    replies = []
    for text in plan["messages"]:
        replies.append((yield ctx.call_entity(session, "message", text)))
    return replies


def new_worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(store, orchestrators=[conversation], entities=[ChatSession])


# -- the scripted model: currency questions go through the tool -------------------------


def script(call: Call) -> Any:
    if call.function_responses:
        rate = call.function_responses[0].response
        return reply(f"One euro buys {rate.get('result', rate)} there.")
    if "euro" in call.prompt.lower() or "dollar" in call.prompt.lower():
        return call_tools(("get_exchange_rate", {"currency": "USD"}))
    return reply(f"Noted: {call.prompt}")


MESSAGES = ["I am going to New York in May.", "How many dollars is a euro?", "Thanks!"]


async def main() -> None:
    key = os.environ.get("GEMINI_API_KEY")
    server = None if key else ScriptedGemini(script).start()
    try:
        if server is None:
            use_gemini(key or "")
        else:
            use_gemini("offline", server.url)
        with tempfile.TemporaryDirectory() as tmp:
            async with durable.SqliteStore(Path(tmp) / "sessions.db") as store:
                client = durable.Client(store)
                async with new_worker(store):
                    plan = {"session": "ada", "messages": MESSAGES}
                    iid = await client.schedule_new_orchestration(conversation, input=plan)
                    state = await client.wait_for_orchestration_completion(iid, timeout=300)
                    assert state is not None
                    state.raise_if_failed()
                    meta = await client.get_entity(EntityInstanceId("ChatSession", "ada"))
    finally:
        if server is not None:
            server.stop()
    assert meta is not None
    turns = meta.get_state(list)
    for turn in turns:
        print(f"{turn['role']:>5}: {turn['text']}")
    assert [t["text"] for t in turns if t["role"] == "user"] == MESSAGES
    assert [t["text"] for t in turns if t["role"] == "model"] == state.get_output()
    if server is not None:
        assert "1.08" in turns[3]["text"], turns[3]


async def serve(db: Path, base_url: str, ready: Path) -> None:
    """A worker alone, until SIGTERM (what the crash test runs and kills)."""
    use_gemini("offline", base_url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with durable.SqliteStore(db) as store, new_worker(store):
        ready.write_text(str(os.getpid()))
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        asyncio.run(serve(args.worker, args.base_url, args.ready))
        sys.exit(0)
    asyncio.run(main())
