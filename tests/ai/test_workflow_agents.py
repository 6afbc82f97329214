"""Workflow agents: SequentialAgent, ParallelAgent and LoopAgent running their agents as
child orchestrations that share state through output keys.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import pytest

import durable
from durable import ai
from durable.ai.testing import Call, call_tools, reply

S = durable.OrchestrationStatus


def by_system(answers: dict[str, Any]) -> Any:
    """A script answering by the system instruction's first word: `answers[word](call)`."""

    def script(call: Call) -> Any:
        return answers[call.system.split(" ", 1)[0]](call)

    return script


# -- SequentialAgent -------------------------------------------------------------------


def writer_and_reviewer() -> ai.SequentialAgent:
    writer = ai.Agent(
        "writer", instructions="Write about {topic} in a {tone} tone.", output_key="draft"
    )
    reviewer = ai.Agent("reviewer", instructions="Review this draft: {draft}", output_key="review")
    return ai.SequentialAgent("pipeline", [writer, reviewer])


async def test_sequential_passes_state_by_output_key(run_agent, gemini) -> None:
    gemini.script = by_system(
        {
            "Write": lambda call: reply(f"draft on {call.prompt}"),
            "Review": lambda call: reply("looks good"),
        }
    )
    start = ai.AgentInput(prompt="otters", state={"topic": "otters", "tone": "dry"})
    run = await run_agent(writer_and_reviewer(), start)
    result = run.result
    assert [c.system for c in gemini.calls] == [
        "Write about otters in a dry tone.",
        "Review this draft: draft on otters",
    ]
    assert [c.prompt for c in gemini.calls] == ["otters", "otters"]  # each sees the request
    assert result.agent == "pipeline"
    assert result.text == "looks good"
    assert result.turns == 2 and result.stopped == "done"
    assert result.state == {
        "topic": "otters",
        "tone": "dry",
        "draft": "draft on otters",
        "review": "looks good",
    }


async def test_sequential_children_are_completed_child_orchestrations(run_agent, gemini) -> None:
    gemini.script = lambda call: reply("fine")
    run = await run_agent(writer_and_reviewer(), "otters", instance_id="seq-1")
    assert run.result.text == "fine"
    children = await run.children()
    assert [c.name for c in children] == ["writer", "reviewer"]
    for child in children:
        assert re.fullmatch(r"seq-1:[0-9a-f]+", child.instance_id)
        assert child.runtime_status is S.COMPLETED
        assert child.get_output(ai.AgentResult).text == "fine"
    assert children[0].get_output(ai.AgentResult).state["draft"] == "fine"


async def test_sequential_stops_when_an_agent_escalates(run_agent, gemini) -> None:
    gate = ai.Agent("gate", instructions="Gate: stop if unsafe.", can_escalate=True)
    after = ai.Agent("after", instructions="After the gate.")
    gemini.script = by_system({"Gate:": lambda call: call_tools(("escalate", {}), text="unsafe")})
    run = await run_agent(ai.SequentialAgent("guarded", [gate, after]), "do it")
    assert run.result.stopped == "escalated" and run.result.escalated
    assert run.result.text == "unsafe"
    assert [c.system for c in gemini.calls] == ["Gate: stop if unsafe."]  # `after` never ran


# -- ParallelAgent ---------------------------------------------------------------------


async def test_parallel_runs_at_once_and_merges_output_keys(run_agent, gemini) -> None:
    both_asked = threading.Barrier(2, timeout=3)  # breaks unless both calls are in flight

    def answer(word: str) -> Any:
        def script(call: Call) -> Any:
            both_asked.wait()
            return reply(f"{word} of {call.prompt}")

        return script

    gemini.script = by_system({"Pros": answer("pros"), "Cons": answer("cons")})
    pros = ai.Agent("pros", instructions="Pros of it.", output_key="pros")
    cons = ai.Agent("cons", instructions="Cons of it.", output_key="cons")
    start = ai.AgentInput(prompt="tea", state={"asked": "tea"})
    run = await run_agent(ai.ParallelAgent("weigh", [pros, cons]), start, instance_id="par-1")
    result = run.result
    assert result.agent == "weigh" and result.turns == 2
    assert result.state == {"asked": "tea", "pros": "pros of tea", "cons": "cons of tea"}
    assert result.text == "[pros] pros of tea\n\n[cons] cons of tea"  # in the agents' order
    children = await run.children()
    assert sorted(c.name for c in children) == ["cons", "pros"]
    assert all(c.runtime_status is S.COMPLETED for c in children)


async def test_parallel_inside_sequential_feeds_a_summarizer(run_agent, gemini) -> None:
    pros = ai.Agent("pros", instructions="Pros of it.", output_key="pros")
    cons = ai.Agent("cons", instructions="Cons of it.", output_key="cons")
    judge = ai.Agent("judge", instructions="Judge: {pros} versus {cons}", output_key="verdict")
    flow = ai.SequentialAgent("decide", [ai.ParallelAgent("weigh", [pros, cons]), judge])
    gemini.script = by_system(
        {
            "Pros": lambda call: reply("cheap"),
            "Cons": lambda call: reply("slow"),
            "Judge:": lambda call: reply("buy it"),
        }
    )
    run = await run_agent(flow, "a bike", instance_id="dec-1")
    assert run.result.state == {"pros": "cheap", "cons": "slow", "verdict": "buy it"}
    assert "Judge: cheap versus slow" in [c.system for c in gemini.calls]
    grandchildren = [c for c in await run.children() if c.instance_id.count(":") == 2]
    assert sorted(c.name for c in grandchildren) == ["cons", "pros"]
    assert all(c.instance_id.startswith("dec-1:") for c in grandchildren)


# -- LoopAgent -------------------------------------------------------------------------


def critic_and_fixer() -> tuple[ai.Agent, ai.Agent]:
    critic = ai.Agent(
        "critic", instructions="Critic: judge {draft}", output_key="verdict", can_escalate=True
    )
    fixer = ai.Agent("fixer", instructions="Fixer: address {verdict}", output_key="draft")
    return critic, fixer


async def test_loop_stops_when_an_agent_escalates(run_agent, gemini) -> None:
    seen: Counter[str] = Counter()

    def critic(call: Call) -> Any:
        seen["critic"] += 1
        if seen["critic"] == 3:
            return call_tools(("escalate", {}), text="good now")
        return reply(f"issue {seen['critic']}")

    def fixer(call: Call) -> Any:
        seen["fixer"] += 1
        return reply(f"draft {seen['fixer']}")

    gemini.script = by_system({"Critic:": critic, "Fixer:": fixer})
    loop = ai.LoopAgent("polish", list(critic_and_fixer()), max_iterations=10)
    run = await run_agent(loop, ai.AgentInput(prompt="poem", state={"draft": "draft 0"}))
    result = run.result
    assert seen == {"critic": 3, "fixer": 2}
    assert "escalate" in gemini.calls[0].tool_names
    assert [c.system for c in gemini.calls] == [
        "Critic: judge draft 0",
        "Fixer: address issue 1",
        "Critic: judge draft 1",
        "Fixer: address issue 2",
        "Critic: judge draft 2",
    ]
    assert result.agent == "polish" and result.turns == 5
    assert result.stopped == "done"
    assert result.text == "good now"
    assert result.state == {"draft": "draft 2", "verdict": "good now"}


async def test_loop_stops_at_max_iterations(run_agent, gemini) -> None:
    gemini.script = lambda call: reply("not yet")
    loop = ai.LoopAgent("polish", list(critic_and_fixer()), max_iterations=2)
    run = await run_agent(loop, "poem", instance_id="loop-1")
    result = run.result
    assert result.stopped == "max_turns"
    assert result.turns == 4 and len(gemini.calls) == 4
    assert result.text == "not yet"
    children = await run.children()
    assert [c.name for c in children] == ["critic", "fixer", "critic", "fixer"]
    assert all(c.runtime_status is S.COMPLETED for c in children)


def test_workflow_agents_check_their_arguments() -> None:
    critic, fixer = critic_and_fixer()
    with pytest.raises(ValueError, match="at least one agent"):
        ai.SequentialAgent("empty", [])
    with pytest.raises(ValueError, match="max_iterations"):
        ai.LoopAgent("never", [critic], max_iterations=0)
    flow = ai.LoopAgent("polish", [critic, fixer])
    assert [f.__name__ for f in flow.orchestrators()] == ["polish", "critic", "fixer"]
    assert flow.activities() == []  # no tools: the model activity is the worker's
