"""The Gemini model on google-genai's real client, against a scripted server on localhost."""

from __future__ import annotations

import socket
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

import durable
from durable import ai
from durable.ai.testing import Call, Fail, ScriptedGemini, call_tools, reply

FAST_RETRY = durable.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=20),
    max_number_of_attempts=6,
    backoff_coefficient=1.5,
    non_retryable_error_types=[ai.ModelRequestError],
)


def ask(ctx: durable.OrchestrationContext, prompt: str) -> Generator[Any, Any, str]:
    response = yield ai.generate(ctx, prompt, retry_policy=FAST_RETRY)
    return response.text


async def run_ask(
    store: durable.Store, gemini: ai.Model, prompt: str = "hello"
) -> durable.OrchestrationState:
    worker = durable.Worker(store, orchestrators=[ask])
    ai.register(worker, models={"default": gemini})
    async with worker:
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(ask, input=prompt)
        state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None
    return state


async def test_a_burst_of_429s_is_retried_and_then_succeeds(tmp_path: Path) -> None:
    with ScriptedGemini(lambda c: reply("fine")) as server:
        server.fail_next(3, 429, "Resource has been exhausted (e.g. check quota).")
        async with durable.SqliteStore(tmp_path / "d.db") as store:
            state = await run_ask(store, ai.Gemini(api_key="k", base_url=server.url))
    assert state.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert state.serialized_output == '"fine"'
    assert [c.status for c in server.calls] == [429, 429, 429, 200]


@pytest.mark.parametrize("code", [408, 500, 503])
async def test_timeouts_and_server_errors_are_retried(code: int) -> None:
    with ScriptedGemini(lambda c: reply("ok")) as server:
        server.fail_next(1, code)
        state = await run_ask(durable.MemoryStore(), ai.Gemini(api_key="k", base_url=server.url))
    assert state.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert [c.status for c in server.calls] == [code, 200]


async def test_a_400_fails_at_once_with_the_apis_message() -> None:
    script = lambda c: Fail(400, "Invalid JSON payload received. Unknown name 'x'.")  # noqa: E731
    with ScriptedGemini(script) as server:
        state = await run_ask(durable.MemoryStore(), ai.Gemini(api_key="k", base_url=server.url))
    assert state.runtime_status is durable.OrchestrationStatus.FAILED
    assert len(server.calls) == 1  # not retried
    failure = state.failure_details
    assert failure is not None
    assert "Invalid JSON payload received. Unknown name 'x'." in failure.message
    assert "400" in failure.message
    assert failure.inner is not None
    assert failure.inner.is_caused_by(ai.ModelRequestError)


async def test_no_connection_is_retried_as_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gemini = ai.Gemini(api_key="k", base_url=f"http://127.0.0.1:{port}", timeout=2)
    request = ai.request("hi")
    with pytest.raises(ai.ModelUnavailableError, match="could not be reached"):
        await gemini.generate(request)


async def test_a_missing_key_is_a_request_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ai.ModelRequestError, match="GEMINI_API_KEY"):
        await ai.Gemini().generate(ai.request("hi"))


async def test_the_request_reaches_gemini_in_its_wire_format() -> None:
    seen: list[Call] = []

    def script(call: Call) -> ai.ModelResponse:
        seen.append(call)
        return call_tools(("get_weather", {"city": "Oslo"}), text="Let me check.")

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [ai.FunctionDeclaration(name="get_weather", description="Weather.", parameters=schema)]
    with ScriptedGemini(script) as server:
        gemini = ai.Gemini("gemini-test", api_key="k", base_url=server.url)
        request = ai.request("weather in Oslo?", system="Be brief.", tools=tools, temperature=0.1)
        response = await gemini.generate(request)
    call = seen[0]
    assert call.model == "gemini-test"
    assert call.system == "Be brief."
    assert call.tool_names == ["get_weather"]
    assert call.request.tools[0].parameters["required"] == ["city"]
    assert call.request.temperature == pytest.approx(0.1)
    assert call.body["contents"] == [{"parts": [{"text": "weather in Oslo?"}], "role": "user"}]
    assert response.text == "Let me check."
    assert response.function_calls == [ai.FunctionCall(name="get_weather", args={"city": "Oslo"})]
    assert response.usage.total_tokens > 0


async def test_thought_signatures_go_back_to_the_model_unchanged() -> None:
    signature = b"\x00opaque\xffsignature"
    answer = ai.ModelResponse(
        content=ai.Content(
            role="model",
            parts=(ai.Part(text="thinking...", thought=True), ai.Part(
                function_call=ai.FunctionCall(name="f", args={}), thought_signature=signature)),
        )
    )  # fmt: skip
    with ScriptedGemini(lambda c: answer if len(c.request.contents) == 1 else "done") as server:
        gemini = ai.Gemini(api_key="k", base_url=server.url)
        first = await gemini.generate(ai.request("go"))
        assert first.text == ""  # thoughts are not the answer
        assert first.content.parts[1].thought_signature == signature
        reply_to_call = ai.Content(role="user", parts=(ai.Part(
            function_response=ai.FunctionResponse(name="f", response={"ok": True})),))  # fmt: skip
        await gemini.generate(ai.request([ai.user("go"), first.content, reply_to_call]))
    sent = server.calls[1].request.contents[1]
    assert sent.parts[1].thought_signature == signature
    assert sent.parts[1].function_call == ai.FunctionCall(name="f", args={})


async def test_a_streamed_answer_is_whole_in_history_and_in_pieces_on_the_stream() -> None:
    text = "Durable agents survive crashes without paying twice for a model call."

    def streaming(ctx: durable.OrchestrationContext, prompt: str) -> Generator[Any, Any, str]:
        response = yield ai.generate(ctx, prompt, stream="answer")
        return response.text

    with ScriptedGemini(lambda c: reply(text), stream_chunk=10) as server:
        store = durable.MemoryStore()
        worker = durable.Worker(store, orchestrators=[streaming])
        ai.register(worker, models={"default": ai.Gemini(api_key="k", base_url=server.url)})
        async with worker:
            client = durable.Client(store)
            iid = await client.schedule_new_orchestration(streaming, input="go")
            chunks = [c async for c in client.read_stream(iid, "answer")]
            state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.serialized_output == msgspec.json.encode(text).decode()
    assert [c.data for c in chunks] == [text[i : i + 10] for i in range(0, len(text), 10)]
    assert server.calls[0].stream
    history = await client.get_orchestration_history(iid)
    completed = [e for e in history if type(e).__name__ == "TaskCompleted"]
    assert len(completed) == 1 and text in (completed[0].result or "")


async def test_no_key_appears_anywhere_in_the_stored_database(tmp_path: Path) -> None:
    key = "AIzaSy-test-secret-key-0123456789"

    @ai.tool
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    agent = ai.Agent("keeper", tools=[echo], stream="answer")

    def script(call: Call) -> ai.ModelResponse:
        assert call.api_key == key  # the key is used on the wire...
        if call.function_responses:
            return reply("done")
        return call_tools(("echo", {"text": "hi"}))

    path = tmp_path / "d.db"
    with ScriptedGemini(script) as server:
        async with durable.SqliteStore(path) as store:
            worker = durable.Worker(store)
            ai.register(
                worker, models={"default": ai.Gemini(api_key=key, base_url=server.url)},
                agents=[agent],
            )  # fmt: skip
            async with worker:
                client = durable.Client(store)
                iid = await client.schedule_new_orchestration(agent.orchestrator, input="go")
                state = await client.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None and state.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert len(server.calls) == 2
    # ...and never stored: not in the database, its WAL, or any other file beside it.
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "d.db" in str(p)]
    assert files
    for f in files:
        data = f.read_bytes()
        assert key.encode() not in data, f.name
        assert b"AIzaSy" not in data, f.name
