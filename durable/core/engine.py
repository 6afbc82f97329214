"""The replay engine: history + new events + orchestrator -> decision. Pure and deterministic."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, assert_never

import msgspec

from durable.core.commands import (
    TASK_COMMAND_EVENTS,
    Command,
    CreateTimer,
    LockEntities,
    ScheduleActivity,
    StartChildOrchestration,
    TaskCommand,
    TaskCommandEvent,
    UnlockEntities,
    command_event,
    describe_arguments,
    describe_command,
    describe_event,
    same_call,
)
from durable.core.context import OrchestrationContext
from durable.core.decision import Decision, EngineOptions, Rerun
from durable.core.entity import CriticalSection
from durable.core.errors import (
    HistoryTooLargeError,
    InvalidTaskError,
    NonDeterminismError,
    PayloadError,
)
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EntityLockGranted,
    EntityLockRequested,
    EntityOperationCalled,
    EntityOperationCompleted,
    EntityOperationFailed,
    EntityOperationSignaled,
    EntityUnlockSent,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    OrchestratorStarted,
    ParentInstance,
    PatchApplied,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from durable.core.functions import FunctionSpec, _get
from durable.core.history import cancelled_events, ended_by_history_cap
from durable.core.payload import PayloadCodec
from durable.core.state import OrchestrationStatus
from durable.core.tasks import (
    CancellableTask,
    CompletableTask,
    CompositeTask,
    RetryableTask,
    RetryPolicy,
    Task,
    TimerTask,
    fresh,
    invalid_yield,
    sender,
    thrower,
)
from durable.core.waiting import Finish, HeldLocks, Retry, Waiting

_MAX_BAD_YIELDS = 100  # an orchestrator that swallows InvalidTaskError forever is failed
_EVENT_OVERHEAD = 64  # rough bytes per event beyond its payloads, for the size estimate


class Execution:
    """One execution of one orchestration, kept alive between decisions.

    Feed it the recorded history once with `replay()`, then each batch of new events
    with `step()`; a fresh `Execution` given the same events decides the same.

    Args:
        orchestrators: the registered orchestrators by name.
        codec: encodes and decodes payloads.
        options: limits.
    """

    def __init__(
        self,
        orchestrators: Mapping[str, FunctionSpec] | Callable[[str], FunctionSpec],
        codec: PayloadCodec | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        if callable(orchestrators):
            self._lookup = orchestrators
        else:  # an unknown name must fail with NotRegisteredError, not a bare KeyError
            table = orchestrators
            self._lookup = lambda name: _get(table, name, "orchestrator", "add_orchestrator")
        self.codec = codec or PayloadCodec()
        self.options = options or EngineOptions()
        self.strict = False
        """Also compare recorded calls' arguments (inputs, timer times): durable.testing."""
        self.instance_id = ""
        self.execution_id = ""
        self.name = ""
        self.parent: ParentInstance | None = None
        self.trace: str | None = None  # (where its work is traced: `durable.tracing`)
        self._children: dict[int, str] = {}
        self.now = datetime.min
        self.replaying = False
        self.history_length = 0
        self.history_bytes = 0
        self.custom_status: str | None = None
        self.ctx = OrchestrationContext(self)
        self._started = False
        self._gen: Generator[Any, Any, Any] | None = None
        self._awaiting: Task[Any] | None = None
        self._next_id = 0
        self._pending: dict[int, TaskCommand] = {}
        self._open: dict[int, Waiting] = {}
        self._waiters: dict[str, deque[tuple[CancellableTask[Any], object]]] = {}
        self._buffered: dict[str, deque[tuple[int, EventRaised]]] = {}
        self._arrivals = 0
        self._suspended = False
        self._held: list[tuple[HistoryEvent, int]] = []  # events held while suspended
        self._patches_recorded: set[str] = set()
        self._patches: dict[str, bool] = {}
        self._new_patches: list[str] = []
        self._continue_as_new: tuple[str | None, bool] | None = None
        self._finish: Finish | None = None
        self._finish_recorded = False  # the end event is in history (replayed or decided)
        self._reruns: list[Rerun] = []
        self._cancels: tuple[int, ...] = ()  # what the rewind being stepped in cancels
        self._rewinding = False  # the next step brings the rewind
        self._releasing = False  # applying events held while suspended
        self._index = -1  # position of the event being replayed
        self._tracking = False  # note which failure events end the execution
        self._raised_at: dict[int, tuple[BaseException, tuple[int, ...]]] = {}
        self._fatal: set[int] = set()
        self.locks: HeldLocks | None = None
        """The entity locks of the critical section asked for or entered, if any."""

    @property
    def is_finished(self) -> bool:
        """True once the execution completed, failed, was terminated or continued as new."""
        return self._finish is not None

    @property
    def _accepting(self) -> bool:
        # After the end, or after continue_as_new() was called, new work is not started.
        return self._finish is None and self._continue_as_new is None

    def awaited_events(self) -> list[str]:
        """Names (lower-cased) of the external events the orchestrator waits for now."""
        return [name for name, waiters in self._waiters.items() if waiters]

    def open_children(self) -> list[str]:
        """Instance ids of child orchestrations started and not yet finished."""
        return [c for t, c in self._children.items() if t in self._open]

    @property
    def continue_as_new_suggested(self) -> bool:
        o = self.options
        return (
            self.history_length >= o.suggest_continue_as_new_events
            or self.history_bytes >= o.suggest_continue_as_new_bytes
        )

    # -- driving -------------------------------------------------------------------------

    def replay(self, history: Sequence[HistoryEvent], *, rewinding: bool = False) -> None:
        """Re-run the orchestrator against events already recorded.

        Args:
            history: the recorded events.
            rewinding: an `ExecutionRewound` event is about to be stepped in: replay as
                if it followed `history` (its failed end does not happen).

        Raises:
            NonDeterminismError: the code no longer does what the history records.
        """
        self._patches_recorded.update(e.patch_id for e in history if isinstance(e, PatchApplied))
        cancelled = cancelled_events(history)
        if rewinding:
            self._cancels = self._rewind_plan(history, cancelled)
            self._rewinding = True
            cancelled |= set(self._cancels)
        self.replaying = True
        try:
            for index, event in enumerate(history):
                self._count(event)
                if index not in cancelled:
                    self._index = index
                    self._apply(event)
        finally:
            self.replaying = False

    def _rewind_plan(self, history: Sequence[HistoryEvent], cancelled: set[int]) -> tuple[int, ...]:
        # Replay once on the side, noting which failure events the orchestrator let
        # through to its end: with its FAILED end, those are what a rewind cancels.
        end = next(
            (
                i
                for i in range(len(history) - 1, -1, -1)
                if isinstance(history[i], ExecutionCompleted) and i not in cancelled
            ),
            None,
        )
        last = history[end] if end is not None else None
        if end is None or not isinstance(last, ExecutionCompleted) or last.status != "FAILED":
            return ()
        probe = Execution(self._lookup, self.codec, self.options)
        probe._tracking = True
        probe.replay(history[:end])
        return (*sorted(probe._fatal), end)

    def step(self, new_events: Sequence[HistoryEvent]) -> Decision:
        """Apply events not yet recorded and decide what to do next.

        After this returns, the decision's events count as recorded: the caller must
        commit them, or drop this `Execution` and replay from the store.

        Raises:
            NonDeterminismError: the code no longer does what the history records.
        """
        applied: list[HistoryEvent] = []
        # A rewind's batch is recorded whole even if the replay ended the execution again
        # (the fix is not deployed yet): the rewind then cancels what it names, and the
        # new end follows it, for a later rewind to cancel in turn.
        rewinding, self._rewinding = self._rewinding, False
        for event in new_events:
            finish = self._finish
            if finish is not None and not rewinding:
                if finish.status == "FAILED" or (
                    finish.status is None and isinstance(event, ExecutionTerminated)
                ):
                    # Kept in history: what came with a failure is there for a rewind; a
                    # terminate beats a continue-as-new decided in the same step.
                    applied.append(event)
                    self._count(event)
                    self._apply(event)
                elif finish.save_events and isinstance(event, EventRaised):
                    finish.carried.append(event)
                continue
            if isinstance(event, ExecutionRewound):  # recorded with what it cancels
                rewound = msgspec.structs.replace(event, cancels=self._cancels)
                self._cancels = ()
                applied.append(rewound)
                self._count(rewound)
                self._apply(rewound)
                continue
            applied.append(event)
            self._count(event)
            self._apply(event)
        return self._decide(applied)

    def _decide(self, applied: list[HistoryEvent]) -> Decision:
        commands: list[Command] = []
        events = applied + [PatchApplied(timestamp=self.now, patch_id=p) for p in self._new_patches]
        if self._finish is None and (
            self.history_length + len(events) - len(applied) + len(self._pending) + 1
            > self.options.max_history_events
        ):
            # (a release already asked for still goes out)
            self._pending = {
                k: c for k, c in self._pending.items() if isinstance(c, UnlockEntities)
            }
            self._fail(
                HistoryTooLargeError(
                    f"the history would exceed {self.options.max_history_events:,} events; "
                    "call ctx.continue_as_new(...) when ctx.is_continue_as_new_suggested"
                )
            )
        finish = self._finish
        started = list(self._pending.values())
        if finish is not None and finish.status == "TERMINATED":  # only locks are released
            started = [c for c in started if isinstance(c, UnlockEntities)]
        commands.extend(started)
        events.extend(command_event(c, self.now) for c in started)
        self._pending.clear()
        self._new_patches.clear()
        status = OrchestrationStatus.SUSPENDED if self._suspended else OrchestrationStatus.RUNNING
        output = failure = None
        if finish is not None:
            end_command, end_event, status = finish.end(self.now)
            if finish.status is not None:
                output, failure = finish.output, finish.failure
            # A step after the end (a late message) must not record or command the end again.
            if not self._finish_recorded:
                self._finish_recorded = True
                commands.append(end_command)
                events.append(end_event)
        for event in events[len(applied) :]:
            self._count(event)
        reruns, self._reruns = tuple(self._reruns), []
        return Decision(
            events=tuple(events),
            commands=tuple(commands),
            status=status,
            custom_status=self.custom_status,
            output=output,
            failure=failure,
            reruns=reruns,
        )

    def _count(self, event: HistoryEvent) -> None:
        self.history_length += 1
        size = _EVENT_OVERHEAD
        for attr in ("input", "result"):
            value = getattr(event, attr, None)
            if isinstance(value, str):
                size += len(value)
        self.history_bytes += size

    # -- applying events -----------------------------------------------------------------

    def _apply(self, event: HistoryEvent) -> None:
        if self._finish is not None:
            self._apply_after_end(event, self._finish)
            return
        if self._suspended and not isinstance(
            event,
            ExecutionResumed
            | ExecutionTerminated
            | ExecutionSuspended
            | OrchestratorStarted
            | PatchApplied
            | TaskScheduled
            | TimerCreated
            | ChildOrchestrationCreated
            | EventSent
            | EntityOperationCalled
            | EntityOperationSignaled
            | EntityLockRequested
            | EntityUnlockSent
            | ExecutionCompleted  # a recorded end (the history cap) is checked, never held
            | ContinuedAsNew,
        ):
            self._held.append((event, self._index))
            return
        match event:
            case ExecutionStarted():
                self._start(event)
            case OrchestratorStarted(timestamp=t):
                self.now = t
            case (
                TaskScheduled()
                | TimerCreated()
                | ChildOrchestrationCreated()
                | EventSent()
                | EntityOperationCalled()
                | EntityOperationSignaled()
                | EntityLockRequested()
                | EntityUnlockSent()
            ):
                self._match_recorded(event)
            case (
                TaskCompleted(task_id=i, result=r)
                | ChildOrchestrationCompleted(task_id=i, result=r)
                | EntityOperationCompleted(task_id=i, result=r)
            ):
                self._complete(i, r)
            case (
                TaskFailed(task_id=i, failure=f)
                | ChildOrchestrationFailed(task_id=i, failure=f)
                | EntityOperationFailed(task_id=i, failure=f)
            ):
                self._failed(i, f)
            case TimerFired(task_id=i):
                self._timer_fired(i)
            case EntityLockGranted(task_id=i):
                self._granted(i)
            case EventRaised():
                self._deliver(event)
            case ExecutionSuspended():
                self._suspended = True
            case ExecutionResumed():
                self._suspended = False
                held, self._held = self._held, []
                here, self._releasing = self._index, True
                try:
                    for e, index in held:
                        self._index = index  # where it was recorded, for a rewind's plan
                        self._apply(e)
                finally:
                    self._index, self._releasing = here, False
            case ExecutionTerminated(output=o):
                self._finish = Finish("TERMINATED", output=o)
                self._close()
            case ExecutionRewound():
                if not self.replaying:  # what was awaited when it failed must run again
                    self._reruns = [
                        w.command
                        for i, w in sorted(self._open.items())
                        if i not in self._pending  # new calls are scheduled as usual
                        and isinstance(
                            w.command, ScheduleActivity | CreateTimer | StartChildOrchestration
                        )
                    ]
            case PatchApplied():
                pass  # collected before replay started
            case ContinuedAsNew() | ExecutionCompleted():
                self._check_recorded_finish(event)
            case _:
                assert_never(event)
        self._resume()

    def _apply_after_end(self, event: HistoryEvent, finish: Finish) -> None:
        if isinstance(event, TASK_COMMAND_EVENTS):
            self._match_recorded(event)  # fire-and-forget work started just before the end
        elif finish.status is None and not self._finish_recorded:
            # Continuing as new in this very step: a terminate wins; events are carried.
            if isinstance(event, ExecutionTerminated):
                self._finish = Finish("TERMINATED", output=event.output)
            elif isinstance(event, EventRaised) and finish.save_events and self._releasing:
                finish.carried.append(event)
            else:
                self._check_recorded_finish(event)
        else:
            self._check_recorded_finish(event)

    def _start(self, event: ExecutionStarted) -> None:
        if self._started:
            raise NonDeterminismError("the history holds a second ExecutionStarted event")
        self._started = True
        self.instance_id = event.instance_id
        self.execution_id = event.execution_id
        self.name = event.name
        self.parent, self.trace = event.parent, event.trace
        if self.now == datetime.min:
            self.now = event.timestamp
        try:
            spec = self._lookup(event.name)
            value = self.codec.decode(
                event.input, spec.input_type, f"input of orchestrator {spec.name!r}"
            )
            result = spec.fn(self.ctx, value) if spec.takes_input else spec.fn(self.ctx)
        except Exception as e:  # the orchestrator's own error, or an unknown name
            self._fail(e)
            return
        if isinstance(result, Generator):
            self._gen = result
            self._advance(lambda: next(result))
        else:
            self._return(result)

    def _match_recorded(self, event: TaskCommandEvent) -> None:
        command = self._pending.pop(event.task_id, None)
        recorded = describe_event(event)
        if command is None:
            raise NonDeterminismError(
                f"a previous execution called {recorded} with sequence number {event.task_id}, "
                "but the current execution does not make that call at this point; the code "
                "changed in a way that breaks instances already running: guard the change "
                "with ctx.is_patched(...)"
            )
        if not same_call(command, event):
            raise NonDeterminismError(
                f"a previous execution called {recorded} with sequence number {event.task_id}, "
                f"but the current execution called {describe_command(command)} instead; guard "
                "the change with ctx.is_patched(...)"
            )
        if self.strict and command_event(command, event.timestamp) != event:
            now = command_event(command, event.timestamp)
            raise NonDeterminismError(
                f"a previous execution called {recorded} with sequence number {event.task_id} "
                f"and {describe_arguments(event)}, but the current execution passes "
                f"{describe_arguments(now)}; "
                "the orchestrator computed them from something other than its input, its "
                "history and ctx"
            )

    def _check_recorded_finish(self, event: HistoryEvent) -> None:
        if isinstance(event, OrchestratorStarted | EventRaised | PatchApplied):
            return
        finish = self._finish
        if finish is None and ended_by_history_cap(event):
            # The cap is the engine's decision, not the code's (and the cap may have changed
            # since): adopt the recorded end, as the decision that recorded it did.
            self._pending.clear()
            self._finish = Finish("FAILED", failure=event.failure)
            self._finish_recorded = True
            self._close()
            return
        expected = (
            "CONTINUED_AS_NEW"
            if finish is not None and finish.status is None
            else (finish.status if finish is not None else "RUNNING")
        )
        match event:
            case ContinuedAsNew():
                recorded = "CONTINUED_AS_NEW"
            case ExecutionCompleted(status=s):
                recorded = s
            case _:
                return
        if recorded != expected:
            raise NonDeterminismError(
                f"the history records that the orchestration ended as {recorded}, but the "
                f"current execution is {expected} at that point"
            )
        self._finish_recorded = True

    def _complete(self, task_id: int, result: str | None) -> None:
        waiting = self._open.pop(task_id, None)
        if waiting is None:
            return  # a late or duplicate message for a task no longer awaited
        try:
            value = self.codec.decode(result, waiting.result_type, f"result of {waiting.what}")
        except PayloadError as e:
            waiting.task.fail(
                f"{waiting.what} returned an unusable result: {e}", FailureDetails.from_exception(e)
            )
            self._track(waiting.task)
            return
        waiting.task.complete(value)

    def _failed(self, task_id: int, failure: FailureDetails) -> None:
        waiting = self._open.pop(task_id, None)
        if waiting is None:
            return
        retry = waiting.retry
        if retry is not None:
            delay = retry.policy.next_delay(retry.attempt, failure, retry.started_at, self.now)
            if delay is not None:
                timer_id = self._add(lambda i: CreateTimer(task_id=i, fire_at=self.now + delay))
                self._open[timer_id] = Waiting(
                    TimerTask(self.now + delay), retry_of=waiting, command=self._pending[timer_id]
                )
                return
        waiting.task.fail(
            f"{waiting.what} failed: {failure.error_type}: {failure.message}", failure
        )
        self._track(waiting.task)

    def _track(self, task: Task[Any]) -> None:
        # While planning a rewind: the event being replayed is what failed `task`.
        error = task._exception
        if self._tracking and error is not None:
            self._raised_at[id(error)] = (error, (self._index,))

    def _timer_fired(self, task_id: int) -> None:
        waiting = self._open.pop(task_id, None)
        if waiting is None:
            return
        again = waiting.retry_of
        if again is not None and again.retry is not None:
            again.retry.attempt += 1
            attempt = again.retry.attempt
            make = again.retry.make
            retry_id = self._add(lambda i: make(i, attempt))
            again.command = self._pending[retry_id]
            self._open[retry_id] = again
        else:
            waiting.task.complete(None)

    def _deliver(self, event: EventRaised) -> None:
        key = event.name.lower()
        waiters = self._waiters.get(key)
        if waiters:
            task, data_type = waiters.popleft()
            self._settle_event(task, data_type, event)
        else:
            self._arrivals += 1
            self._buffered.setdefault(key, deque()).append((self._arrivals, event))

    def _settle_event(
        self, task: CancellableTask[Any], data_type: object, event: EventRaised
    ) -> None:
        try:
            task.complete(
                self.codec.decode(event.input, data_type, f"data of event {event.name!r}")
            )
        except PayloadError as e:
            task.fail(
                f"event {event.name!r} carried unusable data: {e}", FailureDetails.from_exception(e)
            )

    # -- the generator -------------------------------------------------------------------

    def _resume(self) -> None:
        while (task := self._awaiting) is not None and task.is_complete and self._finish is None:
            self._awaiting = None
            gen = self._gen
            assert gen is not None
            error = task._exception
            if error is None:
                value = task._result
                self._advance(sender(gen, value))
            else:
                thrown = fresh(error)
                if self._tracking:
                    self._raised_at[id(thrown)] = (thrown, tuple(self._failures_in(task)))
                self._advance(thrower(gen, thrown))

    def _advance(self, resume: Callable[[], Any]) -> None:
        gen = self._gen
        assert gen is not None
        for _ in range(_MAX_BAD_YIELDS):
            try:
                yielded = resume()
            except StopIteration as stop:
                self._return(stop.value)
                return
            except Exception as e:
                if self._tracking:
                    self._note_fatal(e)
                self._fail(e)
                return
            if self._continue_as_new is not None:
                self._return(None)
                return
            if isinstance(yielded, Task):
                self._awaiting = yielded
                return
            resume = thrower(gen, invalid_yield(self.name, yielded))
        self._fail(InvalidTaskError(f"orchestrator {self.name!r} keeps yielding non-tasks"))

    def _failures_in(self, task: Task[Any]) -> set[int]:
        # The failure events of a failed task: for when_all, those of all its children.
        if isinstance(task, CompositeTask):
            return set().union(*(self._failures_in(t) for t in task._tasks))
        error = task._exception
        found = self._raised_at.get(id(error)) if error is not None else None
        return set(found[1]) if found is not None else set()

    def _note_fatal(self, error: BaseException) -> None:
        # The failure events behind the error that ends the orchestrator (as raised, or
        # as the cause or context of what it raised instead).
        seen: set[int] = set()
        chain: BaseException | None = error
        while chain is not None and id(chain) not in seen:
            seen.add(id(chain))
            found = self._raised_at.get(id(chain))
            if found is not None:
                self._fatal.update(found[1])
            chain = chain.__cause__ or chain.__context__

    def _return(self, value: Any) -> None:
        if self._continue_as_new is not None:
            new_input, save = self._continue_as_new
            carried: list[EventRaised] = []
            if save:
                arrived = [a for queue in self._buffered.values() for a in queue]
                carried = [e for _, e in sorted(arrived, key=lambda a: a[0])]
            self._finish = Finish(None, new_input=new_input, save_events=save, carried=carried)
        else:
            try:
                output = self.codec.encode(value, f"output of orchestrator {self.name!r}")
            except PayloadError as e:
                self._fail(e)
                return
            self._finish = Finish("COMPLETED", output=output)
        self._close()

    def _fail(self, error: BaseException) -> None:
        self._finish = Finish("FAILED", failure=FailureDetails.from_exception(error))
        self._close()

    def _close(self) -> None:
        gen, self._gen = self._gen, None
        self._awaiting = None
        if gen is not None:
            # A finally block that raises cannot change the outcome any more.
            with contextlib.suppress(Exception):
                gen.close()
        self.unlock()  # an end releases the locks held or asked for (a `with` block may have)

    # -- critical sections ---------------------------------------------------------------

    def lock(self, entities: tuple[str, ...]) -> CompletableTask[Any]:
        """Ask for the locks of `entities` (sorted); the task completes with the section."""
        task: CompletableTask[Any] = CompletableTask()
        if self._accepting:
            holder = f"{self.instance_id}/{self.execution_id}/{self._next_id}"
            task_id = self._add(lambda i: LockEntities(task_id=i, entities=entities, holder=holder))
            self._open[task_id] = Waiting(task, what="lock", command=self._pending[task_id])
            self.locks = HeldLocks(holder=holder, entities=entities, task_id=task_id)
        return task

    def _granted(self, task_id: int) -> None:
        waiting, locks = self._open.pop(task_id, None), self.locks
        if waiting is None or locks is None or locks.task_id != task_id:
            return  # (a grant for locks already released)
        locks.granted = True
        waiting.task.complete(CriticalSection(self.unlock))

    def unlock(self) -> None:
        """Release the locks held or asked for, if any (once)."""
        locks, self.locks = self.locks, None
        if locks is not None:
            entities, holder = locks.entities, locks.holder
            self._add(lambda i: UnlockEntities(task_id=i, entities=entities, holder=holder))

    # -- called by the context -----------------------------------------------------------

    def _add(self, make: Callable[[int], TaskCommand]) -> int:
        task_id = self._next_id
        self._next_id += 1
        command = self._pending[task_id] = make(task_id)
        if isinstance(command, StartChildOrchestration):
            self._children[task_id] = command.instance_id
        return task_id

    def add_command(self, make: Callable[[int], TaskCommand]) -> None:
        """Add a command that no task waits on (send_event)."""
        if self._accepting:
            self._add(make)

    def schedule(
        self,
        make: Callable[[int, int], TaskCommand],
        result_type: object,
        what: str,
        retry_policy: RetryPolicy | None,
    ) -> CompletableTask[Any]:
        """Add an activity or child orchestration command and return its task."""
        if retry_policy is None:
            task: CompletableTask[Any] = CompletableTask()
            retry = None
        else:
            task = RetryableTask(retry_policy, self.now)
            retry = Retry(retry_policy, self.now, make)
        if self._accepting:
            task_id = self._add(lambda i: make(i, 1))
            self._open[task_id] = Waiting(
                task, result_type, what, retry, command=self._pending[task_id]
            )
        return task

    def start_timer(self, fire_at: datetime) -> TimerTask:
        """Add a timer command and return its task."""
        timer = TimerTask(fire_at)
        if self._accepting:
            task_id = self._add(lambda i: CreateTimer(task_id=i, fire_at=fire_at))
            self._open[task_id] = Waiting(timer, what="timer", command=self._pending[task_id])
        return timer

    def wait_for_event(self, name: str, data_type: object) -> CancellableTask[Any]:
        """A task completed by the next event named `name` (buffered ones first)."""
        task: CancellableTask[Any] = CancellableTask()
        key = name.lower()
        buffered = self._buffered.get(key)
        if buffered:
            _, event = buffered.popleft()
            self._settle_event(task, data_type, event)
            return task
        waiters = self._waiters.setdefault(key, deque())
        entry = (task, data_type)
        waiters.append(entry)
        task._on_cancel = lambda: waiters.remove(entry)
        return task

    def request_continue_as_new(self, new_input: str | None, save_events: bool) -> None:
        self._continue_as_new = (new_input, save_events)

    def is_patched(self, patch_id: str) -> bool:
        decided = self._patches.get(patch_id)
        if decided is None:
            decided = patch_id in self._patches_recorded if self.replaying else True
            if decided and patch_id not in self._patches_recorded:
                self._patches_recorded.add(patch_id)
                self._new_patches.append(patch_id)
            self._patches[patch_id] = decided
        return decided


def replay(
    orchestrators: Mapping[str, FunctionSpec] | Callable[[str], FunctionSpec],
    history: Sequence[HistoryEvent],
    new_events: Sequence[HistoryEvent],
    *,
    codec: PayloadCodec | None = None,
    options: EngineOptions | None = None,
) -> tuple[Decision, Execution]:
    """Decide from scratch: replay `history`, then apply `new_events`.

    Returns:
        The decision, and the live execution to feed later events to with `step()`.
    """
    execution = Execution(orchestrators, codec, options)
    execution.replay(history)
    return execution.step(new_events), execution
