"""`ai.wait_for_approval`: answers are tied to their request; the status follows the wait."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import durable
from durable import ai, task
from durable.testing import TestEnvironment


def two_approvals(ctx: task.OrchestrationContext, _: Any):
    """Asks twice, one request after the other; returns both decisions."""
    first = yield from ai.wait_for_approval(ctx, timeout=timedelta(hours=1), request="first")
    second = yield from ai.wait_for_approval(ctx, timeout=timedelta(hours=1), request="second")
    return [
        {"approved": d.approved, "reason": d.reason, "request_id": d.request_id}
        for d in (first, second)
    ]


async def waiting_status(client: durable.Client, iid: str, request: str) -> dict[str, Any]:
    """The custom status once `iid` waits for approval of `request`."""
    for _ in range(500):
        state = await client.get_orchestration_state(iid)
        assert state is not None
        status = state.get_custom_status() or {}
        if status.get("step") == "approval" and status.get("request") == request:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"{iid} never asked for approval of {request!r}")


async def run(
    store: durable.Store, answer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], durable.OrchestrationState]:
    """Runs `two_approvals`; `answer(client, iid, status)` answers each request in turn."""
    worker = durable.Worker(store)
    worker.add_orchestrator(two_approvals)
    client = durable.Client(store)
    seen = []
    async with worker:
        iid = await client.schedule_new_orchestration(two_approvals)
        for request in ("first", "second"):
            status = await waiting_status(client, iid, request)
            seen.append(status)
            await answer(client, iid, status)
        state = await client.wait_for_orchestration_completion(iid, timeout=10)
    assert state is not None
    state.raise_if_failed()
    return state.get_output(), seen, state


async def test_the_status_names_the_request_and_clears_once_decided(store: durable.Store) -> None:
    async def approve(client: durable.Client, iid: str, status: dict[str, Any]) -> None:
        await client.raise_orchestration_event(
            iid, "approval", data={"approved": True, "request_id": status["request_id"]}
        )

    decisions, seen, state = await run(store, approve)
    first, second = seen
    assert first["event"] == "approval" and first["request_id"] != second["request_id"]
    assert [d["request_id"] for d in decisions] == [first["request_id"], second["request_id"]]
    assert state.get_custom_status() == {
        "step": "decided",
        "request_id": second["request_id"],
        "approved": True,
    }


async def test_an_answer_sent_twice_does_not_answer_the_next_request(store: durable.Store) -> None:
    # The person double-clicks "approve" on the first request: the second copy carries the
    # first request's id, so the second request keeps waiting for its own answer.
    async def answer(client: durable.Client, iid: str, status: dict[str, Any]) -> None:
        if status["request"] == "first":
            data = {"approved": True, "request_id": status["request_id"]}
            await client.raise_orchestration_event(iid, "approval", data=data)
            await client.raise_orchestration_event(iid, "approval", data=data)
            return
        await asyncio.sleep(0.2)  # the stale copy has arrived by now: still waiting
        state = await client.get_orchestration_state(iid)
        assert state is not None and state.get_custom_status() == status
        data = {"approved": False, "reason": "no", "request_id": status["request_id"]}
        await client.raise_orchestration_event(iid, "approval", data=data)

    decisions, _, _ = await run(store, answer)
    assert [(d["approved"], d["reason"]) for d in decisions] == [(True, ""), (False, "no")]


async def test_an_answer_without_an_id_is_taken_by_the_waiting_request(
    store: durable.Store,
) -> None:
    async def answer(client: durable.Client, iid: str, status: dict[str, Any]) -> None:
        data = True if status["request"] == "first" else {"approved": False}
        await client.raise_orchestration_event(iid, "approval", data=data)

    decisions, _, _ = await run(store, answer)
    assert [(d["approved"], d["request_id"]) for d in decisions] == [(True, ""), (False, "")]


@pytest.mark.parametrize("approve_on_timeout", [False, True])
async def test_a_stale_answer_does_not_stop_the_timeout(approve_on_timeout: bool) -> None:
    def one(ctx: task.OrchestrationContext, _: Any):
        decision = yield from ai.wait_for_approval(
            ctx, timeout=timedelta(days=1), approve_on_timeout=approve_on_timeout
        )
        return [decision.approved, decision.reason]

    env = TestEnvironment()
    env.worker.add_orchestrator(one)
    async with env:
        iid = await env.client.schedule_new_orchestration(one)
        await env.client.raise_orchestration_event(
            iid, "approval", data={"approved": not approve_on_timeout, "request_id": "old"}
        )
        state = await env.client.wait_for_orchestration_completion(iid, timeout=10)
    assert state is not None
    assert state.get_output() == [approve_on_timeout, "no answer within 1 day, 0:00:00"]
