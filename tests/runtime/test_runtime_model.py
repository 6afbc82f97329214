"""The runtime's own proof: a stateful test of Worker + Client + Store against a model.

Hypothesis drives the real `Worker` and `Client` on a real store (memory, and SQLite in a
temporary file) with a fake clock, through random schedules (some with a delayed start),
worker steps, activity failures (with and without retries), events, timers, suspends,
resumes, terminations, crashes, paused ("zombie") workers whose leases ran out, restarts,
rewinds and purges.

One orchestrator, `flow`, is a pure function of its input, its activities' results and the
events it receives: `n` activities in sequence, a fan-out of `fan` activities, a child of
`child` steps, a timer, a wait for the event "go", then continue-as-new for `rounds` more
rounds. The model knows each instance's input and the events it was sent, and so what it
must return.

Most rules step workers by hand, with the Worker's own pieces (`_decide`, `_commit`,
`_run_activity`, `_flush_results`): a worker can claim and decide, then be paused before
its commit (and commit late, after its lease ran out and another worker went on: that
commit must be rejected whole), claim activities and never run them, run them and never
report them, or be dropped (a crash: its leases run out on the fake clock). Two rules run
a fresh Worker's real loops: until they find nothing to do (then `shutdown()`), or until
the process "dies" just before or after its n-th write (no shutdown, nothing released).

Every worker sees the store through a `Window` that checks each claim: nothing (instance
or activity) is handed to a second worker before the first one's lease ran out, or it
gave it back. After every rule each instance's history must be well formed (it opens with
OrchestratorStarted + ExecutionStarted; task ids are contiguous; every task is answered at
most once, never before it was scheduled, timers never early; one end, last), agree with
the instance's state, and replay with the current code to that same state without new
commands; and nothing may have ended in a way the model forbids (a wrong output, a failure
nobody injected, a termination nobody asked for). At the end every failure is cleared,
every wait satisfied, suspended instances resumed, failed ones rewound and the clock moved
on: every instance must finish as the model says.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import durable
from durable import task
from durable.core.engine import replay
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EventSent,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from durable.core.functions import orchestrator_spec
from durable.core.history import cancelled_events
from durable.core.state import OrchestrationState
from durable.store.base import (
    ActivityWorkItem,
    InstanceQuery,
    OrchestrationCommit,
    Store,
)

S = durable.OrchestrationStatus
LEASE = 30.0
PAST_LEASE = LEASE + 1.5  # MemoryStore looks for expired leases once a (fake) second
MOD = 1_000_003
RETRY = task.RetryPolicy(first_retry_interval=timedelta(seconds=10), max_number_of_attempts=3)


class FakeClock:
    """A tz-aware UTC clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- the code under test: pure functions of inputs, results and events ----------------


class InjectedError(Exception):
    """The failure the test injects into activities."""


class Faults:
    """Which instances' activities fail now (by root instance id), and what failed."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.injected: Counter[str] = Counter()

    def reset(self) -> None:
        self.failing.clear()
        self.injected.clear()

    def check(self, ctx: task.ActivityContext) -> None:
        root = ctx.orchestration_id.split(":")[0]
        if root in self.failing:
            self.injected[root] += 1
            raise InjectedError(f"injected into {ctx.orchestration_id} task {ctx.task_id}")


FAULTS = Faults()


def mix_value(acc: int, k: int) -> int:
    return (acc * 31 + k) % MOD


def square_value(j: int) -> int:
    return j * j + 7


def fold_value(acc: int, parts: list[int]) -> int:
    for p in parts:  # order matters: when_all must keep the order of its tasks
        acc = mix_value(acc, p)
    return acc


def leaf_value(n: int) -> int:
    total = 0
    for i in range(n):
        total = mix_value(total, i + 1)
    return total


async def mix(ctx: task.ActivityContext, args: list[int]) -> int:
    FAULTS.check(ctx)
    await asyncio.sleep(0)
    return mix_value(args[0], args[1])


def square(ctx: task.ActivityContext, j: int) -> int:  # a plain function: run in a thread
    FAULTS.check(ctx)
    return square_value(j)


def leaf(ctx: task.OrchestrationContext, n: int):
    total = 0
    for i in range(n):
        total = yield ctx.call_activity(mix, input=[total, i + 1])
    return total


def flow(ctx: task.OrchestrationContext, spec: dict[str, Any]):
    policy = RETRY if spec["retry"] else None
    acc = spec["acc"]
    for i in range(spec["n"]):
        acc = yield ctx.call_activity(mix, input=[acc, i + 1], retry_policy=policy)
    if spec["fan"]:
        parts = yield task.when_all(
            [ctx.call_activity(square, input=j, retry_policy=policy) for j in range(spec["fan"])]
        )
        acc = fold_value(acc, parts)
    if spec["child"]:
        value = yield ctx.call_sub_orchestrator(leaf, input=spec["child"], retry_policy=policy)
        acc = mix_value(acc, value)
    if spec["timer"]:
        yield ctx.create_timer(timedelta(seconds=spec["timer"]))
    seen = list(spec["seen"])
    if spec["wait"]:
        seen.append((yield ctx.wait_for_external_event("go")))
    if spec["rounds"] > 0:
        nxt = {**spec, "rounds": spec["rounds"] - 1, "acc": acc, "seen": seen}
        ctx.continue_as_new(nxt, save_events=True)
        return None
    return {"acc": acc, "seen": seen}


ORCHESTRATORS = {"flow": orchestrator_spec(flow), "leaf": orchestrator_spec(leaf)}


def events_needed(spec: dict[str, Any]) -> int:
    return spec["rounds"] + 1 if spec["wait"] else 0


def expected_output(spec: dict[str, Any], events: list[int]) -> dict[str, Any]:
    """What `flow` returns from `spec` when sent `events` (at least `events_needed`)."""
    acc, seen = spec["acc"], list(spec["seen"])
    pending = iter(events)
    for _ in range(spec["rounds"] + 1):
        for i in range(spec["n"]):
            acc = mix_value(acc, i + 1)
        if spec["fan"]:
            acc = fold_value(acc, [square_value(j) for j in range(spec["fan"])])
        if spec["child"]:
            acc = mix_value(acc, leaf_value(spec["child"]))
        if spec["wait"]:
            seen.append(next(pending))
    return {"acc": acc, "seen": seen}


DELAYS = st.sampled_from([None, None, None, 20.0])  # a delayed start, in seconds

SPECS = st.fixed_dictionaries(
    {
        "n": st.integers(0, 3),
        "fan": st.integers(0, 3),
        "child": st.integers(0, 2),
        "timer": st.sampled_from([0, 0, 10, 45]),
        "wait": st.booleans(),
        "rounds": st.integers(0, 2),
        "retry": st.booleans(),
        "acc": st.integers(0, 100),
        "seen": st.just([]),
    }
)


# -- workers and what they see --------------------------------------------------------


class Leases:
    """Who holds what, as the claims told each worker: nothing may be handed to a second
    worker before the first one's lease ran out (or it gave the thing back)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.held: dict[Any, tuple[str, datetime]] = {}

    def take(self, key: Any, owner: str, seconds: float) -> None:
        now = self.clock()
        holder = self.held.get(key)
        if holder is not None and holder[0] != owner and holder[1] > now:
            raise AssertionError(f"{key} handed to {owner} while {holder[0]} holds it: {now}")
        self.held[key] = (owner, now + timedelta(seconds=seconds))

    def renew(self, key: Any, owner: str, seconds: float) -> None:
        holder = self.held.get(key)
        if holder is not None and holder[0] == owner:
            self.held[key] = (owner, self.clock() + timedelta(seconds=seconds))

    def drop(self, key: Any, owner: str) -> None:
        holder = self.held.get(key)
        if holder is not None and holder[0] == owner:
            del self.held[key]


def _activity_key(item: ActivityWorkItem) -> Any:
    return ("activity", item.id, item.instance_id, item.execution_id, item.task_id)


class Window:
    """The store as one worker sees it: every claim is checked against `Leases`; it tells
    when the worker's claims come back empty; and it can kill the worker at its
    `die_at`-th write (just before or after it is done): from then on every call with an
    effect raises CancelledError, as if the process were gone at that point."""

    def __init__(
        self, store: Store, leases: Leases, die_at: int | None = None, before: bool = False
    ) -> None:
        self._store = store
        self._leases = leases
        self._tick = 0
        self._writing = 0
        self._last_write = 0
        self._empty: dict[str, int] = {"orch": -1, "act": -1}
        self._writes = 0
        self._die_at = die_at
        self._before = before
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _next(self) -> int:
        self._tick += 1
        return self._tick

    def _check(self) -> None:
        if self.dead:
            raise asyncio.CancelledError

    async def _write(self, name: str, *args: Any) -> Any:
        self._check()
        self._writes += 1
        dying = self._writes == self._die_at
        if dying and self._before:
            self.dead = True
            self._check()
        self._writing += 1
        try:
            return await getattr(self._store, name)(*args)
        finally:
            self._writing -= 1
            self._last_write = self._next()
            if dying:
                self.dead = True

    async def claim_orchestrations(self, owner: str, limit: int, lease: float) -> Any:
        self._check()
        began = self._next()
        items = await self._store.claim_orchestrations(owner, limit, lease)
        for item in items:
            self._leases.take(("instance", item.instance_id), owner, lease)
        self._empty["orch"] = -1 if items else began
        return items

    async def claim_activities(self, owner: str, limit: int, lease: float) -> Any:
        self._check()
        began = self._next()
        items = await self._store.claim_activities(owner, limit, lease)
        for item in items:
            self._leases.take(_activity_key(item), owner, lease)
        self._empty["act"] = -1 if items else began
        return items

    async def commit_orchestrations(self, commits: Any, take: Any = None) -> Any:
        outcomes = await self._write("commit_orchestrations", commits, take)
        for item in take.items if take is not None else ():
            self._leases.take(_activity_key(item), item.lease_owner, take.lease_seconds)
        for commit in commits:
            for result in commit.results:  # recorded with a decision, or as messages
                self._leases.drop(_activity_key(result.item), result.item.lease_owner)
            if not commit.results:  # (a decision on results directly claimed nothing)
                self._leases.drop(("instance", commit.item.instance_id), commit.item.lease_owner)
        return outcomes

    async def abandon_orchestration(self, item: Any, *args: Any) -> Any:
        await self._write("abandon_orchestration", item, *args)
        self._leases.drop(("instance", item.instance_id), item.lease_owner)

    async def complete_activities(self, results: Any) -> Any:
        await self._write("complete_activities", results)
        for result in results:
            self._leases.drop(_activity_key(result.item), result.item.lease_owner)

    async def abandon_activities(self, items: Any) -> Any:
        await self._write("abandon_activities", items)
        for item in items:
            self._leases.drop(_activity_key(item), item.lease_owner)

    async def renew_leases(self, owner: str, iids: Any, ids: Any, lease: float) -> Any:
        await self._write("renew_leases", owner, iids, ids, lease)
        for key in list(self._leases.held):
            if (key[0] == "instance" and key[1] in iids) or (
                key[0] == "activity" and key[1] in ids
            ):
                self._leases.renew(key, owner, lease)

    def settled(self, worker: durable.Worker) -> bool:
        """Both loops found nothing after the last write, and nothing runs."""
        return (
            not self._writing
            and not worker._running
            and not worker._results
            and self._empty["orch"] > self._last_write
            and self._empty["act"] > self._last_write
        )


def new_worker(window: Window, **options: Any) -> durable.Worker:
    return durable.Worker(
        window,  # type: ignore[arg-type]
        orchestrators=[flow, leaf],
        activities=[mix, square],
        lease_seconds=LEASE,
        max_concurrent_orchestrations=4,
        **options,
    )


class Hand:
    """A Worker stepped by hand: each method is one piece of one of its loops."""

    def __init__(self, store: Store, leases: Leases) -> None:
        self.store = Window(store, leases)
        self.worker = new_worker(self.store)
        self.worker._results_ready = asyncio.Event()
        self.decided: list[OrchestrationCommit] = []  # decided, not committed yet
        self.claimed: list[ActivityWorkItem] = []  # claimed, not run yet

    @property
    def paused(self) -> bool:
        """Its orchestration loop stopped between a decision and its commit."""
        return bool(self.decided)

    async def decide(self) -> int:
        """Claim a batch and decide it; the commits wait in `decided`."""
        assert not self.decided
        w = self.worker
        items = await self.store.claim_orchestrations(w.id, w._batch, w._lease)
        for item in items:
            commit = await w._decide(item)
            if commit is not None:
                self.decided.append(commit)
        return len(items)

    async def commit(self) -> None:
        commits, self.decided = self.decided, []
        if commits:
            assert not await self.worker._commit(commits)

    async def claim_activities(self, limit: int) -> int:
        w = self.worker
        items = await self.store.claim_activities(w.id, limit, w._lease)
        self.claimed.extend(items)
        return len(items)

    async def run_activities(self) -> None:
        items, self.claimed = self.claimed, []
        await asyncio.gather(*(self.worker._run_activity(item) for item in items))

    async def record(self) -> None:
        await self.worker._flush_results()

    async def renew(self) -> None:
        ids = [a.id for a in self.claimed]
        await self.store.renew_leases(self.worker.id, (), ids, LEASE)

    async def run_until_idle(self, rounds: int = 300) -> None:
        await self.commit()
        await self.run_activities()
        await self.record()
        for _ in range(rounds):
            decided = await self.decide()
            await self.commit()
            claimed = await self.claim_activities(8)
            await self.run_activities()
            await self.record()
            if not decided and not claimed:
                return
        raise AssertionError(f"the worker still finds work after {rounds} rounds")


# -- the model -------------------------------------------------------------------------


@dataclass
class Root:
    """What the model knows of one top-level instance, since it was (re)started."""

    iid: str
    spec: dict[str, Any]
    events: list[int] = field(default_factory=list)
    terminated: str | None = None  # the output of a terminate sent
    suspended: bool = False
    ever_suspended: bool = False

    @property
    def expected(self) -> dict[str, Any] | None:
        if len(self.events) < events_needed(self.spec):
            return None
        return expected_output(self.spec, self.events)


class Errors(logging.Handler):
    """Collects ERROR records of the `durable` loggers (a swallowed crash, a blocked decision)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def caused_by_injection(failure: FailureDetails | None) -> bool:
    while failure is not None:
        if failure.error_type.endswith("InjectedError"):
            return True
        failure = failure.inner
    return False


# -- history checks --------------------------------------------------------------------

_ANSWERS = (
    TaskCompleted | TaskFailed | TimerFired | ChildOrchestrationCompleted | ChildOrchestrationFailed
)
_COMMANDS = TaskScheduled | TimerCreated | ChildOrchestrationCreated | EventSent


def _answers(event: HistoryEvent) -> type | None:
    match event:
        case TaskCompleted() | TaskFailed():
            return TaskScheduled
        case TimerFired():
            return TimerCreated
        case ChildOrchestrationCompleted() | ChildOrchestrationFailed():
            return ChildOrchestrationCreated
        case _:
            return None


def check_history(state: OrchestrationState, history: list[HistoryEvent]) -> None:
    """The history is well formed, agrees with the state and replays to the same decision."""
    iid = state.instance_id
    where = f"{iid} ({state.runtime_status.value}): {history!r}"
    if not history:
        assert state.runtime_status is S.PENDING, where
        return
    assert isinstance(history[0], OrchestratorStarted), where
    if not any(isinstance(e, ExecutionStarted) for e in history):
        # Terminated before its delayed start: it never started (by design, the store
        # claims a terminate early, with whatever else waits); nothing ran.
        assert state.scheduled_start_at is not None, where
        assert state.runtime_status is S.TERMINATED, where
        stop = next(e for e in history if isinstance(e, ExecutionTerminated))
        end = history[-1]
        assert isinstance(end, ExecutionCompleted) and end.status == "TERMINATED", where
        assert state.serialized_output == stop.output == end.result, where
        assert not any(isinstance(e, _COMMANDS | _ANSWERS) for e in history), where
        return
    start = history[1]
    assert isinstance(start, ExecutionStarted), where
    assert start.instance_id == iid and start.execution_id == state.execution_id, where
    assert start.name == state.name and start.input == state.serialized_input, where
    assert not any(isinstance(e, ExecutionStarted) for e in history[2:]), where
    assert not any(isinstance(e, ContinuedAsNew) for e in history), where  # a new execution
    if start.scheduled_start is not None:
        assert history[0].timestamp >= start.scheduled_start, f"started early: {where}"

    cancelled = cancelled_events(history)
    commands: dict[int, HistoryEvent] = {}
    answered: Counter[int] = Counter()
    now = None
    for index, event in enumerate(history):
        if isinstance(event, OrchestratorStarted):
            now = event.timestamp
        if isinstance(event, _COMMANDS):
            assert event.task_id == len(commands), f"task ids not contiguous at {index}: {where}"
            commands[event.task_id] = event
        kind = _answers(event)
        if kind is None:
            continue
        task_id = event.task_id  # type: ignore[union-attr]
        assert isinstance(commands.get(task_id), kind), f"answer to nothing at {index}: {where}"
        if isinstance(event, TimerFired):
            assert now is not None and event.fire_at <= now, f"timer fired early: {where}"
        if index not in cancelled:
            answered[task_id] += 1
            assert answered[task_id] == 1, f"task {task_id} answered twice: {where}"

    ends = [
        i for i, e in enumerate(history) if isinstance(e, ExecutionCompleted) and i not in cancelled
    ]
    assert len(ends) <= 1, f"two ends: {where}"
    end = history[ends[0]] if ends else None
    if isinstance(end, ExecutionCompleted) and end.status == "FAILED" and not state.failure_details:
        # A rewind was asked for: the instance runs again, its history says how once a
        # worker replays it (the store shows it RUNNING from the request on).
        assert ends[0] == len(history) - 1, f"events after the end: {where}"
        assert state.runtime_status is S.RUNNING, where
        replay(ORCHESTRATORS, history, [])
        return
    if end is not None:
        assert ends[0] == len(history) - 1, f"events after the end: {where}"
        assert isinstance(end, ExecutionCompleted)
        assert state.runtime_status.value == end.status, where
        if end.status == "FAILED":
            assert state.failure_details == end.failure, where
        else:
            assert state.serialized_output == end.result, where
    else:
        assert state.runtime_status in (S.RUNNING, S.SUSPENDED), where
    if state.runtime_status is not S.FAILED:
        assert state.failure_details is None, f"blocked: {state.failure_details}: {where}"

    decision, _ = replay(ORCHESTRATORS, history, [])
    assert decision.commands == (), f"replay commands {decision.commands}: {where}"
    assert decision.events == (), f"replay events {decision.events}: {where}"
    assert decision.status is state.runtime_status, f"replay says {decision.status}: {where}"
    if state.runtime_status is S.COMPLETED:
        assert decision.output == state.serialized_output, where


# -- the machine -----------------------------------------------------------------------


class RuntimeMachine(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        FAULTS.reset()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.dir: Path | None = None
        self.store: Store
        if self.kind == "memory":
            self.store = durable.MemoryStore(clock=self.clock)
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="durable-model-"))
            self.store = durable.SqliteStore(
                self.dir / "model.db", synchronous="OFF", clock=self.clock
            )
        self.client = durable.Client(self.store)
        self.leases = Leases(self.clock)
        self.hands: list[Hand] = [Hand(self.store, self.leases)]
        self.roots: dict[str, Root] = {}
        self.terminations = 0
        self.started = 0
        self.ever_terminated: set[str] = set()
        self.checked: dict[str, tuple[Any, ...]] = {}
        self.errors = Errors()
        self.broken = False
        logging.getLogger("durable").addHandler(self.errors)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            if not self.broken:  # a failed check has already said what went wrong
                self.run(self.finish())
        finally:
            logging.getLogger("durable").removeHandler(self.errors)
            FAULTS.reset()
            self.run(self.store.close())
            self.run(self.loop.shutdown_default_executor())
            self.loop.close()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- picking -------------------------------------------------------------------------

    def hand(self, k: int) -> Hand:
        return self.hands[k % len(self.hands)]

    def root(self, k: int) -> Root | None:
        roots = list(self.roots.values())
        return roots[k % len(roots)] if roots else None

    async def status(self, iid: str) -> durable.OrchestrationStatus:
        state = await self.store.get_state(iid)
        assert state is not None, iid
        return state.runtime_status

    # -- clients ---------------------------------------------------------------------------

    def start(self, spec: dict[str, Any], failing: bool, delay: float | None) -> None:
        iid = f"i{self.started}"
        self.started += 1
        if failing:
            FAULTS.failing.add(iid)
        start_at = None if delay is None else self.clock.now + timedelta(seconds=delay)
        self.run(
            self.client.schedule_new_orchestration(
                flow, input=spec, instance_id=iid, start_at=start_at
            )
        )
        self.roots[iid] = Root(iid, spec)

    @initialize(specs=st.lists(st.tuples(SPECS, st.booleans(), DELAYS), min_size=1, max_size=3))
    def first_instances(self, specs: list[tuple[dict[str, Any], bool, float | None]]) -> None:
        for spec, failing, delay in specs:
            self.start(spec, failing, delay)

    @precondition(lambda self: self.started < 6)  # (not live roots: a purge depends on timing)
    @rule(spec=SPECS, failing=st.booleans(), delay=DELAYS)
    def schedule(self, spec: dict[str, Any], failing: bool, delay: float | None) -> None:
        self.start(spec, failing, delay)

    @rule(k=st.integers(0, 5))
    def purge(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            state = await self.store.get_state(root.iid)
            assert state is not None
            family = [state, *await self.children(root.iid)]
            if not all(s.runtime_status.is_terminal for s in family):
                with pytest.raises(durable.OrchestrationStateError):
                    await self.client.purge_orchestration(root.iid)
                assert await self.store.get_state(root.iid) is not None
                return
            assert await self.client.purge_orchestration(root.iid) == len(family)
            for s in family:
                assert await self.store.get_state(s.instance_id) is None
                assert await self.store.get_history(s.instance_id) == []
                self.checked.pop(s.instance_id, None)
            del self.roots[root.iid]

        self.run(go())

    @rule(k=st.integers(0, 5), data=st.integers(0, 99))
    def raise_event(self, k: int, data: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            status = await self.status(root.iid)
            await self.client.raise_orchestration_event(root.iid, "go", data=data)
            if status not in (S.COMPLETED, S.TERMINATED):  # those drop what arrives
                root.events.append(data)

        self.run(go())

    @rule(k=st.integers(0, 5))
    def terminate(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            if (await self.status(root.iid)) in (S.COMPLETED, S.TERMINATED):
                return  # it would be dropped (a FAILED instance keeps it for a rewind)
            self.terminations += 1
            output = f"stop-{self.terminations}"
            await self.client.terminate_orchestration(root.iid, output=output)
            if root.terminated is None:  # the first one ends it; later ones find it ended
                root.terminated = output
            self.ever_terminated.add(root.iid)

        self.run(go())

    @rule(k=st.integers(0, 5))
    def suspend(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            if (await self.status(root.iid)).is_terminal:
                return
            await self.client.suspend_orchestration(root.iid, reason="model")
            root.suspended = root.ever_suspended = True

        self.run(go())

    @rule(k=st.integers(0, 5))
    def resume(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)
        self.run(self.client.resume_orchestration(root.iid, reason="model"))
        root.suspended = False

    @rule(k=st.integers(0, 5), on=st.booleans())
    def set_failing(self, k: int, on: bool) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)
        if on:
            FAULTS.failing.add(root.iid)
        else:
            FAULTS.failing.discard(root.iid)

    @rule(k=st.integers(0, 5))
    def restart(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            state = await self.store.get_state(root.iid)
            assert state is not None
            children = await self.children(root.iid)
            if not state.runtime_status.is_terminal:
                with pytest.raises(durable.OrchestrationStateError):
                    await self.client.restart_orchestration(root.iid)
                return
            if not all(c.runtime_status.is_terminal for c in children):
                return  # its new run would find a child with the same id still running
            await self.client.restart_orchestration(root.iid)
            self.roots[root.iid] = Root(root.iid, state.get_input())

        self.run(go())

    @rule(k=st.integers(0, 5))
    def rewind(self, k: int) -> None:
        root = self.root(k)
        if root is None:
            return  # (all purged)

        async def go() -> None:
            if await self.status(root.iid) is S.FAILED:
                await self.client.rewind_orchestration(root.iid, reason="model")
            else:
                with pytest.raises(durable.OrchestrationStateError):
                    await self.client.rewind_orchestration(root.iid)

        self.run(go())

    @rule(seconds=st.sampled_from([1.0, 5.0, 11.0, PAST_LEASE, 50.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- workers ---------------------------------------------------------------------------

    @rule(k=st.integers(0, 2))
    def run_until_idle(self, k: int) -> None:
        if self.hands:
            self.run(self.hand(k).run_until_idle())

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2), steps=st.integers(1, 3))
    def run_a_little(self, k: int, steps: int) -> None:
        hand = self.hand(k)

        async def go() -> None:
            await hand.commit()
            for _ in range(steps):
                await hand.decide()
                await hand.commit()
                await hand.claim_activities(2)
                await hand.run_activities()
                await hand.record()

        self.run(go())

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2))
    def decide_and_pause(self, k: int) -> None:
        """The worker decides a batch and stops before committing it (a long GC pause)."""
        hand = self.hand(k)
        if not hand.paused:
            self.run(hand.decide())

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2))
    def commit_late(self, k: int) -> None:
        """A paused worker wakes and commits: rejected if its lease was lost meanwhile."""
        paused = [h for h in self.hands if h.paused]  # (may be none: claims depend on timing)
        if paused:
            self.run(paused[k % len(paused)].commit())

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2), limit=st.integers(1, 4))
    def claim_activities(self, k: int, limit: int) -> None:
        self.run(self.hand(k).claim_activities(limit))

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2), record=st.booleans())
    def run_claimed_activities(self, k: int, record: bool) -> None:
        hand = self.hand(k)
        self.run(hand.run_activities())
        if record:
            self.run(hand.record())

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2))
    def renew_leases(self, k: int) -> None:
        self.run(self.hand(k).renew())

    @rule(k=st.integers(0, 2), meanwhile=st.sampled_from(["nobody", "claimed", "carried on"]))
    def zombie(self, k: int, meanwhile: str) -> None:
        """A worker decides and stalls past its lease; meanwhile nobody touches its
        instances, or another worker claims them, or carries them on; then the first
        wakes and commits: every one of its stale decisions must be rejected whole."""
        hand = self.hand(k) if self.hands else Hand(self.store, self.leases)
        other = Hand(self.store, self.leases)

        async def go() -> None:
            if not hand.paused:
                await hand.decide()
            self.clock.advance(PAST_LEASE)
            if meanwhile == "claimed":
                await other.decide()
            elif meanwhile == "carried on":
                await other.run_until_idle()
            commits, hand.decided = hand.decided, []
            if commits:
                outcomes = await hand.store.commit_orchestrations(commits)
                for commit, outcome in zip(commits, outcomes, strict=True):
                    assert isinstance(outcome, durable.LeaseLostError), (commit, outcome)
                    hand.worker._cache.pop(commit.item.instance_id, None)
            await other.commit()

        self.run(go())
        if len(self.hands) < 3:
            self.hands.append(other)

    @rule(k=st.integers(0, 2), limit=st.integers(1, 4), ran=st.booleans())
    def crash_in_activities(self, k: int, limit: int, ran: bool) -> None:
        """A worker dies holding activities (run or not, unreported); another takes over
        once their leases run out."""
        hand = self.hand(k) if self.hands else Hand(self.store, self.leases)
        if hand in self.hands:
            self.hands.remove(hand)
        other = Hand(self.store, self.leases)

        async def go() -> None:
            await hand.claim_activities(limit)
            if ran:
                await hand.run_activities()
            self.clock.advance(PAST_LEASE)
            await other.run_until_idle()

        self.run(go())
        self.hands.append(other)

    @precondition(lambda self: self.hands)
    @rule(k=st.integers(0, 2))
    def crash(self, k: int) -> None:
        """Drop a worker with whatever it holds: its leases run out on the clock."""
        self.hands.remove(self.hand(k))

    @precondition(lambda self: len(self.hands) < 3)
    @rule()
    def new_worker(self) -> None:
        self.hands.append(Hand(self.store, self.leases))

    @rule()
    def run_real_worker(self) -> None:
        """A fresh Worker's own loops run until they find nothing to do, then shut down."""
        watched = Window(self.store, self.leases)
        worker = new_worker(watched, poll_interval=0.005)

        async def go() -> None:
            await worker.start()
            try:
                for _ in range(2000):
                    await asyncio.sleep(0.002)
                    if watched.settled(worker):
                        return
                raise AssertionError("a running worker did not settle within 4 s")
            finally:
                await worker.shutdown()

        self.run(go())

    @rule(die_at=st.integers(1, 8), before=st.booleans())
    def kill_real_worker(self, die_at: int, before: bool) -> None:
        """A fresh Worker's loops run, and the process dies just before or after one of its
        writes (a commit, recorded results, an abandon): no shutdown, nothing released."""
        watched = Window(self.store, self.leases, die_at, before)
        worker = new_worker(watched, poll_interval=0.005)

        async def go() -> None:
            await worker.start()
            for _ in range(2000):
                await asyncio.sleep(0.002)
                if watched.dead or watched.settled(worker):
                    break
            watched.dead = True
            tasks = [*worker._tasks, *worker._running.values()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert worker._executor is not None
            worker._executor.shutdown(wait=True)

        self.run(go())

    # -- invariants ------------------------------------------------------------------------

    async def children(self, iid: str) -> list[OrchestrationState]:
        return [s for s in await self.all_states() if s.parent_instance_id == iid]

    async def all_states(self) -> list[OrchestrationState]:
        states: list[OrchestrationState] = []
        token = None
        while True:
            page = await self.store.list_instances(InstanceQuery(limit=100, after=token))
            states.extend(page.instances)
            token = page.next_token
            if token is None:
                return states

    @invariant()
    def consistent(self) -> None:
        try:
            self.run(self.check())
        except BaseException:
            self.broken = True
            raise

    async def check(self) -> None:
        assert not self.errors.records, [
            f"{r.getMessage()}: {r.exc_info[1]!r}" if r.exc_info else r.getMessage()
            for r in self.errors.records
        ]
        for state in await self.all_states():
            history = await self.store.get_history(state.instance_id)
            key = (state, len(history), history[-1] if history else None)
            if self.checked.get(state.instance_id) != key:
                check_history(state, history)
                self.checked[state.instance_id] = key
            self.check_outcome(state)

    def check_outcome(self, state: OrchestrationState) -> None:
        iid, status = state.instance_id, state.runtime_status
        root = self.roots[iid.split(":")[0]]
        if status is S.FAILED:
            assert FAULTS.injected[root.iid], f"{iid} failed with nothing injected: {state}"
            assert caused_by_injection(state.failure_details), state.failure_details
        elif status is S.TERMINATED:
            if iid == root.iid:
                assert root.terminated is not None, f"{iid} terminated by nobody"
                assert state.get_output() == root.terminated, state
        elif status is S.SUSPENDED:
            assert root.ever_suspended, f"{iid} suspended by nobody"
        elif status is S.COMPLETED:
            if iid == root.iid:
                assert root.expected is not None, f"{iid} completed before all events came"
                assert state.get_output() == root.expected, (state, root)
            else:
                assert state.name == "leaf", state
                assert state.get_output() == leaf_value(state.get_input()), state
        if status is S.TERMINATED and iid != root.iid:  # by its parent, now or in a past run
            assert root.iid in self.ever_terminated, f"{iid} terminated by nobody"

    # -- the end ---------------------------------------------------------------------------

    async def finish(self) -> None:
        """No more failures, every wait satisfied, time moves on: everything must end."""
        FAULTS.failing.clear()
        hand = Hand(self.store, self.leases)
        seen: list[Any] = []
        for _ in range(40):
            self.clock.advance(50.0)  # past every lease, timer and retry delay
            done = True
            for root in self.roots.values():
                status = await self.status(root.iid)
                if status in (S.COMPLETED, S.TERMINATED):
                    continue
                done = False
                if status is S.FAILED:
                    await self.client.rewind_orchestration(root.iid, reason="the end")
                if root.suspended or status is S.SUSPENDED:
                    await self.client.resume_orchestration(root.iid, reason="the end")
                    root.suspended = False
                for _ in range(events_needed(root.spec) - len(root.events)):
                    data = 100 + len(root.events)
                    await self.client.raise_orchestration_event(root.iid, "go", data=data)
                    root.events.append(data)
            await hand.run_until_idle()
            await self.check()
            if done:
                break
            states = await self.all_states()
            seen.append([(s, len(await self.store.get_history(s.instance_id))) for s in states])
            if seen[-3:] == [seen[-1]] * 3:
                break  # stuck: nothing moves any more
        for state in await self.all_states():
            iid = state.instance_id
            root = self.roots[iid.split(":")[0]]
            if iid == root.iid:
                if root.terminated is None or state.runtime_status is S.COMPLETED:
                    assert state.runtime_status is S.COMPLETED, state
                    assert state.get_output() == root.expected, (state, root)
                else:
                    assert state.runtime_status is S.TERMINATED, state
            else:
                assert state.runtime_status.is_terminal, f"a child left behind: {state}"


class SqliteRuntimeMachine(RuntimeMachine):
    kind = "sqlite"


# Shrinking a stateful run takes minutes (past the suite's timeout): a failure is reported
# as found, up to 30 steps. DURABLE_MODEL_SHRINK=1 shrinks it; DURABLE_MODEL_EXAMPLES=500
# searches longer.
SETTINGS = settings(
    max_examples=int(os.environ.get("DURABLE_MODEL_EXAMPLES", "40")),
    stateful_step_count=30,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("DURABLE_MODEL_SHRINK") else []),
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "machine", [RuntimeMachine, SqliteRuntimeMachine], ids=["memory", "sqlite"]
)
def test_the_runtime_agrees_with_the_model(machine: type[RuntimeMachine]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- what the model found, each on its own ---------------------------------------------


def spec_of(**fields: Any) -> dict[str, Any]:
    base = {"n": 0, "fan": 0, "child": 0, "timer": 0, "wait": False, "rounds": 0}
    return {**base, "retry": False, "acc": 0, "seen": [], **fields}


@pytest.fixture
def faults() -> Iterator[Faults]:
    FAULTS.reset()
    yield FAULTS
    FAULTS.reset()


async def test_an_event_in_the_batch_that_fails_an_instance_is_kept_for_its_rewind(
    store: durable.Store, faults: Faults
) -> None:
    # A failed instance keeps what arrives after its failure, for a rewind to use; an
    # event that came just before, in the very batch whose first message fails it, must
    # not be thrown away either: after the rewind the orchestrator waits for it.
    client, hand = durable.Client(store), Hand(store, Leases(store.clock))
    spec = spec_of(n=1, wait=True)
    faults.failing.add("a")
    await client.schedule_new_orchestration(flow, input=spec, instance_id="a")
    await hand.decide()
    await hand.commit()  # the activity is scheduled
    await hand.claim_activities(1)
    await hand.run_activities()
    await hand.record()  # ... and fails; its result waits for the orchestrator
    await client.raise_orchestration_event("a", "go", data=7)  # in the same batch
    await hand.run_until_idle()
    assert await status_of(store, "a") is S.FAILED
    faults.failing.clear()
    await client.rewind_orchestration("a")
    await hand.run_until_idle()
    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.COMPLETED, "the rewound instance still waits for 'go'"
    assert state.get_output() == expected_output(spec, [7])


async def test_a_terminate_in_the_batch_that_continues_as_new_is_not_lost(
    store: durable.Store, faults: Faults
) -> None:
    # A terminate that arrives while an execution continues as new is carried to the next
    # execution (the store keeps it); one claimed in the same batch as the event that
    # makes it continue must not simply vanish.
    client, hand = durable.Client(store), Hand(store, Leases(store.clock))
    await client.schedule_new_orchestration(
        flow, input=spec_of(wait=True, rounds=1), instance_id="a"
    )
    await client.raise_orchestration_event("a", "go", data=1)
    await client.terminate_orchestration("a", output="stop")
    await hand.run_until_idle()  # one batch: start, go (continue-as-new), terminate
    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.TERMINATED, f"terminated, yet {state.runtime_status}"
    assert state.get_output() == "stop"


async def test_a_rewind_cancels_the_failure_that_came_while_suspended(
    store: durable.Store, faults: Faults
) -> None:
    # The activity fails while the instance is suspended: its TaskFailed is held, and acts
    # when the instance is resumed. The rewind must cancel that TaskFailed, not the
    # ExecutionResumed that released it.
    client, hand = durable.Client(store), Hand(store, Leases(store.clock))
    spec = spec_of(n=1)
    faults.failing.add("a")
    await client.schedule_new_orchestration(flow, input=spec, instance_id="a")
    await client.suspend_orchestration("a")
    await hand.run_until_idle()
    assert await status_of(store, "a") is S.SUSPENDED
    await client.resume_orchestration("a")
    await hand.run_until_idle()
    assert await status_of(store, "a") is S.FAILED
    faults.failing.clear()
    await client.rewind_orchestration("a")
    await hand.run_until_idle()
    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.COMPLETED, f"rewound, yet {state.runtime_status}"
    assert state.get_output() == expected_output(spec, [])


async def test_events_held_while_suspended_are_carried_to_the_next_execution(
    store: durable.Store, faults: Faults
) -> None:
    # Two events arrive while the instance is suspended; on resume the first one makes it
    # continue as new with save_events=True: the second must be carried over, as it is
    # when the same events arrive while it runs.
    client, hand = durable.Client(store), Hand(store, Leases(store.clock))
    spec = spec_of(wait=True, rounds=1)
    await client.schedule_new_orchestration(flow, input=spec, instance_id="a")
    await client.suspend_orchestration("a")
    await client.raise_orchestration_event("a", "go", data=1)
    await client.raise_orchestration_event("a", "go", data=2)
    await hand.run_until_idle()
    assert await status_of(store, "a") is S.SUSPENDED
    await client.resume_orchestration("a")
    await hand.run_until_idle()
    state = await store.get_state("a")
    assert state is not None
    assert state.runtime_status is S.COMPLETED, f"still {state.runtime_status}: 'go' lost"
    assert state.get_output() == expected_output(spec, [1, 2])


async def status_of(store: durable.Store, iid: str) -> durable.OrchestrationStatus | None:
    state = await store.get_state(iid)
    return None if state is None else state.runtime_status
