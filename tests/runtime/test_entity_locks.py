"""Critical sections (`lock_entities`) end to end, on every store."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime_helpers import WAIT

import durable
from durable import task
from durable.entities import DurableEntity, EntityInstanceId

A = EntityInstanceId("Account", "a")
B = EntityInstanceId("Account", "b")


class Account(DurableEntity):
    def deposit(self, amount: int) -> int:
        balance = self.get_state(int, 100) + amount
        self.set_state(balance)
        return balance

    def balance(self) -> int:
        return self.get_state(int, 100)


def transfer(ctx: task.OrchestrationContext, plan: dict[str, Any]) -> Any:
    """Move `amount` from one account to the other `times` times, each move a critical
    section over both accounts, locked in the order the plan names them."""
    first, second = (EntityInstanceId("Account", k) for k in plan["order"])
    for _ in range(plan["times"]):
        with (yield ctx.lock_entities([first, second])):
            have = yield ctx.call_entity(first, "balance")
            # Between the read and the writes nothing else touches either account.
            yield ctx.call_entity(first, "deposit", -plan["amount"])
            yield ctx.call_entity(second, "deposit", plan["amount"])
            after = yield ctx.call_entity(first, "balance")
            assert after == have - plan["amount"], (have, after)
    return "done"


def hold_then_fail(ctx: task.OrchestrationContext, _: None) -> Any:
    with (yield ctx.lock_entities([A])):
        yield ctx.call_entity(A, "deposit", 1)
        yield ctx.wait_for_external_event("go")
        raise ValueError("the section fails")


def hold_until_done(ctx: task.OrchestrationContext, _: None) -> Any:
    section = yield ctx.lock_entities([B, A])
    with section:
        yield ctx.wait_for_external_event("go")
        return (yield ctx.call_entity(A, "balance"))  # returns inside: the end releases


def call_outside(ctx: task.OrchestrationContext, _: None) -> Any:
    with (yield ctx.lock_entities([A])):
        try:
            ctx.call_entity(B, "balance")
        except durable.LockingRulesViolationError as e:
            return str(e)
    return "allowed"


def worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(
        store,
        orchestrators=[transfer, hold_then_fail, hold_until_done, call_outside],
        entities=[Account],
        poll_interval=0.05,
    )


async def balances(client: durable.Client) -> tuple[int, int]:
    got = []
    for entity in (A, B):
        state = await client.get_entity(entity)
        assert state is not None
        got.append(state.get_state(int))
    return got[0], got[1]


async def test_sections_locking_overlapping_entities_in_opposite_orders_both_finish(
    store: durable.Store,
) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        there = {"order": ["a", "b"], "amount": 3, "times": 5}
        back = {"order": ["b", "a"], "amount": 2, "times": 5}
        ids = [
            await client.schedule_new_orchestration(transfer, input=plan)
            for plan in (there, back, there, back)
        ]
        for iid in ids:
            state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None
            assert state.runtime_status is durable.OrchestrationStatus.COMPLETED, state
        # 2 x 5 x 3 moved from a to b, 2 x 5 x 2 back: b gains 10 in all.
        assert await balances(client) == (90, 110)


async def test_others_wait_for_a_section_and_a_failure_releases_it(store: durable.Store) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(hold_then_fail)
        for _ in range(200):  # the section holds A once its deposit is done
            state = await client.get_entity(A)
            if state is not None and state.get_state(int) == 101:
                break
            await asyncio.sleep(0.02)
        await client.signal_entity(A, "deposit", 10)
        await asyncio.sleep(0.3)
        state = await client.get_entity(A)
        assert state is not None and state.get_state(int) == 101  # the signal waits
        await client.raise_orchestration_event(iid, "go")
        done = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert done is not None and done.runtime_status is durable.OrchestrationStatus.FAILED
        for _ in range(200):  # released: the signal runs
            state = await client.get_entity(A)
            if state is not None and state.get_state(int) == 111:
                break
            await asyncio.sleep(0.02)
        assert state is not None and state.get_state(int) == 111


async def test_the_end_of_an_orchestration_releases_its_locks(store: durable.Store) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        first = await client.schedule_new_orchestration(hold_until_done)
        second = await client.schedule_new_orchestration(hold_until_done)
        await asyncio.sleep(0.3)
        await client.raise_orchestration_event(first, "go")
        await client.raise_orchestration_event(second, "go")
        for iid in (first, second):
            state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
            assert state is not None and state.get_output() == 100, state
        iid = await client.schedule_new_orchestration(
            transfer, input={"order": ["a", "b"], "amount": 1, "times": 1}
        )
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
        assert state is not None and state.get_output() == "done"


async def test_a_section_may_call_only_the_entities_it_locked(store: durable.Store) -> None:
    async with worker(store):
        client = durable.Client(store, poll_interval=0.05)
        iid = await client.schedule_new_orchestration(call_outside)
        state = await client.wait_for_orchestration_completion(iid, timeout=WAIT)
    assert state is not None
    message = state.get_output()
    assert "@account@b" in message and "did not lock it" in message
