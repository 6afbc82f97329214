"""Property tests: the incremental engine decides exactly as a full replay does, and
replaying a prefix of a history yields a prefix of its commands.

Random orchestrator programs (a list of steps, interpreted by one orchestrator) are run
against random deliveries: completions and failures of outstanding work in any order and
batching, event arrivals, stale duplicates, suspends, resumes, terminations, worker crashes
(the live execution replaced by a replayed one) and continue-as-new into the next execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine_helpers import T0, details_of, enc, specs_of
from hypothesis import event, given, settings
from hypothesis import strategies as st

from durable.core.commands import (
    Command,
    CompleteOrchestration,
    ContinueAsNew,
    CreateTimer,
    ScheduleActivity,
    SendEvent,
    StartChildOrchestration,
    TaskCommand,
)
from durable.core.decision import EngineOptions
from durable.core.engine import Execution, replay
from durable.core.errors import TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationCreated,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EventRaised,
    EventSent,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    OrchestratorStarted,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
)
from durable.core.tasks import RetryPolicy, when_all, when_any

# -- the interpreted orchestrator -------------------------------------------------------


def program(ctx, prog: list):
    trace: list[Any] = []
    for i, (kind, arg) in enumerate(prog):
        if kind == "act":
            try:
                trace.append((yield ctx.call_activity(f"act{arg}", input=i)))
            except TaskFailedError as e:
                trace.append(["failed", e.details.error_type])
        elif kind == "retry":
            policy = RetryPolicy(
                timedelta(seconds=1),
                max_number_of_attempts=arg,
                backoff_coefficient=2,
                non_retryable_error_types=[PermissionError],
            )
            try:
                trace.append((yield ctx.call_activity("flaky", input=i, retry_policy=policy)))
            except TaskFailedError as e:
                trace.append(["gave up", e.details.error_type])
        elif kind == "timer":
            yield ctx.create_timer(timedelta(seconds=arg))
            trace.append(ctx.current_utc_datetime.isoformat())
        elif kind == "wait":
            trace.append((yield ctx.wait_for_external_event(arg)))
        elif kind == "all":
            tasks = [ctx.call_activity("fan", input=[i, j]) for j in range(arg)]
            try:
                trace.append((yield when_all(tasks)))
            except TaskFailedError as e:
                trace.append(["all failed", e.details.message])
        elif kind == "any":
            work = ctx.call_activity("race", input=i)
            timer = ctx.create_timer(timedelta(seconds=arg))
            winner = yield when_any([work, timer])
            if winner is work:
                timer.cancel()
                trace.append(["work", work.is_failed])
            else:
                trace.append("timeout")
        elif kind == "any_event":
            wait = ctx.wait_for_external_event(arg)
            timer = ctx.create_timer(timedelta(minutes=5))
            winner = yield when_any([timer, wait])
            (timer if winner is wait else wait).cancel()
            trace.append(["event", wait.get_result()] if winner is wait else "timeout")
        elif kind == "child":
            try:
                trace.append((yield ctx.call_sub_orchestrator("child", input=i, instance_id=arg)))
            except TaskFailedError as e:
                trace.append(["child failed", e.details.message])
        elif kind == "send":
            ctx.send_event(arg, "ping", data=i)
        elif kind == "status":
            ctx.set_custom_status([i, len(trace)])
        elif kind == "uuid":
            trace.append(ctx.new_uuid())
        elif kind == "random":
            trace.append(ctx.random().randint(0, 10**6))
        elif kind == "patched":
            trace.append(ctx.is_patched(arg))
        elif kind == "size":
            trace.append([ctx.history_length, ctx.is_continue_as_new_suggested])
        elif kind == "can":
            ctx.continue_as_new(prog[i + 1 :], save_events=arg)
            return None
        elif kind == "raise":
            raise RuntimeError(f"step {i} failed")
    return trace


SPECS = specs_of(program)
# Small limits, so that runs reach is_continue_as_new_suggested and the history cap.
SMALL = EngineOptions(max_history_events=40, suggest_continue_as_new_events=15)
limits = st.sampled_from([None, SMALL])

common_steps = st.one_of(
    st.tuples(st.just("act"), st.integers(0, 2)),
    st.tuples(st.just("retry"), st.integers(1, 3)),
    st.tuples(st.just("timer"), st.sampled_from([0, 30, 86400 * 90])),
    st.tuples(st.just("wait"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("all"), st.integers(0, 3)),
    st.tuples(st.just("any"), st.integers(1, 60)),
    st.tuples(st.just("any_event"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("child"), st.sampled_from([None, "kid"])),
)
instant_steps = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["x", "y"])),
    st.tuples(st.just("status"), st.none()),
    st.tuples(st.just("uuid"), st.none()),
    st.tuples(st.just("random"), st.none()),
    st.tuples(st.just("patched"), st.sampled_from(["p1", "p2"])),
    st.tuples(st.just("size"), st.none()),
)
ending_steps = st.one_of(
    st.tuples(st.just("can"), st.booleans()),
    st.tuples(st.just("raise"), st.none()),
)
steps = st.one_of(common_steps, common_steps, common_steps, instant_steps, ending_steps)
programs = st.lists(steps, min_size=1, max_size=12)

# -- driving it -------------------------------------------------------------------------


@dataclass
class Instance:
    """What the test, playing the runtime, knows of one execution."""

    history: list[HistoryEvent] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    outstanding: dict[int, TaskCommand] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)
    suspended: bool = False


def next_batch(data: st.DataObject, inst: Instance, now: datetime) -> tuple[list, datetime]:
    events: list[HistoryEvent] = []
    for _ in range(data.draw(st.integers(1, 4), label="batch size")):
        choices: list[Any] = [("complete", t) for t in sorted(inst.outstanding)] * 3
        choices += [("event", n) for n in ("a", "A", "b", "c")]
        choices.append("resume" if inst.suspended else "suspend")
        if inst.finished:
            choices.append("stale")
        if data.draw(st.integers(0, 40), label="terminate?") == 0:
            choices.append("terminate")
        choice = data.draw(st.sampled_from(choices), label="delivery")
        if choice == "resume":
            inst.suspended = False
            events.append(ExecutionResumed(timestamp=now))
        elif choice == "suspend":
            inst.suspended = True
            events.append(ExecutionSuspended(timestamp=now))
        elif choice == "stale":
            task_id = data.draw(st.sampled_from(inst.finished), label="stale task")
            events.append(TaskCompleted(timestamp=now, task_id=task_id, result='"stale"'))
        elif choice == "terminate":
            events.append(ExecutionTerminated(timestamp=now, output=enc("stop")))
        elif choice[0] == "event":
            value = data.draw(st.integers(0, 9), label="event data")
            events.append(_raised(choice[1], value, now))
        else:
            task_id = choice[1]
            command = inst.outstanding.pop(task_id)
            inst.finished.append(task_id)
            event, now = _completion(data, command, now)
            events.append(event)
    now += timedelta(seconds=data.draw(st.integers(0, 3600), label="elapsed"))
    return [OrchestratorStarted(timestamp=now), *events], now


def _raised(name: str, value: int, now: datetime) -> HistoryEvent:
    return EventRaised(timestamp=now, name=name, input=enc(value))


def _completion(data: st.DataObject, command: TaskCommand, now: datetime):
    t = command.task_id
    match command:
        case CreateTimer(fire_at=fire_at):
            now = max(now, fire_at)
            return TimerFired(timestamp=now, task_id=t, fire_at=fire_at), now
        case ScheduleActivity():
            outcome = data.draw(st.sampled_from(["ok", "ok", "ValueError", "PermissionError"]))
            if outcome == "ok":
                return TaskCompleted(timestamp=now, task_id=t, result=enc(f"r{t}")), now
            error = ValueError(f"v{t}") if outcome == "ValueError" else PermissionError(f"p{t}")
            return TaskFailed(timestamp=now, task_id=t, failure=details_of(error)), now
        case StartChildOrchestration():
            if data.draw(st.booleans(), label="child ok"):
                return ChildOrchestrationCompleted(timestamp=now, task_id=t, result=enc(t)), now
            failure = details_of(KeyError(f"c{t}"))
            return ChildOrchestrationFailed(timestamp=now, task_id=t, failure=failure), now
    raise AssertionError(f"no completion for {command}")


def run_program(
    data: st.DataObject, prog: list, options: EngineOptions | None, max_batches: int = 30
) -> list[Instance]:
    """Drive `prog` through its executions; check incremental == full replay at each step."""
    instances: list[Instance] = []
    now = T0
    inst = Instance()
    live = Execution(SPECS, options=options)
    start = ExecutionStarted(
        timestamp=now, name="program", instance_id="i", execution_id="e0", input=enc(prog)
    )
    batch: list[HistoryEvent] = [OrchestratorStarted(timestamp=now), start]
    for _ in range(max_batches):
        expected, fresh = replay(SPECS, inst.history, batch, options=options)
        decision = live.step(batch)
        assert decision == expected
        if data.draw(st.integers(0, 9), label="crash?") == 0:
            live = fresh  # the worker lost its cache: carry on from a replayed execution
        inst.history.extend(decision.events)
        inst.commands.extend(decision.commands)
        for command in decision.commands:
            if isinstance(command, ScheduleActivity | CreateTimer | StartChildOrchestration):
                inst.outstanding[command.task_id] = command
        end = decision.commands[-1] if decision.commands else None
        if isinstance(end, CompleteOrchestration):
            event("hit the history cap" if _hit_cap(inst.history[-1]) else f"ended {end.status}")
            break
        if isinstance(end, ContinueAsNew):
            instances.append(inst)
            inst = Instance()
            live = Execution(SPECS, options=options)
            start = ExecutionStarted(
                timestamp=now,
                name="program",
                instance_id="i",
                execution_id=f"e{len(instances)}",
                input=end.input,
            )
            batch = [OrchestratorStarted(timestamp=now), start, *end.carried_events]
            continue
        batch, now = next_batch(data, inst, now)
    instances.append(inst)
    event(f"executions: {len(instances)}")
    event(f"history length: {min(sum(len(i.history) for i in instances) // 20 * 20, 100)}+")
    return instances


@settings(max_examples=300, deadline=None)
@given(prog=programs, options=limits, data=st.data())
def test_incremental_decisions_equal_full_replay_decisions(prog, options, data):
    run_program(data, prog, options)


# -- prefixes ---------------------------------------------------------------------------


def as_command(event: HistoryEvent) -> TaskCommand | None:
    match event:
        case TaskScheduled(task_id=i, name=n, input=x, attempt=a):
            return ScheduleActivity(task_id=i, name=n, input=x, attempt=a)
        case TimerCreated(task_id=i, fire_at=f):
            return CreateTimer(task_id=i, fire_at=f)
        case ChildOrchestrationCreated(task_id=i, name=n, instance_id=c, input=x):
            return StartChildOrchestration(task_id=i, name=n, instance_id=c, input=x)
        case EventSent(task_id=i, instance_id=t, name=n, input=x):
            return SendEvent(task_id=i, instance_id=t, name=n, input=x)
    return None


def recorded_commands(history) -> list[TaskCommand]:
    return [c for c in map(as_command, history) if c is not None]


def valid_cuts(history: list[HistoryEvent], options: EngineOptions | None) -> int:
    """How far a prefix may reach.

    A termination, or the history cap, drops the commands its batch produced: a prefix
    ending inside that batch would decide them again, as it should. So does a last batch
    that went past the cap, which only an end may do: a prefix inside it lacks what let
    the orchestration end there, and meets the cap instead, as it should.
    """
    last = max(k for k, e in enumerate(history) if isinstance(e, OrchestratorStarted))
    for n, recorded in enumerate(history):
        if isinstance(recorded, ExecutionTerminated) or _hit_cap(recorded):
            return max(k for k in range(n) if isinstance(history[k], OrchestratorStarted))
    if len(history) >= (options or EngineOptions()).max_history_events:
        return last
    return len(history)


def _hit_cap(event: HistoryEvent) -> bool:
    return (
        isinstance(event, ExecutionCompleted)
        and event.failure is not None
        and event.failure.error_type == "durable.HistoryTooLargeError"
    )


def end_kind(item: Any) -> str | None:
    match item:
        case CompleteOrchestration(status=s) | ExecutionCompleted(status=s):
            return s
        case ContinueAsNew() | ContinuedAsNew():
            return "CONTINUED_AS_NEW"
    return None


@settings(max_examples=100, deadline=None)
@given(prog=programs, options=limits, data=st.data())
def test_replaying_a_prefix_of_a_history_yields_a_prefix_of_its_commands(prog, options, data):
    for inst in run_program(data, prog, options):
        history = inst.history
        full = recorded_commands(history)
        # The decisions commanded exactly what the history records.
        assert [c for c in inst.commands if as_command_like(c)] == full
        limit = valid_cuts(history, options)
        cuts = data.draw(
            st.lists(st.integers(0, limit), min_size=1, max_size=6, unique=True), label="cuts"
        )
        for n in [*cuts, limit]:
            decision, _ = replay(SPECS, history[:n], [], options=options)
            produced = recorded_commands(history[:n]) + [
                c for c in decision.commands if as_command_like(c)
            ]
            assert produced == full[: len(produced)]
            ended = [end_kind(c) for c in decision.commands if end_kind(c)]
            if ended:
                assert ended == [end_kind(history[-1])]
        # The whole history replays to where it stands and decides nothing new; a recorded
        # end is replayed, not decided again.
        decision, execution = replay(SPECS, history, [], options=options)
        assert decision.events == () and decision.commands == ()
        assert execution.is_finished == (end_kind(history[-1]) is not None)


def as_command_like(command: Command) -> bool:
    return isinstance(command, ScheduleActivity | CreateTimer | StartChildOrchestration | SendEvent)
