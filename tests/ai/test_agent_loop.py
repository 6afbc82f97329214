"""The agent loop: human approval (approve, deny, per call, timeout) and compaction."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from conftest import RunAgent

import durable
from durable import ai
from durable.ai.testing import Call, ScriptedGemini, call_tools, reply
from durable.testing import TestEnvironment

SENT: list[str] = []


@ai.tool(needs_approval=True)
def send_email(to: str) -> str:
    """Send an email.

    Args:
        to: the address.
    """
    SENT.append(to)
    return f"sent to {to}"


@ai.tool
def look_up(name: str) -> str:
    """Look up an address."""
    return f"{name}@example.com"


def emailer(**options: Any) -> ai.Agent:
    return ai.Agent("emailer", tools=[send_email, look_up], **options)


def two_sends_then_report(call: Call) -> ai.ModelResponse:
    if call.function_responses:
        return reply(json.dumps([r.response for r in call.function_responses]))
    return call_tools(("send_email", {"to": "a@x"}), ("look_up", {"name": "b"}),
                      ("send_email", {"to": "c@x"}))  # fmt: skip


async def run_with_approval(
    server: ScriptedGemini, agent: ai.Agent, answer: Any
) -> tuple[durable.OrchestrationState, dict[str, Any]]:
    SENT.clear()
    store = durable.MemoryStore()
    worker = durable.Worker(store)
    ai.register(worker, models={"default": ai.Gemini(api_key="k", base_url=server.url)},
                agents=[agent])  # fmt: skip
    client = durable.Client(store)
    async with worker:
        iid = await client.schedule_new_orchestration(agent.orchestrator, input="mail them")
        status: dict[str, Any] = {}
        for _ in range(400):
            state = await client.get_orchestration_state(iid)
            assert state is not None
            status = state.get_custom_status() or {}
            if status.get("step") == "approval":
                break
            await asyncio.sleep(0.01)
        await client.raise_orchestration_event(iid, "approval", data=answer)
        final = await client.wait_for_orchestration_completion(iid, timeout=10)
    assert final is not None
    return final, status


async def test_approved_calls_run_and_the_status_shows_what_waits(gemini: ScriptedGemini) -> None:
    gemini.script = two_sends_then_report
    state, status = await run_with_approval(gemini, emailer(), {"approved": True})
    assert status["event"] == "approval"
    assert [(c["name"], c["args"]) for c in status["calls"]] == [
        ("send_email", {"to": "a@x"}), ("send_email", {"to": "c@x"})]  # fmt: skip
    assert sorted(SENT) == ["a@x", "c@x"]
    answers = json.loads(state.get_output(ai.AgentResult).text)
    assert answers == [{"result": "sent to a@x"}, {"result": "b@example.com"},
                       {"result": "sent to c@x"}]  # fmt: skip
    assert status["request_id"]  # an answer may echo it to answer this request only
    assert state.get_custom_status() == {"agent": "emailer", "turn": 2, "step": "done"}


async def test_a_denial_tells_the_model_why_and_runs_nothing(gemini: ScriptedGemini) -> None:
    gemini.script = two_sends_then_report
    state, _ = await run_with_approval(
        gemini, emailer(), {"approved": False, "reason": "not on weekends"}
    )
    assert SENT == []
    answers = json.loads(state.get_output(ai.AgentResult).text)
    assert (
        answers[0] == answers[2] == {"error": "a human did not approve this call: not on weekends"}
    )
    assert answers[1] == {"result": "b@example.com"}  # needs no approval: it ran


async def test_calls_can_be_decided_one_by_one(gemini: ScriptedGemini) -> None:
    gemini.script = two_sends_then_report
    _, status = await run_with_approval(
        gemini, emailer(), {"approved": False, "calls": {"1.2": True}}
    )
    assert [c["id"] for c in status["calls"]] == ["1.0", "1.2"]
    assert SENT == ["c@x"]


@pytest.mark.parametrize("data", ["yes please", 3, {"approve": True}, None])
async def test_unreadable_approval_data_is_a_denial(gemini: ScriptedGemini, data: Any) -> None:
    gemini.script = two_sends_then_report
    state, _ = await run_with_approval(gemini, emailer(), data)
    assert state.runtime_status is durable.OrchestrationStatus.COMPLETED
    assert SENT == []
    assert "unreadable approval" in state.get_output(ai.AgentResult).text


@pytest.mark.parametrize("approve", [False, True])
async def test_no_answer_in_time_applies_the_default(gemini: ScriptedGemini, approve: bool) -> None:
    gemini.script = two_sends_then_report
    SENT.clear()
    agent = emailer(approval_timeout=timedelta(days=2), approve_on_timeout=approve)
    env = TestEnvironment()
    ai.register(env.worker, models={"default": ai.Gemini(api_key="k", base_url=gemini.url)},
                agents=[agent])  # fmt: skip
    async with env:
        started = env.now()
        iid = await env.client.schedule_new_orchestration(agent.orchestrator, input="go")
        state = await env.client.wait_for_orchestration_completion(iid, timeout=10)
    assert state is not None
    assert env.now() - started >= timedelta(days=2)  # virtual time: the wait took no time
    text = state.get_output(ai.AgentResult).text
    if approve:
        assert sorted(SENT) == ["a@x", "c@x"]
    else:
        assert SENT == [] and "no answer within 2 days" in text


def counting_script(stop_at: int) -> Any:
    def script(call: Call) -> ai.ModelResponse:
        if not call.tool_names:
            return reply("SUMMARY of the work so far")
        done = max(
            (r.response.get("result", 0) for c in call.request.contents for p in c.parts
             if (r := p.function_response) is not None),
            default=0,
        )  # fmt: skip
        return reply("finished") if done >= stop_at else call_tools(("count", {"n": done + 1}))

    return script


@ai.tool
def count(n: int) -> int:
    """Count."""
    return n


async def test_continue_as_new_carries_a_compacted_conversation(
    run_agent: RunAgent, gemini: ScriptedGemini
) -> None:
    gemini.script = counting_script(7)
    agent = ai.Agent("counter", tools=[count], continue_as_new_every=2, keep_messages=3,
                     summarizer="default", output_key="out")  # fmt: skip
    run = await run_agent(agent, ai.AgentInput(prompt="count to 7", state={"k": 1}))
    result = run.result
    assert (result.text, result.turns, result.state) == ("finished", 8, {"k": 1, "out": "finished"})
    turns = [c for c in gemini.calls if c.tool_names]
    summaries = [c for c in gemini.calls if not c.tool_names]
    assert len(summaries) == 3  # after turns 2, 4 and 6
    for call in turns[2:]:  # every execution after the first starts compacted
        first, second = call.request.contents[:2]
        assert first.role == "user" and first.text.startswith("count to 7")
        assert "SUMMARY of the work so far" in first.text
        assert second.role == "model"  # the kept tail starts at a model turn
        assert len(call.request.contents) <= 1 + 3 + 2
    # The summarizer gets one user turn: the older messages as text, tool calls included.
    for call in summaries:
        [asked] = call.request.contents
        assert asked.role == "user" and all(p.function_call is None for p in asked.parts)
    prompt = summaries[0].prompt
    assert prompt.startswith("Summarize this conversation")
    assert "user: count to 7" in prompt and 'model called count({"n":1})' in prompt
    assert 'count answered: {"result":1}' in prompt
    assert "SUMMARY of the work so far" in summaries[1].prompt  # the last summary carries on


async def test_max_turns_counts_across_executions(
    run_agent: RunAgent, gemini: ScriptedGemini
) -> None:
    gemini.script = counting_script(100)
    agent = ai.Agent("capped", tools=[count], continue_as_new_every=2, max_turns=5)
    result = (await run_agent(agent, "count")).result
    assert (result.stopped, result.turns) == ("max_turns", 5)
    assert len(gemini.calls) == 5


async def test_without_a_summarizer_the_first_message_stays(
    run_agent: RunAgent, gemini: ScriptedGemini
) -> None:
    gemini.script = counting_script(5)
    agent = ai.Agent("plain", tools=[count], continue_as_new_every=2, keep_messages=2)
    assert (await run_agent(agent, "count to 5")).result.text == "finished"
    last = gemini.calls[-1].request.contents
    assert last[0].text == "count to 5" and last[1].role == "model"
    assert all(c.tool_names for c in gemini.calls)  # no summary calls


async def test_the_agent_logs_each_step_once_though_a_new_worker_replays_it(
    gemini: ScriptedGemini, caplog: pytest.LogCaptureFixture
) -> None:
    # The first worker stops while the agent waits for approval; the second replays the
    # whole history before it acts on the answer. The replay-safe logger keeps the
    # replayed steps silent: each line comes once.
    gemini.script = two_sends_then_report
    SENT.clear()
    store = durable.MemoryStore()
    agent = emailer()
    model = ai.Gemini(api_key="k", base_url=gemini.url)
    client = durable.Client(store)
    caplog.set_level(logging.DEBUG, logger="durable.ai.agent")

    def worker() -> durable.Worker:
        w = durable.Worker(store)
        ai.register(w, models={"default": model}, agents=[agent])
        return w

    async with worker():
        iid = await client.schedule_new_orchestration(agent.orchestrator, input="mail them")
        for _ in range(400):
            state = await client.get_orchestration_state(iid)
            if state is not None and (state.get_custom_status() or {}).get("step") == "approval":
                break
            await asyncio.sleep(0.01)
    async with worker():
        await client.raise_orchestration_event(iid, "approval", data=True)
        final = await client.wait_for_orchestration_completion(iid, timeout=10)
    assert final is not None and final.runtime_status is durable.OrchestrationStatus.COMPLETED
    lines = [r.getMessage() for r in caplog.records if r.name == "durable.ai.agent"]
    assert lines == [
        f"agent emailer ({iid}): turn 1: the model asked for send_email, look_up, send_email",
        f"agent emailer ({iid}): waiting for approval of send_email, send_email (event 'approval')",
        f"agent emailer ({iid}): turn 2: the model asked for nothing more",
        f"agent emailer ({iid}) stopped (done) after 2 turns",
    ]
