"""Shared fixtures for the agent tests: a scripted Gemini server, a store, and a runner.

Every test that takes `store` runs on a MemoryStore and on a SQLite file. The model is
google-genai's real client (`ai.Gemini`) talking to a `ScriptedGemini` on localhost whose
answers the test sets with `gemini.script = lambda call: ...`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import new_hub

import durable
from durable import ai
from durable.ai.testing import ScriptedGemini, reply

WAIT = 10.0
"""Seconds one agent run may take; each needs a small fraction of it."""


@pytest.fixture(scope="session")
def _gemini_server() -> Iterator[ScriptedGemini]:
    # One server for the session: stopping one takes about half a second.
    with ScriptedGemini() as server:
        yield server


@pytest.fixture
def gemini(_gemini_server: ScriptedGemini) -> ScriptedGemini:
    """A started scripted Gemini server with no calls yet and the default (echo) script;
    set `.script` to choose its answers.
    """
    server = _gemini_server
    server.script = lambda call: reply(f"echo: {call.prompt}")
    server.reset()
    return server


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[durable.Store]:
    """A fresh store: in memory, or a SQLite file in the test's directory."""
    if request.param == "memory":
        yield durable.MemoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        async with durable.PostgresStore(url, hub=new_hub()) as postgres:
            yield postgres
        return
    async with durable.SqliteStore(tmp_path / "durable.db") as sqlite:
        yield sqlite


@dataclass
class AgentRun:
    """A finished agent run: its instance, final state, and a client on its store."""

    instance_id: str
    state: durable.OrchestrationState
    client: durable.Client

    @property
    def result(self) -> ai.AgentResult:
        """The run's `AgentResult` (the test fails if the run did not complete)."""
        self.state.raise_if_failed()
        assert self.state.runtime_status is durable.OrchestrationStatus.COMPLETED
        return self.state.get_output(ai.AgentResult)

    async def children(self) -> list[durable.OrchestrationState]:
        """The instances started under this one (`<id>:...`), oldest first."""
        prefix = self.instance_id + ":"
        return [
            s async for s in self.client.list_orchestrations() if s.instance_id.startswith(prefix)
        ]


RunAgent = Callable[..., Awaitable[AgentRun]]


@pytest.fixture
def run_agent(store: durable.Store, gemini: ScriptedGemini) -> RunAgent:
    """`await run_agent(agent, input, *, also=(), tools=(), instance_id=None)`.

    Registers `agent` (and `also`: more agents, `tools`: extra tools) on a worker whose
    "default" model is `ai.Gemini` pointed at the `gemini` fixture, starts `agent` with
    `input`, and waits for it to finish.
    """

    async def run(
        agent: Any,
        input: Any = None,
        *,
        also: Iterable[Any] = (),
        tools: Iterable[ai.Tool] = (),
        instance_id: str | None = None,
    ) -> AgentRun:
        worker = durable.Worker(store)
        model = ai.Gemini(api_key="test-key", base_url=gemini.url)
        ai.register(worker, models={"default": model}, agents=[agent, *also], tools=tools)
        client = durable.Client(store)
        async with worker:
            iid = await client.schedule_new_orchestration(
                agent.name, input=input, instance_id=instance_id
            )
            state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None
        return AgentRun(instance_id=iid, state=state, client=client)

    return run
