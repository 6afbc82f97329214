"""`check_determinism`: explore an orchestrator's runs with hypothesis; replay after every step."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import random
import secrets
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, assert_never

from durable.core.commands import (
    CallEntity,
    Command,
    CompleteOrchestration,
    ContinueAsNew,
    CreateTimer,
    LockEntities,
    ScheduleActivity,
    SendEvent,
    SignalEntity,
    StartChildOrchestration,
    UnlockEntities,
)
from durable.core.context import ActivityContext, ReplaySafeRandom
from durable.core.decision import Decision, EngineOptions
from durable.core.engine import Execution
from durable.core.errors import NonDeterminismError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationFailed,
    EntityLockGranted,
    EntityOperationCompleted,
    EntityOperationFailed,
    EventRaised,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    InboundEvent,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TimerFired,
    orchestration_events,
)
from durable.core.functions import Registry, get_name
from durable.core.payload import PayloadCodec

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class DeterminismCheckError(AssertionError):
    """The orchestrator did not decide the same when its history was replayed.

    The message names the step, what differed, and the run that shows it (hypothesis
    shrinks the run to a small one first).
    """


@dataclass
class _Outstanding:
    """Work started by the orchestrator and not answered yet."""

    activities: dict[int, ScheduleActivity] = field(default_factory=dict)
    timers: dict[int, CreateTimer] = field(default_factory=dict)
    children: dict[int, StartChildOrchestration] = field(default_factory=dict)
    entity_calls: dict[int, CallEntity] = field(default_factory=dict)
    locks: set[int] = field(default_factory=set)

    def add(self, decision: Decision) -> None:
        for command in decision.commands:
            match command:
                case ScheduleActivity(task_id=i):
                    self.activities[i] = command
                case CreateTimer(task_id=i):
                    self.timers[i] = command
                case StartChildOrchestration(task_id=i):
                    self.children[i] = command
                case CallEntity(task_id=i):
                    self.entity_calls[i] = command
                case LockEntities(task_id=i):
                    self.locks.add(i)
                case (
                    SendEvent()
                    | SignalEntity()
                    | UnlockEntities()
                    | CompleteOrchestration()
                    | ContinueAsNew()
                ):
                    pass


def check_determinism(
    orchestrator: Callable[..., Any],
    *,
    activities: Iterable[Callable[..., Any]] = (),
    input: Any = None,  # noqa: A002 - the API's parameter name
    inputs: Any = None,
    activity_results: Mapping[str, Any] | None = None,
    child_results: Any = None,
    event_data: Any = None,
    failures: bool = True,
    max_examples: int = 100,
    max_steps: int = 60,
    engine_options: EngineOptions | None = None,
) -> None:
    """Explore runs of `orchestrator` and check that every replay decides the same.

    Each example is one run, driven step by step as a worker would drive it, with
    hypothesis choosing what happens: which outstanding activity, child or timer finishes
    next (several may finish in one batch), whether an activity fails, which external
    event arrives when (also before the orchestrator waits for it), and the data it
    carries. After every step, a fresh full replay of the history so far (as after a
    crash) must decide exactly what the live run decided, and must match every recorded
    call with the same arguments. While the orchestrator runs, a call to a clock, a
    random number generator, `uuid`, or `os.environ` fails the check at once, naming the
    line. On failure, hypothesis shrinks the run and the error shows its steps.

    Args:
        orchestrator: the orchestrator to check.
        activities: real activities: their results feed the run (each is run once per
            distinct input, then remembered).
        input: the orchestrator's input; or `inputs`, a hypothesis strategy of them.
        activity_results: strategies of results by activity name, instead of running
            the activity (for activities with side effects, or not given).
        child_results: a strategy of child orchestration results (default: None).
        event_data: a strategy of external event data (default: small JSON values).
        failures: let hypothesis fail activities and children too.
        max_examples: how many runs to explore.
        max_steps: the longest run, in steps.
        engine_options: limits, as the worker's.

    Raises:
        DeterminismCheckError: a replay differed; the message shows the run.
    """
    from hypothesis import HealthCheck, given, note, settings  # noqa: PLC0415 - optional
    from hypothesis import strategies as st  # noqa: PLC0415

    _exclude_hypothesis()
    registry = Registry()
    registry.add_orchestrator(orchestrator)
    for fn in activities:
        registry.add_activity(fn)
    inputs_strategy = inputs if inputs is not None else st.just(input)
    chance = Chance(
        st=st,
        results=dict(activity_results or {}),
        children=child_results if child_results is not None else st.none(),
        event_data=event_data if event_data is not None else _json_values(st),
        failures=failures,
    )
    options = engine_options or EngineOptions()

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def explore(data: Any) -> None:
        run = Run(registry, options)
        value = data.draw(inputs_strategy, label="input")
        try:
            simulate(data, run, chance, name=get_name(orchestrator), value=value, steps=max_steps)
        except DeterminismCheckError as e:
            steps = "\n".join(f"  step {n}: {line}" for n, line in enumerate(run.log, 1))
            note(steps)
            raise DeterminismCheckError(f"{e}\nThe run that shows it:\n{steps}") from None

    try:
        explore()
    except DeterminismCheckError:
        raise
    except AssertionError as e:  # hypothesis's own wrapper of our error
        raise DeterminismCheckError(str(e)) from e


def simulate(data: Any, run: Run, chance: Chance, *, name: str, value: Any, steps: int) -> None:
    """Drive `run` from its start for up to `steps` steps, as `data` (hypothesis) chooses."""
    run.log.append(f"start with input {value!r}")
    run.start(name, value)
    for _ in range(steps):
        if run.finished:
            return
        batch = chance.next_batch(data, run)
        if not batch:
            return  # waiting for nothing that can happen
        run.log.append(", ".join(_describe(e) for e in batch))
        run.step(batch)


class Run:
    """One run: a live execution, its history, and the full-replay check after each step."""

    def __init__(self, registry: Registry, options: EngineOptions) -> None:
        self.registry = registry
        self.options = options
        self.codec = PayloadCodec()
        self.live = Execution(registry.orchestrator, self.codec, options)
        self.history: list[HistoryEvent] = []
        self.outstanding = _Outstanding()
        self.now = T0
        self.finished = False
        self.steps = 0
        self.executions = 0
        self.name = ""
        self.waited_for: set[str] = set()  # event names the orchestrator waited for
        self.log: list[str] = []  # what happened, step by step, for the error message
        self.codes = frozenset(
            code
            for spec in registry.orchestrators.values()
            if (code := getattr(spec.fn, "__code__", None)) is not None
        )

    def start(self, name: str, value: Any) -> None:
        self.name = name
        self.executions += 1
        start = ExecutionStarted(
            timestamp=self.now,
            name=name,
            instance_id="check",
            execution_id=f"e{self.executions}",
            input=self.codec.encode(value, "orchestrator input"),
        )
        self.step([start])

    def step(self, events: list[InboundEvent]) -> None:
        self.steps += 1
        batch = [OrchestratorStarted(timestamp=self.now), *orchestration_events(events)]
        with _tripwire(self.steps, self.codes):
            decision = self.live.step(batch)
        self._check_full_replay(batch, decision)
        self.history.extend(decision.events)
        self.outstanding.add(decision)
        for command in decision.commands:
            match command:
                case ContinueAsNew(input=new_input):
                    self.live = Execution(self.registry.orchestrator, self.codec, self.options)
                    self.history = []
                    self.outstanding = _Outstanding()
                    if self.executions >= 5:
                        self.finished = True
                        return
                    self.now += timedelta(seconds=1)
                    self.executions += 1
                    start = ExecutionStarted(
                        timestamp=self.now,
                        name=self.name,
                        instance_id="check",
                        execution_id=f"e{self.executions}",
                        input=new_input,
                    )
                    self.step([start])
                    return
                case CompleteOrchestration():
                    self.finished = True

    def _check_full_replay(self, batch: list[HistoryEvent], live: Decision) -> None:
        fresh = Execution(self.registry.orchestrator, self.codec, self.options)
        fresh.strict = True
        try:
            with _tripwire(self.steps, self.codes):
                fresh.replay(self.history)
                again = fresh.step(batch)
        except NonDeterminismError as e:
            raise DeterminismCheckError(
                f"at step {self.steps}, a full replay of the history (as after a crash) "
                f"does not match it: {e}"
            ) from None
        if again != live:
            raise DeterminismCheckError(
                f"at step {self.steps}, a full replay of the history (as after a crash) "
                f"decided differently from the live run:\n  live:   {_summary(live)}\n"
                f"  replay: {_summary(again)}"
            )


@dataclass
class Chance:
    """What hypothesis may choose from, and the remembered results of real activities."""

    st: Any
    results: Mapping[str, Any]
    children: Any
    event_data: Any
    failures: bool
    memo: dict[tuple[str, str | None], tuple[str | None, FailureDetails | None]] = field(
        default_factory=dict
    )

    def next_batch(self, data: Any, run: Run) -> list[InboundEvent]:
        st, out = self.st, run.outstanding
        earliest = min((t.fire_at for t in out.timers.values()), default=None)
        choices: list[tuple[str, int]] = [("activity", i) for i in sorted(out.activities)]
        choices += [("child", i) for i in sorted(out.children)]
        choices += [("entity", i) for i in sorted(out.entity_calls)]
        choices += [("lock", i) for i in sorted(out.locks)]
        choices += [("timer", i) for i, t in sorted(out.timers.items()) if t.fire_at == earliest]
        awaited = run.live.awaited_events()
        run.waited_for.update(awaited)
        choices += [("event", n) for n in range(len(awaited))]
        if not choices:
            return []
        # Sometimes an event nobody waits for yet (it is buffered until a wait asks for it).
        if data.draw(st.integers(0, 9), label="early event") == 0:
            choices.append(("event", -1))
        count = data.draw(st.integers(1, min(3, len(choices))), label="batch size")
        picked = data.draw(
            st.lists(st.sampled_from(choices), min_size=count, max_size=count, unique=True),
            label="what happens",
        )
        run.now += timedelta(milliseconds=data.draw(st.integers(1, 5_000), label="ms later"))
        events: list[InboundEvent] = []
        for kind, key in picked:
            match kind:
                case "activity":
                    events.append(self.activity_outcome(data, run, out.activities.pop(key)))
                case "child":
                    out.children.pop(key)
                    events.append(self.child_outcome(data, run, key))
                case "entity":
                    out.entity_calls.pop(key)
                    events.append(self.entity_outcome(data, run, key))
                case "lock":
                    out.locks.discard(key)
                    events.append(EntityLockGranted(timestamp=run.now, task_id=key))
                case "timer":
                    timer = out.timers.pop(key)
                    run.now = max(run.now, timer.fire_at)
                    events.append(TimerFired(timestamp=run.now, task_id=key, fire_at=timer.fire_at))
                case _:
                    known = sorted(run.waited_for) or ["early"]
                    name = awaited[key] if key >= 0 else data.draw(st.sampled_from(known))
                    value = data.draw(self.event_data, label=f"event {name!r} data")
                    raw = run.codec.encode(value, "event data")
                    events.append(EventRaised(timestamp=run.now, name=name, input=raw))
        return events

    def activity_outcome(self, data: Any, run: Run, command: ScheduleActivity) -> InboundEvent:
        i, name = command.task_id, command.name
        if self.failures and data.draw(self.st.integers(0, 4), label=f"#{i} fails") == 0:
            error = ConnectionError(f"injected failure of {name!r}")
            injected = FailureDetails.from_exception(error)
            return TaskFailed(timestamp=run.now, task_id=i, failure=injected)
        if name in self.results:
            value = data.draw(self.results[name], label=f"{name} result")
            return TaskCompleted(timestamp=run.now, task_id=i, result=run.codec.encode(value, "r"))
        key = (name, command.input)
        if key not in self.memo:
            self.memo[key] = _run_activity(run, command)
        result, failure = self.memo[key]
        if failure is not None:
            return TaskFailed(timestamp=run.now, task_id=i, failure=failure)
        return TaskCompleted(timestamp=run.now, task_id=i, result=result)

    def entity_outcome(self, data: Any, run: Run, task_id: int) -> InboundEvent:
        """An entity operation's answer: a JSON value like a child's result, or a failure."""
        error = ValueError("injected failure of an entity operation")
        answers = (EntityOperationCompleted, EntityOperationFailed)
        return self._answer(data, run, task_id, "entity", error, answers)

    def child_outcome(self, data: Any, run: Run, task_id: int) -> InboundEvent:
        error = RuntimeError("injected failure of a child orchestration")
        answers = (ChildOrchestrationCompleted, ChildOrchestrationFailed)
        return self._answer(data, run, task_id, "child", error, answers)

    def _answer(  # noqa: PLR0917 - the draw, and what differs between children and entities
        self,
        data: Any,
        run: Run,
        task_id: int,
        what: str,
        error: Exception,
        answers: tuple[Callable[..., InboundEvent], Callable[..., InboundEvent]],
    ) -> InboundEvent:
        """A JSON value drawn for the answer, or (sometimes) `error`."""
        completed, failed = answers
        if self.failures and data.draw(self.st.booleans(), label=f"{what} #{task_id} fails"):
            failure = FailureDetails.from_exception(error)
            return failed(timestamp=run.now, task_id=task_id, failure=failure)
        value = data.draw(self.children, label=f"{what} #{task_id} result")
        result = run.codec.encode(value, f"{what} result")
        return completed(timestamp=run.now, task_id=task_id, result=result)


def _run_activity(run: Run, command: ScheduleActivity) -> tuple[str | None, FailureDetails | None]:
    try:
        spec = run.registry.activity(command.name)
        value = run.codec.decode(command.input, spec.input_type, f"input of {command.name!r}")
        ctx = ActivityContext("check", command.task_id, command.attempt, command.name)
        args = (ctx, value) if spec.takes_input else (ctx,)
        if spec.is_async:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works inside a loop too
                result = pool.submit(asyncio.run, spec.fn(*args)).result()
        else:
            result = spec.fn(*args)
        return run.codec.encode(result, f"result of {command.name!r}"), None
    except Exception as e:
        return None, FailureDetails.from_exception(e)


def _json_values(st: Any) -> Any:
    scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


def _describe(event: InboundEvent) -> str:
    match event:
        case TaskCompleted(task_id=i, result=r):
            return f"activity #{i} returns {r}"
        case TaskFailed(task_id=i, failure=f):
            return f"activity #{i} fails ({f.error_type})"
        case ChildOrchestrationCompleted(task_id=i, result=r):
            return f"child #{i} returns {r}"
        case ChildOrchestrationFailed(task_id=i):
            return f"child #{i} fails"
        case TimerFired(task_id=i, fire_at=f):
            return f"timer #{i} fires ({f - T0} after the start)"
        case EventRaised(name=n, input=x):
            return f"event {n!r} arrives with {x}"
        case EntityLockGranted(task_id=i):
            return f"locks #{i} granted"
        case _:
            return type(event).__name__


def _summary(decision: Decision) -> str:
    calls = [_call_text(c) for c in decision.commands]
    return f"{decision.status.value}, " + (", ".join(calls) if calls else "no new calls")


def _call_text(command: Command) -> str:
    match command:
        case ScheduleActivity(name=n, input=x, task_id=i):
            return f"#{i} call_activity({n!r}, input={x})"
        case CreateTimer(fire_at=f, task_id=i):
            return f"#{i} create_timer({f - T0} after the start)"
        case StartChildOrchestration(name=n, input=x, task_id=i):
            return f"#{i} call_sub_orchestrator({n!r}, input={x})"
        case SendEvent(name=n, instance_id=t, task_id=i):
            return f"#{i} send_event({t!r}, {n!r})"
        case CallEntity(entity=e, operation=o, input=x, task_id=i):
            return f"#{i} call_entity({e!r}, {o!r}, input={x})"
        case SignalEntity(entity=e, operation=o, input=x, task_id=i):
            return f"#{i} signal_entity({e!r}, {o!r}, input={x})"
        case LockEntities(entities=es, task_id=i):
            return f"#{i} lock_entities({list(es)!r})"
        case UnlockEntities(entities=es, task_id=i):
            return f"#{i} unlock of {list(es)!r}"
        case CompleteOrchestration(status=status, result=r):
            return f"end {status} with {r}"
        case ContinueAsNew(input=x):
            return f"continue_as_new({x})"
        case _:
            assert_never(command)


# -- the tripwire: calls an orchestrator must not make -----------------------------------

_CLOCKS = {
    time.time,
    time.time_ns,
    time.monotonic,
    time.monotonic_ns,
    time.perf_counter,
    time.perf_counter_ns,
    os.urandom,
}
_MODULE_FILES = {os.path.normcase(inspect.getfile(m)): m.__name__ for m in (random, uuid, secrets)}
_STDLIB = os.path.dirname(os.__file__)
_OS_FILES = {os.__file__, "<frozen os>"}  # os is frozen into the interpreter since 3.11
_DURABLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_USER: tuple[str, ...] = (_STDLIB, _DURABLE, "<frozen")


def _not_user_code() -> tuple[str, ...]:
    # Hypothesis runs its own callbacks (garbage collection timing) in the middle of
    # anything; they read clocks, and are not the orchestrator's doing.
    import hypothesis  # noqa: PLC0415 - an optional dependency

    return (*_NOT_USER, os.path.dirname(os.path.abspath(hypothesis.__file__)))


def _is_user(frame: types.FrameType | None) -> bool:
    """Whether `frame` runs the user's code (not the standard library's, nor durable's)."""
    return frame is not None and not frame.f_code.co_filename.startswith(_NOT_USER)


def _exclude_hypothesis() -> None:
    global _NOT_USER  # noqa: PLW0603 - set once, when the checker first runs
    _NOT_USER = _not_user_code()


def _inside(frame: types.FrameType | None, codes: frozenset[types.CodeType]) -> bool:
    """Whether the orchestrator (one of `codes`) is on the stack below `frame`."""
    depth = 0
    while frame is not None and depth < 200:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
        depth += 1
    return False


def _forbidden(frame: types.FrameType, event: str, arg: Any) -> str | None:
    if event == "c_call" and _is_user(frame):
        owner = getattr(arg, "__self__", None)
        if arg in _CLOCKS:
            return f"{arg.__module__}.{arg.__name__}()"
        if getattr(arg, "__name__", "") in ("now", "utcnow", "today") and owner in (
            datetime,
            date,
        ):
            return f"{owner.__name__}.{arg.__name__}()"
        if isinstance(owner, random.Random) and not isinstance(owner, ReplaySafeRandom):
            return f"random.{arg.__name__}()"
    elif event == "call" and _is_user(frame.f_back):
        code = frame.f_code
        module = _MODULE_FILES.get(os.path.normcase(code.co_filename))
        if module is not None and not isinstance(frame.f_locals.get("self"), ReplaySafeRandom):
            return f"{module}.{code.co_name}()"
        if code.co_filename in _OS_FILES and code.co_name == "getenv":
            return "os.getenv()"
    elif (  # os.environ[...] and os.environ.get(...) (through Mapping.get) end here
        event == "call"
        and frame.f_code.co_filename in _OS_FILES
        and frame.f_code.co_name == "__getitem__"
        and _reads_environ(frame)
    ):
        return "os.environ[...]"
    return None


def _reads_environ(frame: types.FrameType) -> bool:
    caller = frame.f_back
    if caller is not None and caller.f_code.co_name == "get" and not _is_user(caller):
        caller = caller.f_back  # Mapping.get
    return _is_user(caller)


@contextmanager
def _tripwire(step: int, codes: frozenset[types.CodeType]) -> Iterator[None]:
    found: list[str] = []

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if found or event not in ("call", "c_call"):
            return
        if (what := _forbidden(frame, event, arg)) is not None and _inside(frame, codes):
            where = frame if event == "c_call" else frame.f_back
            while where is not None and not _is_user(where):
                where = where.f_back
            line = f"{where.f_code.co_filename}:{where.f_lineno}" if where else "?"
            found.append(f"{what} at {line}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if found:
        raise DeterminismCheckError(
            f"at step {step}, the orchestrator called {found[0]}: orchestrators must not "
            "read clocks, randomness, ids or the environment (use ctx.current_utc_datetime, "
            "an activity, or the orchestrator's input instead)"
        )
