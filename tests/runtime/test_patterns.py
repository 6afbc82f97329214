"""The agent patterns, written as a durabletask-python user writes them.

The "LLM" activities are scripted, so every run is deterministic: what a model says
depends only on its input. Counters record how often each activity really ran.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from runtime_helpers import WAIT, Calls

import durable
from durable import task
from durable.core.events import ContinuedAsNew, ExecutionStarted, TaskScheduled

S = durable.OrchestrationStatus
_CALLS = Calls()
ran = _CALLS.counts


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    _CALLS.clear()


def count(name: str) -> None:
    _CALLS.add(name)


async def run(
    orchestrators: list[Any], activities: list[Any], orchestrator: Any, inputs: list[Any]
) -> list[Any]:
    """Run one instance per input on a fresh store; return their outputs."""
    store = durable.MemoryStore()
    async with durable.Worker(store, orchestrators=orchestrators, activities=activities):
        client = durable.Client(store)
        ids = [await client.schedule_new_orchestration(orchestrator, input=i) for i in inputs]
        outputs = []
        for iid in ids:
            st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert st is not None
            assert st.runtime_status is S.COMPLETED, st.failure_details
            outputs.append(st.get_output())
    return outputs


# -- prompt chaining: outline -> gate -> draft -> gate -> polish -----------------------


def generate_outline(ctx: task.ActivityContext, topic: str) -> list[str]:
    count("generate_outline")
    if topic == "vague":
        return ["intro"]
    return [f"{topic}: intro", f"{topic}: body", f"{topic}: conclusion"]


def write_draft(ctx: task.ActivityContext, outline: list[str]) -> str:
    count("write_draft")
    return " / ".join(s.split(": ")[-1] for s in outline)


def polish_draft(ctx: task.ActivityContext, draft: str) -> str:
    count("polish_draft")
    return draft.upper() + "."


def prompt_chaining(ctx: task.OrchestrationContext, topic: str):
    outline = yield ctx.call_activity(generate_outline, input=topic)
    if len(outline) < 3:  # gate 1: a usable outline has at least three sections
        return {"ok": False, "failed_gate": "outline", "outline": outline}
    draft = yield ctx.call_activity(write_draft, input=outline)
    if draft.count(" / ") != len(outline) - 1:  # gate 2: every section made it in
        return {"ok": False, "failed_gate": "draft"}
    final = yield ctx.call_activity(polish_draft, input=draft)
    return {"ok": True, "text": final}


async def test_prompt_chaining_passes_both_gates() -> None:
    acts = [generate_outline, write_draft, polish_draft]
    [out] = await run([prompt_chaining], acts, prompt_chaining, ["durability"])
    assert out == {"ok": True, "text": "INTRO / BODY / CONCLUSION."}
    assert ran == Counter({"generate_outline": 1, "write_draft": 1, "polish_draft": 1})


async def test_prompt_chaining_stops_at_a_failed_gate() -> None:
    acts = [generate_outline, write_draft, polish_draft]
    [out] = await run([prompt_chaining], acts, prompt_chaining, ["vague"])
    assert out == {"ok": False, "failed_gate": "outline", "outline": ["intro"]}
    assert ran == Counter({"generate_outline": 1})  # no later step ran


# -- routing ---------------------------------------------------------------------------


def classify(ctx: task.ActivityContext, query: str) -> str:
    count("classify")
    if "refund" in query or "invoice" in query:
        return "billing"
    if "error" in query or "crash" in query:
        return "technical"
    return "general"


async def handle_billing(ctx: task.ActivityContext, query: str) -> str:
    count("handle_billing")
    return f"billing team: {query}"


def handle_technical(ctx: task.ActivityContext, query: str) -> str:
    count("handle_technical")
    return f"engineer: {query}"


def handle_general(ctx: task.ActivityContext, query: str) -> str:
    count("handle_general")
    return f"assistant: {query}"


HANDLERS = {"billing": handle_billing, "technical": handle_technical, "general": handle_general}


def route_query(ctx: task.OrchestrationContext, query: str):
    route = yield ctx.call_activity(classify, input=query)
    answer = yield ctx.call_activity(HANDLERS[route], input=query)
    return {"route": route, "answer": answer}


async def test_routing_sends_each_query_to_one_handler() -> None:
    queries = ["I want a refund", "the app shows an error", "hello there", "invoice #4"]
    outs = await run([route_query], [classify, *HANDLERS.values()], route_query, queries)
    assert outs == [
        {"route": "billing", "answer": "billing team: I want a refund"},
        {"route": "technical", "answer": "engineer: the app shows an error"},
        {"route": "general", "answer": "assistant: hello there"},
        {"route": "billing", "answer": "billing team: invoice #4"},
    ]
    assert ran == Counter(
        {"classify": 4, "handle_billing": 2, "handle_technical": 1, "handle_general": 1}
    )


# -- parallelization: sectioning and voting --------------------------------------------


async def check_safety(ctx: task.ActivityContext, text: str) -> dict[str, Any]:
    count("check_safety")
    await asyncio.sleep(0.06)  # the slowest finishes last, yet its result comes first
    return {"check": "safety", "ok": "attack" not in text}


async def check_grammar(ctx: task.ActivityContext, text: str) -> dict[str, Any]:
    count("check_grammar")
    await asyncio.sleep(0.03)
    return {"check": "grammar", "ok": text[:1].isupper()}


def check_facts(ctx: task.ActivityContext, text: str) -> dict[str, Any]:
    count("check_facts")
    return {"check": "facts", "ok": "flat earth" not in text}


def review(ctx: task.OrchestrationContext, text: str):
    sections = [check_safety, check_grammar, check_facts]
    results = yield task.when_all([ctx.call_activity(s, input=text) for s in sections])
    return {"checks": results, "approved": all(r["ok"] for r in results)}


async def test_sectioning_runs_checks_in_parallel_and_keeps_input_order() -> None:
    acts = [check_safety, check_grammar, check_facts]
    began = time.monotonic()
    good, bad = await run([review], acts, review, ["Durable and true.", "the flat earth"])
    elapsed = time.monotonic() - began
    assert [c["check"] for c in good["checks"]] == ["safety", "grammar", "facts"]
    assert good["approved"] is True
    assert bad["approved"] is False
    assert [c["ok"] for c in bad["checks"]] == [True, False, False]
    assert ran == Counter({"check_safety": 2, "check_grammar": 2, "check_facts": 2})
    assert elapsed < 2  # parallel, not one instance after another with polling gaps


VOTES = {0: "yes", 1: "no", 2: "yes", 3: "no", 4: "yes"}


def cast_vote(ctx: task.ActivityContext, ballot: dict[str, Any]) -> str:
    count("cast_vote")
    vote = VOTES[ballot["voter"]]
    return vote if ballot["question"] == "ship it?" else "abstain"


def majority_vote(ctx: task.OrchestrationContext, question: str):
    ballots = [{"voter": i, "question": question} for i in range(5)]
    votes = yield task.when_all([ctx.call_activity(cast_vote, input=b) for b in ballots])
    tally = Counter(votes)
    winner, n = tally.most_common(1)[0]
    return {"votes": votes, "winner": winner if n > len(votes) // 2 else None}


async def test_voting_takes_the_majority_of_parallel_calls() -> None:
    [out] = await run([majority_vote], [cast_vote], majority_vote, ["ship it?"])
    assert out == {"votes": ["yes", "no", "yes", "no", "yes"], "winner": "yes"}
    assert ran["cast_vote"] == 5


# -- orchestrator-workers --------------------------------------------------------------


def plan_subtasks(ctx: task.ActivityContext, goal: str) -> list[str]:
    count("plan_subtasks")
    return [f"{goal}: research", f"{goal}: design", f"{goal}: build"]


def do_subtask(ctx: task.ActivityContext, subtask: str) -> str:
    count("do_subtask")
    return f"done({subtask.split(': ')[1]})"


def synthesize(ctx: task.ActivityContext, parts: list[str]) -> str:
    count("synthesize")
    return " + ".join(parts)


def subtask_worker(ctx: task.OrchestrationContext, subtask: str):
    result = yield ctx.call_activity(do_subtask, input=subtask)
    return {"subtask": subtask, "result": result, "parent": ctx.parent_instance_id}


def orchestrator_workers(ctx: task.OrchestrationContext, goal: str):
    subtasks = yield ctx.call_activity(plan_subtasks, input=goal)
    results = yield task.when_all(
        [ctx.call_sub_orchestrator(subtask_worker, input=s) for s in subtasks]
    )
    assert all(r["parent"] == ctx.instance_id for r in results)
    summary = yield ctx.call_activity(synthesize, input=[r["result"] for r in results])
    return {"subtasks": len(results), "summary": summary}


async def test_orchestrator_workers_fans_out_to_child_orchestrations() -> None:
    store = durable.MemoryStore()
    acts = [plan_subtasks, do_subtask, synthesize]
    async with durable.Worker(
        store, orchestrators=[orchestrator_workers, subtask_worker], activities=acts
    ):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(orchestrator_workers, input="app")
        st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        children = [s async for s in client.list_orchestrations(name="subtask_worker")]
    assert st is not None and st.runtime_status is S.COMPLETED, st and st.failure_details
    assert st.get_output() == {
        "subtasks": 3,
        "summary": "done(research) + done(design) + done(build)",
    }
    assert len(children) == 3
    assert all(c.parent_instance_id == iid for c in children)
    assert all(c.runtime_status is S.COMPLETED for c in children)
    assert ran == Counter({"plan_subtasks": 1, "do_subtask": 3, "synthesize": 1})


# -- evaluator-optimizer ---------------------------------------------------------------


def generate_answer(ctx: task.ActivityContext, req: dict[str, Any]) -> str:
    count("generate_answer")
    return f"{req['task']} v{req['round']}" + (" (revised)" if req["feedback"] else "")


def evaluate_answer(ctx: task.ActivityContext, req: dict[str, Any]) -> dict[str, Any]:
    count("evaluate_answer")
    version = int(req["answer"].split(" v")[1].split(" ")[0])
    if version >= req["good_from"]:
        return {"accepted": True, "feedback": ""}
    return {"accepted": False, "feedback": f"v{version} is too short"}


def evaluator_optimizer(ctx: task.OrchestrationContext, job: dict[str, Any]):
    feedback = ""
    answer = ""
    for round_no in range(1, job["max_rounds"] + 1):
        answer = yield ctx.call_activity(
            generate_answer, input={"task": job["task"], "round": round_no, "feedback": feedback}
        )
        verdict = yield ctx.call_activity(
            evaluate_answer, input={"answer": answer, "good_from": job["good_from"]}
        )
        if verdict["accepted"]:
            return {"answer": answer, "accepted": True, "rounds": round_no}
        feedback = verdict["feedback"]
    return {"answer": answer, "accepted": False, "rounds": job["max_rounds"]}


async def test_evaluator_optimizer_loops_until_accepted() -> None:
    acts = [generate_answer, evaluate_answer]
    [out] = await run(
        [evaluator_optimizer],
        acts,
        evaluator_optimizer,
        [{"task": "poem", "good_from": 3, "max_rounds": 5}],
    )
    assert out == {"answer": "poem v3 (revised)", "accepted": True, "rounds": 3}
    assert ran == Counter({"generate_answer": 3, "evaluate_answer": 3})


async def test_evaluator_optimizer_stops_after_max_rounds() -> None:
    acts = [generate_answer, evaluate_answer]
    [out] = await run(
        [evaluator_optimizer],
        acts,
        evaluator_optimizer,
        [{"task": "essay", "good_from": 99, "max_rounds": 4}],
    )
    assert out == {"answer": "essay v4 (revised)", "accepted": False, "rounds": 4}
    assert ran == Counter({"generate_answer": 4, "evaluate_answer": 4})


# -- a tool-calling agent loop ---------------------------------------------------------
#
# The scripted model asks for tools on turns 0..21 and answers on turn 22: two parallel
# tools per turn (search, calculator), except turn 15, which asks to send an email, a
# tool that needs a human's approval. Every 10 turns the loop continues as new.

LAST_TURN = 22
EMAIL_TURN = 15


def call_model(ctx: task.ActivityContext, state: dict[str, Any]) -> dict[str, Any]:
    count("call_model")
    turn = state["turn"]
    if turn == LAST_TURN:
        numbers = [r for r in state["results"] if isinstance(r, int)]
        email = next(r for r in state["results"] if isinstance(r, str) and "email" in r)
        return {"final": f"total={sum(numbers)}; {email}"}
    if turn == EMAIL_TURN:
        return {
            "tool_calls": [
                {"tool": "send_email", "args": {"to": "boss@example.com"}},
                {"tool": "search", "args": {"q": "status"}},
            ]
        }
    return {
        "tool_calls": [
            {"tool": "search", "args": {"q": f"topic {turn}"}},
            {"tool": "calculator", "args": {"a": turn, "b": 1}},
        ]
    }


async def search(ctx: task.ActivityContext, args: dict[str, Any]) -> str:
    count("search")
    return f"found: {args['q']}"


def calculator(ctx: task.ActivityContext, args: dict[str, Any]) -> int:
    count("calculator")
    return args["a"] + args["b"]


def send_email(ctx: task.ActivityContext, args: dict[str, Any]) -> str:
    count("send_email")
    return f"email sent to {args['to']}"


TOOLS = {"search": search, "calculator": calculator, "send_email": send_email}
NEEDS_APPROVAL = {"send_email"}


def agent_loop(ctx: task.OrchestrationContext, state: dict[str, Any]):
    for _ in range(10):
        reply = yield ctx.call_activity(call_model, input=state)
        if "final" in reply:
            ctx.set_custom_status({"turn": state["turn"], "phase": "done"})
            return {"answer": reply["final"], "turns": state["turn"] + 1}
        calls = reply["tool_calls"]
        approved = True
        if any(c["tool"] in NEEDS_APPROVAL for c in calls):
            ctx.set_custom_status({"turn": state["turn"], "phase": "awaiting_approval"})
            approval = ctx.wait_for_external_event("approval")
            timeout = ctx.create_timer(timedelta(seconds=state["approval_timeout"]))
            winner = yield task.when_any([approval, timeout])
            approved = winner is approval and approval.get_result()["approved"]
        ctx.set_custom_status({"turn": state["turn"], "phase": "tools"})
        runs = [
            ctx.call_activity(TOOLS[c["tool"]], input=c["args"])
            for c in calls
            if approved or c["tool"] not in NEEDS_APPROVAL
        ]
        results = yield task.when_all(runs)
        if not approved:
            results.append("email denied: no approval")
        state["results"].extend(results)
        state["turn"] += 1
    ctx.continue_as_new(state, save_events=True)


def new_agent(approval_timeout: float) -> dict[str, Any]:
    return {"turn": 0, "results": [], "approval_timeout": approval_timeout}


AGENT_ACTIVITIES = [call_model, search, calculator, send_email]
EXPECTED_TOTAL = sum(t + 1 for t in range(LAST_TURN) if t != EMAIL_TURN)


async def awaiting_approval(client: durable.Client, iid: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        st = await client.get_orchestration_state(iid)
        assert st is not None and not st.runtime_status.is_terminal, st
        status = st.get_custom_status()
        if status == {"turn": EMAIL_TURN, "phase": "awaiting_approval"}:
            return
        assert time.monotonic() < deadline, f"never asked for approval: {status}"
        await asyncio.sleep(0.01)


async def check_agent_run(
    client: durable.Client, iid: str, email_outcome: str
) -> durable.OrchestrationState:
    st = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert st is not None
    assert st.runtime_status is S.COMPLETED, st.failure_details
    assert st.get_output() == {
        "answer": f"total={EXPECTED_TOTAL}; {email_outcome}",
        "turns": LAST_TURN + 1,
    }
    assert st.instance_id == iid
    assert st.get_input()["turn"] == 20  # continued as new after turns 10 and 20
    assert st.get_custom_status() == {"turn": LAST_TURN, "phase": "done"}

    # Only the last execution's history is kept: three turns, not twenty-three.
    history = await client.get_orchestration_history(iid)
    assert [e.input for e in history if isinstance(e, ExecutionStarted)] == [st.serialized_input]
    assert not any(isinstance(e, ContinuedAsNew) for e in history)
    assert [e.name for e in history if isinstance(e, TaskScheduled)].count("call_model") == 3
    assert len(history) <= 40
    return st


async def test_agent_loop_waits_for_approval_raised_while_it_waits() -> None:
    store = durable.MemoryStore()
    async with durable.Worker(store, orchestrators=[agent_loop], activities=AGENT_ACTIVITIES):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(agent_loop, input=new_agent(30))
        await awaiting_approval(client, iid)
        await asyncio.sleep(0.1)
        assert ran["send_email"] == 0  # nothing is sent before the approval
        await client.raise_orchestration_event(iid, "Approval", data={"approved": True})
        await check_agent_run(client, iid, "email sent to boss@example.com")
    assert ran == Counter(
        {"call_model": LAST_TURN + 1, "search": LAST_TURN, "calculator": LAST_TURN - 1}
        | {"send_email": 1}
    )


async def test_agent_loop_approval_raised_early_survives_continue_as_new() -> None:
    store = durable.MemoryStore()
    client = durable.Client(store)
    iid = await client.schedule_new_orchestration(agent_loop, input=new_agent(30))
    # Raised before the first turn; the loop asks for it on turn 15, two executions later.
    await client.raise_orchestration_event(iid, "approval", data={"approved": True})
    async with durable.Worker(store, orchestrators=[agent_loop], activities=AGENT_ACTIVITIES):
        await check_agent_run(client, iid, "email sent to boss@example.com")
    assert ran["send_email"] == 1
    assert ran["call_model"] == LAST_TURN + 1


async def test_agent_loop_denies_the_tool_when_the_approval_times_out() -> None:
    store = durable.MemoryStore()
    async with durable.Worker(store, orchestrators=[agent_loop], activities=AGENT_ACTIVITIES):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(agent_loop, input=new_agent(0.2))
        await awaiting_approval(client, iid)
        await check_agent_run(client, iid, "email denied: no approval")
    assert ran == Counter(
        {"call_model": LAST_TURN + 1, "search": LAST_TURN, "calculator": LAST_TURN - 1}
    )


async def test_agent_loop_explicit_rejection() -> None:
    store = durable.MemoryStore()
    async with durable.Worker(store, orchestrators=[agent_loop], activities=AGENT_ACTIVITIES):
        client = durable.Client(store)
        iid = await client.schedule_new_orchestration(agent_loop, input=new_agent(30))
        await awaiting_approval(client, iid)
        began = time.monotonic()
        await client.raise_orchestration_event(iid, "approval", data={"approved": False})
        await check_agent_run(client, iid, "email denied: no approval")
        assert time.monotonic() - began < 3  # the 30 s timer did not have to fire
    assert ran["send_email"] == 0
