"""durable.ai exports exactly its intended names, and works with any `Model`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Generator
from typing import Any

import pytest

import durable
from durable import ai

EXPECTED = {
    "Agent", "AgentInput", "AgentResult", "Approval", "AgentTool", "agent_tool",
    "SequentialAgent", "ParallelAgent", "LoopAgent",
    "chain", "Step", "Gate", "GateFailedError", "classify", "route", "sections", "vote", "Vote",
    "plan_and_run", "refine", "Refined", "wait_for_approval",
    "Tool", "tool", "ToolArgumentsError",
    "register", "model_limit",
    "Model", "Gemini", "DEFAULT_GEMINI_MODEL", "TextSink", "generate", "request",
    "model_activity", "model_activities", "activity_name", "DEFAULT_MODEL_RETRY",
    "ModelError", "ModelUnavailableError", "ModelRequestError",
    "Content", "Part", "FunctionCall", "FunctionResponse", "FunctionDeclaration",
    "ModelRequest", "ModelResponse", "Usage", "user", "model",
}  # fmt: skip


def test_exported_names_are_exactly_the_intended_ones() -> None:
    assert set(ai.__all__) == EXPECTED
    for name in ai.__all__:
        assert hasattr(ai, name), name


def test_errors_are_durable_errors_named_publicly() -> None:
    for error in (ai.ModelError, ai.ModelUnavailableError, ai.ModelRequestError,
                  ai.ToolArgumentsError, ai.GateFailedError):  # fmt: skip
        assert issubclass(error, durable.DurableError)
        assert error.__module__ == "durable.ai"


def test_durable_ai_imports_without_google_genai_and_says_what_to_install() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['google.genai'] = None\n"
        "from durable import ai\n"
        "try:\n"
        "    asyncio.run(ai.Gemini(api_key='k').generate(ai.request('hi')))\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'durable-sdk[genai]'" in out.stdout


class Canned:
    """A model of our own: no HTTP at all, answers from a list."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.requests: list[ai.ModelRequest] = []

    async def generate(
        self, request: ai.ModelRequest, on_text: ai.TextSink | None = None
    ) -> ai.ModelResponse:
        self.requests.append(request)
        text = self.answers[len(self.requests) - 1]
        if on_text is not None:
            for word in text.split(" "):
                await on_text(word)
        return ai.ModelResponse(content=ai.model(text))


async def test_any_model_stands_in_for_gemini() -> None:
    canned = Canned(["first answer", "second answer"])
    assert isinstance(canned, ai.Model)

    def two_calls(ctx: durable.OrchestrationContext, _: None) -> Generator[Any, Any, list[str]]:
        a = yield ai.generate(ctx, "one", model="local")
        b = yield ai.generate(ctx, [ai.user("one"), a.content, ai.user("two")], model="local")
        return [a.text, b.text]

    store = durable.MemoryStore()
    worker = durable.Worker(store, orchestrators=[two_calls])
    ai.register(worker, models={"local": canned})
    async with worker:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(two_calls)
        state = await client.wait_for_orchestration_completion(iid, timeout=10)
    assert state is not None
    assert state.get_output() == ["first answer", "second answer"]
    assert [len(r.contents) for r in canned.requests] == [1, 3]
    assert all(r.model == "local" for r in canned.requests)


def test_a_model_must_have_generate() -> None:
    with pytest.raises(TypeError, match="generate"):
        ai.model_activity("x", object())  # type: ignore[arg-type]
