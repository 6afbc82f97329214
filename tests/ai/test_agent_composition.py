"""Agents made of agents: agents as tools, LLM-driven transfer, what a worker registers,
the turn cap, and instruction templates.
"""

from __future__ import annotations

import re
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


def responses(call: Call) -> list[tuple[str, dict[str, Any]]]:
    return [(r.name, r.response) for r in call.function_responses]


@ai.tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


@ai.tool
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


# -- agents as tools -------------------------------------------------------------------


async def test_agent_tool_runs_the_agent_as_a_child(run_agent, gemini) -> None:
    researcher = ai.Agent(
        "researcher", instructions="Research: be brief.", description="Finds facts."
    )
    boss = ai.Agent("boss", instructions="Boss: delegate.", tools=[ai.agent_tool(researcher)])

    def boss_turn(call: Call) -> Any:
        if call.function_responses:
            return reply(f"final: {call.function_responses[0].response['result']}")
        return call_tools(("researcher", {"request": "otter diets"}))

    gemini.script = by_system(
        {"Boss:": boss_turn, "Research:": lambda call: reply(f"fish, for {call.prompt}")}
    )
    run = await run_agent(boss, "what do otters eat?", instance_id="boss-1")
    result = run.result
    assert result.agent == "boss" and result.text == "final: fish, for otter diets"
    assert result.turns == 2  # the boss's own turns
    (offered,) = gemini.calls[0].request.tools
    assert offered.name == "researcher" and offered.description == "Finds facts."
    assert offered.parameters["required"] == ["request"]
    sub_call = next(c for c in gemini.calls if c.system.startswith("Research:"))
    assert [c.text for c in sub_call.request.contents] == ["otter diets"]  # only the request
    assert responses(gemini.calls[-1]) == [("researcher", {"result": "fish, for otter diets"})]
    (child,) = await run.children()
    assert child.name == "researcher" and child.runtime_status is S.COMPLETED
    assert re.fullmatch(r"boss-1:[0-9a-f]+", child.instance_id)
    assert child.get_output(ai.AgentResult).text == "fish, for otter diets"


async def test_agent_tool_with_tools_of_its_own(run_agent, gemini) -> None:
    researcher = ai.Agent("researcher", instructions="Research: use lookup.", tools=[lookup])
    boss = ai.Agent(
        "boss",
        instructions="Boss: delegate.",
        tools=[ai.agent_tool(researcher, description="Ask research.")],
    )

    def research_turn(call: Call) -> Any:
        if call.function_responses:
            return reply(f"found {call.function_responses[0].response['result']}")
        return call_tools(("lookup", {"topic": call.prompt}))

    def boss_turn(call: Call) -> Any:
        if call.function_responses:
            return reply(call.function_responses[0].response["result"])
        return call_tools(("researcher", {"request": "tides"}))

    gemini.script = by_system({"Boss:": boss_turn, "Research:": research_turn})
    run = await run_agent(boss, "explain tides")
    assert gemini.calls[0].request.tools[0].description == "Ask research."
    assert run.result.text == "found notes on tides"


# -- transfer to a sub-agent -----------------------------------------------------------


def front_desk() -> tuple[ai.Agent, ai.Agent]:
    billing = ai.Agent(
        "billing",
        instructions="Billing: settle it.",
        description="Handles invoices.",
        tools=[refund],
    )
    front = ai.Agent("front", instructions="Front: triage.", sub_agents=[billing])
    return front, billing


async def test_transfer_hands_the_conversation_to_the_sub_agent(run_agent, gemini) -> None:
    front, _ = front_desk()

    def billing_turn(call: Call) -> Any:
        if call.function_responses:
            return reply(f"done: {call.function_responses[0].response['result']}")
        return call_tools(("refund", {"order": "A7"}))

    gemini.script = by_system(
        {
            "Front:": lambda call: call_tools(("transfer_to_billing", {})),
            "Billing:": billing_turn,
        }
    )
    run = await run_agent(front, "my invoice A7 is wrong", instance_id="desk-1")
    result = run.result
    assert result.agent == "billing"
    assert result.text == "done: refunded A7"
    assert result.turns == 3  # one of the front desk's, two of billing's
    first = gemini.calls[0]
    assert first.tool_names == ["transfer_to_billing"]
    assert first.request.tools[0].description == (
        "Hand the conversation over to the billing agent. Handles invoices."
    )
    billing_first = gemini.calls[1]
    assert billing_first.system == "Billing: settle it."
    assert billing_first.tool_names == ["refund"]
    assert billing_first.prompt == "my invoice A7 is wrong"
    (child,) = await run.children()
    assert child.name == "billing" and child.runtime_status is S.COMPLETED
    assert child.instance_id.startswith("desk-1:")


async def test_after_a_transfer_the_parent_output_key_holds_the_answer(run_agent, gemini) -> None:
    # `output_key` stores "the final text", and after a transfer the sub-agent's answer
    # is the final answer: the next agent of a sequence should see it.
    billing = ai.Agent("billing", instructions="Billing: settle it.")
    front = ai.Agent(
        "front", instructions="Front: triage.", sub_agents=[billing], output_key="answer"
    )
    follow_up = ai.Agent("follow_up", instructions="Follow: after {answer}")
    gemini.script = by_system(
        {
            "Front:": lambda call: call_tools(("transfer_to_billing", {})),
            "Billing:": lambda call: reply("refund sent"),
            "Follow:": lambda call: reply("anything else?"),
        }
    )
    run = await run_agent(ai.SequentialAgent("desk", [front, follow_up]), "invoice wrong")
    assert gemini.calls[-1].system == "Follow: after refund sent"
    assert run.result.state["answer"] == "refund sent"


async def test_without_a_transfer_the_parent_answers(run_agent, gemini) -> None:
    front, _ = front_desk()
    gemini.script = lambda call: reply("hello!")
    run = await run_agent(front, "hi", instance_id="desk-2")
    assert run.result.agent == "front" and run.result.text == "hello!"
    assert await run.children() == []


# -- what a worker registers -----------------------------------------------------------


def test_orchestrators_and_activities_include_nested_agents() -> None:
    front, billing = front_desk()
    researcher = ai.Agent("researcher", tools=[lookup, refund])
    boss = ai.Agent("boss", tools=[lookup, ai.agent_tool(researcher)], sub_agents=[front])
    assert [f.__name__ for f in boss.orchestrators()] == ["boss", "front", "billing", "researcher"]
    names = sorted(f.__name__ for f in boss.activities())
    assert names == ["durable.ai.tool.lookup", "durable.ai.tool.refund"]  # each once
    assert lookup.activity in boss.activities()
    assert billing.orchestrators() == [billing.orchestrator]
    assert billing.activities() == [refund.activity]


def test_register_refuses_two_agents_of_one_name() -> None:
    front, _ = front_desk()
    other_billing = ai.Agent("billing")  # same name, another agent
    with pytest.raises(ValueError, match="two different functions are named 'billing'"):
        ai.register(durable.Worker(durable.MemoryStore()), agents=[front, other_billing])


def test_agent_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="two tools are named 'lookup'"):
        ai.Agent("dup", tools=[lookup, lookup])
    with pytest.raises(ValueError, match="max_turns"):
        ai.Agent("none", max_turns=0)


# -- the turn cap ----------------------------------------------------------------------


@ai.tool
def tick() -> str:
    """Take one more step."""
    return "tock"


async def test_max_turns_caps_the_loop(run_agent, gemini) -> None:
    gemini.script = lambda call: call_tools(("tick", {}), text=f"step {len(call.request.contents)}")
    run = await run_agent(ai.Agent("busy", tools=[tick], max_turns=3), "go")
    result = run.result
    assert result.stopped == "max_turns" and not result.escalated
    assert result.turns == 3 and len(gemini.calls) == 3
    assert result.text == "step 5"  # the last text the model gave
    assert responses(gemini.calls[-1]) == [("tick", {"result": "tock"})]


async def test_an_answer_on_the_last_allowed_turn_is_done(run_agent, gemini) -> None:
    gemini.script = lambda call: reply("quick")
    run = await run_agent(ai.Agent("brief", max_turns=1), "go")
    assert run.result.stopped == "done" and run.result.turns == 1


# -- instructions ----------------------------------------------------------------------


async def test_instruction_placeholders_come_from_state(run_agent, gemini) -> None:
    agent = ai.Agent(
        "greeter",
        instructions="Greet {name} in {language}; mention {missing} as is.",
        output_key="greeting",
    )
    gemini.script = lambda call: reply("Hei Ada")
    start = ai.AgentInput(prompt="hello", state={"name": "Ada", "language": "Norwegian"})
    run = await run_agent(agent, start)
    assert gemini.calls[0].system == "Greet Ada in Norwegian; mention {missing} as is."
    assert run.result.state == {"name": "Ada", "language": "Norwegian", "greeting": "Hei Ada"}


async def test_instructions_without_state_keep_their_placeholders(run_agent, gemini) -> None:
    gemini.script = lambda call: reply("ok")
    await run_agent(ai.Agent("plain", instructions="Use {tool_name} for {task}."), "hi")
    assert gemini.calls[0].system == "Use {tool_name} for {task}."
