"""A worker process running an agent against a scripted Gemini server, for the crash tests.

`python tests/crash/agent_worker.py DB URL [--limit-requests N --window S]` runs until it
is killed (SIGKILL) or terminated (SIGTERM: a clean stop).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta
from typing import Any

import durable
from durable import ai


@ai.tool
def step(n: int) -> dict[str, Any]:
    """Take step number n.

    Args:
        n: the step's number.
    """
    return {"n": n}


def ask(ctx: durable.OrchestrationContext, prompt: str) -> Any:
    response = yield ai.generate(ctx, prompt)
    return response.text


AGENT = ai.Agent(
    "stepper",
    instructions="Call `step` with n = 1, 2, 3, ... until the steps are done.",
    tools=[step],
    continue_as_new_every=4,
    keep_messages=4,
    max_turns=100,
)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("url")
    parser.add_argument("--limit-requests", type=int, default=0)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    store = durable.SqliteStore(args.db)
    worker = durable.Worker(store, orchestrators=[ask], lease_seconds=1.5, poll_interval=0.1)
    limits = []
    if args.limit_requests:
        limits.append(
            ai.model_limit(
                requests_per_minute=args.limit_requests, window=timedelta(seconds=args.window)
            )
        )
    ai.register(
        worker,
        models={"default": ai.Gemini(api_key="test-key", base_url=args.url)},
        agents=[AGENT],
        limits=limits,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with store, worker:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
