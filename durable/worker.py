"""The worker: claims work from a store, runs orchestrators and activities, commits decisions."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from durable import tracing
from durable._entities import decide_entity
from durable._records import ActivityStreams, commit_for, terminate_blocked
from durable.core.context import ActivityContext
from durable.core.decision import EngineOptions
from durable.core.engine import Execution
from durable.core.entity import Entity, is_entity_id
from durable.core.errors import (
    CorruptHistoryError,
    DurableError,
    NotRegisteredError,
    StoreError,
    StoreFullError,
)
from durable.core.events import (
    ExecutionRewound,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    InboundEvent,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    orchestration_events,
)
from durable.core.functions import Registry
from durable.core.payload import DEFAULT_MAX_PAYLOAD_BYTES, PayloadCodec
from durable.limits import ActivityLimit
from durable.store.base import (
    ActivityResult,
    ActivityTake,
    ActivityWorkItem,
    Notifier,
    OrchestrationCommit,
    OrchestrationWorkItem,
    Store,
)
from durable.store.flow import flow_holder

log = logging.getLogger("durable.worker")
decisions_log = logging.getLogger("durable.worker.decisions")
"""At DEBUG, one record per committed decision, with `instance_id`, `execution_id`,
`worker`, `claimed_at` and `committing_at` (wall-clock seconds) as attributes: the span in
which this worker alone held the instance (tests check that no two spans overlap)."""


@dataclass(slots=True)
class _Blocked:
    attempts: int


class Worker:
    """Runs registered orchestrators and activities for the instances in `store`.

    Use it inside a running event loop with `async with Worker(...)`, or from plain code
    with `start_in_thread()` and `stop()`.

    Args:
        store: where the work is; several workers may share it.
        orchestrators: orchestrator functions to register under their names.
        activities: activity functions (plain or async) to register under their names.
        max_concurrent_activities: activities running at once in this worker.
        max_concurrent_orchestrations: instances decided per batch (one group commit).
        max_payload_bytes: the cap on any encoded payload.
        engine_options: history limits.
        cache_size: live orchestrations kept between decisions (sticky execution).
        lease_seconds: how long a claim lasts unless renewed.
        poll_interval: the longest sleep between looks for work another process created.
        shutdown_grace: seconds running activities get to finish when the worker stops.
        limits: concurrency and rate limits on activities, shared through the store with
            every other worker that has the same limits.
    """

    def __init__(
        self,
        store: Store,
        *,
        orchestrators: Iterable[Callable[..., Any]] = (),
        activities: Iterable[Callable[..., Any]] = (),
        entities: Iterable[Entity] = (),
        max_concurrent_activities: int = 64,
        max_concurrent_orchestrations: int = 64,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        engine_options: EngineOptions | None = None,
        cache_size: int = 2048,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        shutdown_grace: float = 30.0,
        limits: Iterable[ActivityLimit] = (),
    ) -> None:
        if max_concurrent_activities < 1 or max_concurrent_orchestrations < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.store = store
        self.id = f"worker-{uuid.uuid4().hex[:12]}"
        self._registry = Registry()
        for fn in orchestrators:
            self._registry.add_orchestrator(fn)
        for fn in activities:
            self._registry.add_activity(fn)
        for entity in entities:
            self._registry.add_entity(entity)
        self._limits: dict[str, ActivityLimit] = {}
        for limit in limits:
            self.add_limit(limit)
        self._max_activities = max_concurrent_activities
        self._batch = max_concurrent_orchestrations
        self._codec = PayloadCodec(max_payload_bytes)
        self._options = engine_options or EngineOptions()
        self._cache: OrderedDict[str, Execution] = OrderedDict()
        self._cache_size = cache_size
        self._lease = lease_seconds
        self._poll = poll_interval
        self._grace = shutdown_grace
        self._blocked: dict[str, _Blocked] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._reserved = 0
        """Activity slots held for claims and commits in flight (what they lease runs)."""
        self._results: list[ActivityResult] = []
        self._recording: list[ActivityResult] = []
        self._results_ready: asyncio.Event | None = None
        self._slot_free: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._deciding: set[str] = set()  # entities whose operations run now
        # Instances decided here whose decision is not written yet: their executions in
        # memory are ahead of the store, so no decision on results is made on top of them.
        self._unwritten: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    # -- registration ----------------------------------------------------------------

    def add_orchestrator(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an orchestrator (a generator function); returns its name.

        Raises:
            ValueError: the name is taken, or `fn` is a lambda without `name`.
            TypeError: `fn` is an `async def` function.
        """
        return self._registry.add_orchestrator(fn, name)

    def add_activity(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an activity (plain or `async def`); returns its name."""
        return self._registry.add_activity(fn, name)

    def add_entity(self, fn: Entity, name: str | None = None) -> str:
        """Register an entity (a function `(ctx, input)` or a `DurableEntity` class);
        returns its name, lowercase."""
        return self._registry.add_entity(fn, name)

    def add_limit(self, limit: ActivityLimit) -> None:
        """Put an activity under a concurrency or rate limit (one limit per activity).

        Raises:
            ValueError: the activity already has a limit.
        """
        if limit.activity in self._limits:
            raise ValueError(f"activity {limit.activity!r} already has a limit")
        self._limits[limit.activity] = limit

    # -- life cycle ------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Start working in the running event loop."""
        if self._tasks:
            raise RuntimeError("the worker is already running")
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._results_ready = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=min(self._max_activities, 64), thread_name_prefix="durable-activity"
        )
        self._tasks = [
            asyncio.create_task(
                self._guard(self._orchestration_loop), name="durable-orchestrations"
            ),
            asyncio.create_task(self._guard(self._activity_loop), name="durable-activities"),
            asyncio.create_task(self._guard(self._result_loop), name="durable-results"),
            asyncio.create_task(self._guard(self._renew_loop), name="durable-leases"),
        ]

    async def shutdown(self) -> None:
        """Stop claiming, let running activities finish within the grace period, release."""
        if not self._tasks or self._stopping is None:
            return
        self._stopping.set()
        self.store.orchestration_work.notify()
        self.store.activity_work.notify()
        if self._running:
            _, late = await asyncio.wait(list(self._running.values()), timeout=self._grace)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late)
        assert self._results_ready is not None
        self._results_ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_results(give_up_after=self._grace)
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()

    def start_in_thread(self) -> None:
        """Run the worker on its own event loop in a background thread."""
        if self._thread is not None:
            raise RuntimeError("the worker is already running")
        started = threading.Event()

        async def main() -> None:
            await self.start()
            started.set()
            assert self._stopping is not None
            await self._stopping.wait()
            await self.shutdown()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:  # reported by stop()
                self._thread_error = e
                started.set()

        self._thread = threading.Thread(target=run, name="durable-worker", daemon=True)
        self._thread.start()
        started.wait()
        if self._thread_error is not None:
            raise RuntimeError("the worker failed to start") from self._thread_error

    def stop(self) -> None:
        """Stop a worker started with `start_in_thread()` and wait for it to finish."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            if stopping is not None:
                stopping.set()  # inside the worker's own loop: `async with` finishes the job
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    async def _guard(self, loop_fn: Callable[[], Any]) -> None:
        # A loop must never die silently: log, back off, go on until stopped.
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except StoreError as e:  # busy or full: expected to pass; no traceback
                log.warning("worker loop %s: %s; retrying", getattr(loop_fn, "__name__", ""), e)
                await self._sleep(min(self._poll, 1.0))
            except Exception:
                log.exception("worker loop %s failed; retrying", getattr(loop_fn, "__name__", ""))
                await self._sleep(min(self._poll, 1.0))

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _idle(self, notifier: Notifier, seen: int, timers: bool = True) -> None:
        # `seen` is the notifier's version before the look for work that found nothing:
        # a notification that came during that look (or now) ends the wait at once.
        # Due times are the orchestrations' (timers, delayed starts): the activity loop
        # waits for a notification or the poll alone.
        timeout = self._poll
        wake = await self.store.next_wake_time(self.id) if timers else None
        if wake is not None:
            timeout = max(0.0, min(timeout, (wake - self.store.clock()).total_seconds()))
        assert self._stopping is not None
        if not self._stopping.is_set():
            await notifier.wait(timeout, since=seen)

    # -- orchestrations --------------------------------------------------------------

    async def _orchestration_loop(self) -> None:
        assert self._stopping is not None
        store = self.store
        while not self._stopping.is_set():
            seen = store.orchestration_work.version
            items = await store.claim_orchestrations(self.id, self._batch, self._lease)
            claimed_at = time.time()
            if not items:
                await self._idle(store.orchestration_work, seen)
                continue
            # Entities' batches run their operations in threads, side by side.
            decided = await asyncio.gather(
                *(self._try_decide(i) for i in items if is_entity_id(i.instance_id))
            )
            for item in items:
                if not is_entity_id(item.instance_id):
                    decided.append(await self._try_decide(item))
            trouble = any(d is False for d in decided)
            commits = [c for c in decided if isinstance(c, OrchestrationCommit)]
            if commits:
                trouble |= bool(await self._commit(commits, claimed_at))
            if trouble:
                await self._sleep(self._poll)

    async def _commit(
        self, commits: list[OrchestrationCommit], claimed_at: float = 0.0
    ) -> list[OrchestrationCommit]:
        """Commit the decisions together; those the store failed to write (none of them
        was written).

        Instances whose commit failed stay leased to this worker, which claims them again
        at once (a release could fail the same way), and decides them afresh.
        """
        committing_at = time.time()
        # The activities these decisions schedule run here at once, as many as there are
        # free slots: leased in the commit, they need no claim (nor a wait for one).
        take = None
        running = self._stopping is not None and not self._stopping.is_set()
        if running and any(c.activities for c in commits):
            # (a finished activity keeps its slot until its result is recorded: results
            # recorded here hand theirs on to the activities that follow them)
            free = self._free_slots() + sum(len(c.results) for c in commits)
            if free > 0:
                take = ActivityTake(owner=self.id, limit=free, lease_seconds=self._lease)
                self._reserved += free
        try:
            outcomes = await self.store.commit_orchestrations(commits, take=take)
        except StoreError as e:
            if isinstance(e, StoreFullError) and len(commits) > 1:
                # One large decision may be what does not fit: the others may.
                return [f for c in commits for f in await self._commit([c], claimed_at)]
            log.warning("could not commit %d decisions (%s); retrying", len(commits), e)
            for commit in commits:
                self._cache.pop(commit.item.instance_id, None)
            return commits
        finally:
            self._unwritten.difference_update(c.item.instance_id for c in commits)
            if take is not None:
                self._reserved -= take.limit
                if self._slot_free is not None:
                    self._slot_free.set()
        if take is not None and take.items:
            if self._stopping is None or self._stopping.is_set():  # others may run them
                await self.store.abandon_activities(take.items)
            else:
                self._start_activities(take.items)
        traced = decisions_log.isEnabledFor(logging.DEBUG)
        for commit, outcome in zip(commits, outcomes, strict=True):
            if outcome is not None:
                # (a decision on results is expected to meet a busy instance, or one
                # another worker moved on, at times: its results wait as messages)
                level = logging.DEBUG if commit.results else logging.WARNING
                log.log(level, "commit for %s rejected: %s", commit.item.instance_id, outcome)
                self._cache.pop(commit.item.instance_id, None)
            elif traced:
                item = commit.item
                decisions_log.debug(
                    "committed %s",
                    item.instance_id,
                    extra={
                        "instance_id": item.instance_id,
                        "execution_id": item.execution_id,
                        "worker": self.id,
                        "claimed_at": claimed_at,
                        "committing_at": committing_at,
                    },
                )
        return []

    async def _try_decide(self, item: OrchestrationWorkItem) -> OrchestrationCommit | bool:
        """The decision's commit; True if there is none to write, False if the store failed
        us (the claim is ours: it is decided again)."""
        try:
            commit = await self._decide(item)
        except StoreError as e:
            log.warning("orchestration %s: the store failed (%s); retrying", item.instance_id, e)
            self._cache.pop(item.instance_id, None)
            return False
        return True if commit is None else commit

    async def _decide(self, item: OrchestrationWorkItem) -> OrchestrationCommit | None:
        iid = item.instance_id
        if is_entity_id(iid):
            state = await self.store.get_state(iid) if item.history_length else None
            stored = state.serialized_output if state is not None else None
            # The operations may take long (an agent's model calls): they run in a thread,
            # and the entity's lease is renewed meanwhile.
            self._deciding.add(iid)
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor,
                    decide_entity,
                    item,
                    stored,
                    self._registry,
                    self._codec,
                    self.store.clock(),
                )
            finally:
                self._deciding.discard(iid)
        execution = self._cache.pop(iid, None)
        rewinding = any(isinstance(m, ExecutionRewound) for m in item.messages)
        try:
            if (
                execution is None
                or rewinding
                or execution.execution_id != item.execution_id
                or execution.history_length != item.history_length
            ):
                history = (
                    await self.store.load_history(iid, item.execution_id)
                    if item.history_length
                    else []  # a new execution: nothing to read
                )
                if len(history) != item.history_length:
                    # The store moved on since the claim; give it back to be claimed afresh.
                    await self.store.abandon_orchestration(item, 0.0, None)
                    return None
                execution = Execution(self._registry.orchestrator, self._codec, self._options)
                execution.replay(history, rewinding=rewinding)
            commit = self._step(item, execution)
        except Exception as e:  # non-determinism, or a bug: block the instance, lose nothing
            if isinstance(e, StoreError) and not isinstance(e, CorruptHistoryError):
                raise  # the store's trouble, not the code's
            stop = next((m for m in item.messages if isinstance(m, ExecutionTerminated)), None)
            if stop is not None:  # ...but a blocked instance can still be terminated
                self._blocked.pop(iid, None)
                return await terminate_blocked(self.store, item, stop)
            await self._block(item, e)
            return None
        self._blocked.pop(iid, None)
        if not execution.is_finished:
            self._keep(iid, execution)
        return commit

    def _keep(self, iid: str, execution: Execution) -> None:
        self._cache[iid] = execution
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _step(
        self,
        item: OrchestrationWorkItem,
        execution: Execution,
        results: tuple[ActivityResult, ...] = (),
    ) -> OrchestrationCommit:
        # A timer is never seen to fire early, even by a worker whose clock is behind.
        fired = [m.fire_at for m in item.messages if isinstance(m, TimerFired)]
        now = max([self.store.clock(), *fired])
        events = [OrchestratorStarted(timestamp=now), *orchestration_events(item.messages)]
        attributes: tracing.Attributes = {
            "durable.instance_id": item.instance_id,
            "durable.events": len(events),
        }
        name, trace = execution.name, execution.trace
        start = (
            None
            if name
            else next((m for m in item.messages if isinstance(m, ExecutionStarted)), None)
        )
        if start is not None:  # its first decision: the start is among the messages
            name, trace = start.name, start.trace
        with tracing.step(f"orchestration {name}", trace, "internal", attributes,
                          detached=True) as step:  # fmt: skip
            decision = execution.step(events)
            step.set("durable.status", decision.status.value)
            self._unwritten.add(item.instance_id)
            return commit_for(item, execution, decision, now, results, trace=step.traceparent)

    async def _recall(self, batch: Sequence[ActivityResult]) -> dict[str, Execution]:
        """Load and replay the orchestrations that results are for and that this worker
        does not have in memory (another worker decided them last, or the cache let them
        go), so that it decides on the results at once: a history read, where a result
        sent as a message would cost the decider a claim, and its next activity a trip
        through the queue. One that cannot be loaded or replayed is left out: its results
        go as messages, and the usual path deals with it."""
        loaded: dict[str, Execution] = {}

        async def load(iid: str, execution_id: str) -> None:
            try:
                history = await self.store.load_history(iid, execution_id)
                execution = Execution(self._registry.orchestrator, self._codec, self._options)
                execution.replay(history)
            except Exception:
                log.debug("orchestration %s: could not load it for results", iid, exc_info=True)
                return
            if history and not execution.is_finished:
                loaded[iid] = execution

        missing = {
            r.item.instance_id: r.item.execution_id
            for r in batch
            if r.item.instance_id not in self._unwritten
            and (
                (e := self._cache.get(r.item.instance_id)) is None
                or e.execution_id != r.item.execution_id
            )
        }
        await asyncio.gather(*(load(i, e) for i, e in missing.items()))
        return loaded

    def _decide_on_results(
        self, batch: list[ActivityResult], loaded: dict[str, Execution]
    ) -> list[OrchestrationCommit]:
        """Decide at once on the results of instances this worker has in memory (or
        `loaded`), taking those results out of `batch`: the store writes each decision with
        its results, in one transaction, if the instance is idle and unchanged (see
        `OrchestrationCommit`)."""
        mine: dict[str, list[ActivityResult]] = {}
        seen: set[int] = set()  # (one result per activity: the first)
        for result in batch:
            done = result.item
            execution = loaded.get(done.instance_id, self._cache.get(done.instance_id))
            mine_now = execution is not None and execution.execution_id == done.execution_id
            if mine_now and done.id not in seen and done.instance_id not in self._unwritten:
                seen.add(done.id)
                mine.setdefault(done.instance_id, []).append(result)
        if not mine:
            return []
        commits: list[OrchestrationCommit] = []
        for iid, results in mine.items():
            cached = self._cache.pop(iid, None)
            execution = loaded.get(iid, cached)
            assert execution is not None
            item = OrchestrationWorkItem(
                instance_id=iid,
                execution_id=execution.execution_id,
                name=execution.name,
                history_length=execution.history_length,
                messages=tuple(r.event for r in results),
                message_ids=(),
                lease_owner=self.id,
            )
            try:
                commit = self._step(item, execution, tuple(results))
            except Exception:  # claimed as messages instead, it is decided (or blocked) anew
                log.debug("orchestration %s: deciding on results failed", iid, exc_info=True)
                mine[iid] = []
                continue
            if not execution.is_finished:
                self._keep(iid, execution)
            commits.append(commit)
        taken = {r.item.id for results in mine.values() for r in results}
        batch[:] = [r for r in batch if r.item.id not in taken]
        return commits

    async def _block(self, item: OrchestrationWorkItem, error: Exception) -> None:
        blocked = self._blocked.setdefault(item.instance_id, _Blocked(0))
        blocked.attempts += 1
        delay = min(60.0, 0.5 * 2 ** min(blocked.attempts, 8))
        log.error(
            "orchestration %s cannot go on (retrying in %.0fs): %s", item.instance_id, delay, error
        )
        await self.store.abandon_orchestration(item, delay, FailureDetails.from_exception(error))

    # -- activities ------------------------------------------------------------------

    async def _activity_loop(self) -> None:
        assert self._stopping is not None and self._slot_free is not None
        store = self.store
        while not self._stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            seen = store.activity_work.version
            self._reserved += free
            try:
                items = await store.claim_activities(self.id, free, self._lease)
            finally:
                self._reserved -= free
            if not items:
                await self._idle(store.activity_work, seen, timers=False)
                continue
            self._start_activities(items)

    def _free_slots(self) -> int:
        busy = len(self._running)
        if self.store.direct_results:
            # An activity holds its slot until its result is recorded with the decision
            # on it: the next activity of an orchestration under way gets it before new
            # work does. (Elsewhere a result is only queued: the slot is free at once.)
            busy += len(self._results) + len(self._recording)
        return self._max_activities - busy - self._reserved

    def _start_activities(self, items: Sequence[ActivityWorkItem]) -> None:
        for item in items:
            task = asyncio.create_task(self._run_activity(item))
            self._running[item.id] = task
            task.add_done_callback(functools.partial(self._activity_done, item.id))

    def _activity_done(self, activity_id: int, _: object) -> None:
        self._running.pop(activity_id, None)
        assert self._slot_free is not None
        self._slot_free.set()

    async def _run_activity(self, item: ActivityWorkItem) -> None:
        attributes: tracing.Attributes = {
            "durable.instance_id": item.instance_id,
            "durable.attempt": item.attempt,
        }
        with tracing.step(
            f"activity {item.name}", item.trace, "consumer", attributes, detached=True
        ) as step:
            event = await self._attempt(item, step)
        if event is None:
            return  # deferred: it waits in the store, for any worker
        self._running.pop(item.id, None)  # (its slot is the result's until it is recorded)
        self._results.append(ActivityResult(item=item, event=event))
        assert self._results_ready is not None
        self._results_ready.set()

    async def _attempt(self, item: ActivityWorkItem, step: tracing.Step) -> InboundEvent | None:
        """Run the activity once: its TaskCompleted or TaskFailed event (None: deferred by
        its limit)."""
        now = self.store.clock
        limit = self._limits.get(item.name)
        admitted: ActivityLimit | None = None
        result: Any = None
        try:
            spec = self._registry.activity(item.name)
            value = self._codec.decode(
                item.input, spec.input_type, f"input of activity {item.name!r}"
            )
            if limit is not None:
                if not await self._admit(item, limit, value):
                    return None
                admitted = limit
            streams = ActivityStreams(self.store, self._codec, item, asyncio.get_running_loop())
            ctx = ActivityContext(item.instance_id, item.task_id, item.attempt, item.name, streams)
            args = (ctx, value) if spec.takes_input else (ctx,)
            if spec.is_async:
                result = await spec.fn(*args)
            else:  # (in a thread, with this context: its span is the current one there)
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, spec.fn, *args)
                result = await loop.run_in_executor(self._executor, call)
            encoded = self._codec.encode(result, f"result of activity {item.name!r}")
            return TaskCompleted(timestamp=now(), task_id=item.task_id, result=encoded)
        except asyncio.CancelledError:
            await self.store.abandon_activities([item])
            raise
        except Exception as e:
            if not isinstance(e, DurableError | NotRegisteredError):
                log.debug("activity %s (%s) failed", item.name, item.instance_id, exc_info=True)
            step.fail(e)
            return TaskFailed(
                timestamp=now(), task_id=item.task_id, failure=FailureDetails.from_exception(e)
            )
        finally:
            if admitted is not None:
                await self._release(item, admitted, result)

    async def _admit(self, item: ActivityWorkItem, limit: ActivityLimit, value: Any) -> bool:
        """Take a place in the activity's budget; False if it was deferred instead."""
        try:
            wait = await self.store.acquire_flow(
                item.name,
                flow_holder(item.id, item.lease_owner),
                limit.flow,
                limit.tokens_for(value),
                self._lease,
            )
        except StoreError as e:
            log.warning("activity %s: could not check its limit (%s); retrying", item.name, e)
            wait = min(self._poll, 1.0)
        if wait <= 0:
            return True
        with contextlib.suppress(StoreError):  # if this fails, the lease runs out instead
            await self.store.abandon_activities([item], retry_after=wait)
        asyncio.get_running_loop().call_later(wait, self.store.activity_work.notify)
        return False

    async def _release(self, item: ActivityWorkItem, limit: ActivityLimit, result: Any) -> None:
        try:
            used = limit.tokens_used(result) if result is not None else None
        except Exception:
            log.warning("activity %s: its usage function failed", item.name, exc_info=True)
            used = None
        try:
            await self.store.release_flow(item.name, flow_holder(item.id, item.lease_owner), used)
        except StoreError as e:  # the slot is freed when its lease runs out
            log.warning("activity %s: could not release its limit (%s)", item.name, e)

    async def _result_loop(self) -> None:
        # Completions that finish together are committed together (group commit).
        assert self._stopping is not None and self._results_ready is not None
        while not self._stopping.is_set():
            await self._results_ready.wait()
            self._results_ready.clear()
            await self._flush_results()

    async def _flush_results(self, give_up_after: float | None = None) -> None:
        # A store that cannot take the results now (busy, full) gets them later; after
        # `give_up_after` seconds they are dropped and the activities run again elsewhere.
        delay = 0.05
        deadline = None if give_up_after is None else time.monotonic() + give_up_after
        while self._results:
            batch, self._results = self._results, []
            self._recording = list(batch)  # (all of it, while any of it is recorded)
            try:
                await self._record(batch)
            except StoreError as e:
                self._results[:0] = batch
                if deadline is None and self._stopping is not None and self._stopping.is_set():
                    return  # shutdown makes the last attempts
                if deadline is not None and time.monotonic() > deadline:
                    log.error("dropping %d activity results: %s", len(batch), e)
                    self._results.clear()
                    return
                log.warning("could not record %d activity results (%s); retrying", len(batch), e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(self._poll, 0.05) * 4)
            finally:
                self._recording = []
                if self._slot_free is not None:
                    self._slot_free.set()

    async def _record(self, batch: list[ActivityResult]) -> None:
        """Record results together; when the store is full, one by one (some may fit).

        Raises:
            StoreError: not everything could be recorded; `batch` keeps what was not.
        """
        if self.store.direct_results:
            decided = self._decide_on_results(batch, await self._recall(batch))
            if decided:
                for failed in await self._commit(decided, time.time()):
                    batch.extend(failed.results)  # (nothing of them was written)
        if not batch:
            return
        try:
            await self.store.complete_activities(batch)
            batch.clear()
        except StoreFullError:
            if len(batch) == 1:
                raise
            for result in list(batch):
                with contextlib.suppress(StoreFullError):
                    await self.store.complete_activities([result])
                    batch.remove(result)
            if batch:
                raise

    async def _renew_loop(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            await self._sleep(self._lease / 3)
            # Finished activities hold their leases too until their results are recorded
            # (a store slow to take them must not let another worker run them again).
            held = [*self._running, *(r.item.id for r in (*self._results, *self._recording))]
            deciding = list(self._deciding)
            if held or deciding:
                await self.store.renew_leases(self.id, deciding, held, self._lease)
