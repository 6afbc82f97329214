"""Regenerates the golden-history corpus in tests/core/histories/.

    python tests/core/make_golden_histories.py

Each scenario drives the engine with the `Run` helper, batch by batch, on scripted
events with fixed timestamps and ids, and writes the history it records to
`histories/<scenario>.json` (see histories/README.md for the layout). The output depends
only on the code, so regenerating twice gives the same bytes; test_golden_histories.py
checks that the files on disk are what this script writes now.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import golden_orchestrators as golden
import msgspec
from engine_helpers import Run, enc

from durable.core.decision import Decision, EngineOptions
from durable.core.engine import Execution
from durable.core.errors import TaskFailedError
from durable.core.events import (
    ChildOrchestrationCompleted,
    ChildOrchestrationFailed,
    ContinuedAsNew,
    EntityLockGranted,
    EntityOperationCompleted,
    EntityOperationFailed,
    EventRaised,
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
    TaskCompleted,
    TaskFailed,
    TimerCreated,
    TimerFired,
    qualified_name,
)
from durable.core.history import encode_event, fork_history
from durable.core.payload import PayloadCodec

HISTORIES = Path(__file__).parent / "histories"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
_AT = datetime(2000, 1, 1, tzinfo=UTC)  # placeholder: `feed` stamps events with batch time

# -- events as a scenario writes them (stamped with their batch's time when fed) -----------


def failure(
    error: type[BaseException] | str, message: str, where: str = "activity"
) -> FailureDetails:
    """How an activity failed, with a fixed traceback (a real one names local paths)."""
    if isinstance(error, str):
        name, bases = error, ("builtins.Exception", "builtins.BaseException")
    else:
        name = qualified_name(error)
        bases = tuple(qualified_name(b) for b in error.__mro__[1:] if b is not object)
    short = name.removeprefix("builtins.")
    trace = (
        "Traceback (most recent call last):\n"
        f'  File "app/activities.py", line 42, in {where}\n'
        f"{short}: {message}\n"
    )
    return FailureDetails(message=message, error_type=name, stack_trace=trace, base_types=bases)


def done(task_id: int, value: Any = None, *, raw: str | None = None) -> TaskCompleted:
    return TaskCompleted(timestamp=_AT, task_id=task_id, result=raw if raw else enc(value))


def fail(task_id: int, error: type[BaseException] | str, message: str) -> TaskFailed:
    return TaskFailed(timestamp=_AT, task_id=task_id, failure=failure(error, message))


def child_done(task_id: int, value: Any = None) -> ChildOrchestrationCompleted:
    return ChildOrchestrationCompleted(timestamp=_AT, task_id=task_id, result=enc(value))


def child_failed(task_id: int, details: FailureDetails) -> ChildOrchestrationFailed:
    return ChildOrchestrationFailed(timestamp=_AT, task_id=task_id, failure=details)


def event(name: str, value: Any = None, *, raw: str | None = None) -> EventRaised:
    return EventRaised(timestamp=_AT, name=name, input=raw if raw else enc(value))


def suspend(reason: str | None = None) -> ExecutionSuspended:
    return ExecutionSuspended(timestamp=_AT, reason=reason)


def resume(reason: str | None = None) -> ExecutionResumed:
    return ExecutionResumed(timestamp=_AT, reason=reason)


def terminate(output: Any = None, *, recurse: bool = True) -> ExecutionTerminated:
    return ExecutionTerminated(timestamp=_AT, output=enc(output), recurse=recurse)


def terminated_child() -> FailureDetails:
    """What a worker reports to the parent of a terminated child."""
    cause = FailureDetails(message="terminated", error_type="durable.OrchestrationTerminated")
    return FailureDetails.from_exception(
        TaskFailedError("the child orchestration was terminated", cause)
    )


# -- stack traces --------------------------------------------------------------------------


def scrub(event: HistoryEvent) -> HistoryEvent:
    """`event` without the tracebacks the engine records when an orchestration fails.

    They name this machine's paths and the engine's line numbers, so the corpus keeps
    none (the failures scenarios inject carry fixed ones, kept as they are elsewhere).
    """
    if isinstance(event, ExecutionCompleted) and event.failure is not None:
        return msgspec.structs.replace(event, failure=_scrub_failure(event.failure))
    return event


def _scrub_failure(details: FailureDetails) -> FailureDetails:
    inner = _scrub_failure(details.inner) if details.inner is not None else None
    return msgspec.structs.replace(details, stack_trace=None, inner=inner)


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Script:
    """One instance driven through scripted batches, as a worker would drive it."""

    orchestrator: str
    options: EngineOptions | None = None
    max_payload_bytes: int | None = None
    recorded_by: str | None = None  # a key of golden.EARLIER: the code until `deploy()`
    run: Run = field(init=False)
    incremental_from: int = 0  # batches before it were decided by other code, or cut short

    def __post_init__(self) -> None:
        specs = dict(golden.ORCHESTRATORS)
        if self.recorded_by is not None:
            specs[self.orchestrator] = golden.EARLIER[self.recorded_by]
        codec = PayloadCodec(self.max_payload_bytes) if self.max_payload_bytes else None
        self.run = Run(*specs.values(), options=self.options, codec=codec)
        self.run.now = T0

    @property
    def history(self) -> list[HistoryEvent]:
        return self.run.history

    @property
    def batches(self) -> int:
        return sum(isinstance(e, OrchestratorStarted) for e in self.history)

    def start(
        self,
        input: Any = None,
        *,
        instance: str,
        execution: str = "exec-1",
        raw_input: str | None = None,
        parent: ParentInstance | None = None,
        scheduled_start: datetime | None = None,
        created: datetime | None = None,
        carried: Sequence[EventRaised] = (),
        events: Sequence[HistoryEvent] = (),
    ) -> Decision:
        """The first batch: the start (`created` then, by default now), events carried
        over, and any that came with it."""
        now = self.run.now
        begin = ExecutionStarted(
            timestamp=created or now,
            name=self.orchestrator,
            instance_id=instance,
            execution_id=execution,
            input=raw_input if raw_input is not None else enc(input),
            parent=parent,
            scheduled_start=scheduled_start,
        )
        stamped = [msgspec.structs.replace(e, timestamp=now) for e in events]
        return self.run.step([OrchestratorStarted(timestamp=now), begin, *carried, *stamped])

    def feed(
        self,
        *events: HistoryEvent,
        after: timedelta = timedelta(seconds=1),
        at: datetime | None = None,
    ) -> Decision:
        """One batch, `after` the previous one (or `at`); its events happen at its time."""
        now = at if at is not None else self.run.now + after
        assert now >= self.run.now, "history time never goes back"
        self.run.now = now
        stamped = [msgspec.structs.replace(e, timestamp=now) for e in events]
        return self.run.step([OrchestratorStarted(timestamp=now), *stamped])

    def fire(self, *task_ids: int, also: Sequence[HistoryEvent] = ()) -> Decision:
        """The timers `task_ids` fire (at the latest one's time), with `also` after."""
        when = {e.task_id: e.fire_at for e in self.history if isinstance(e, TimerCreated)}
        at = max(self.run.now + timedelta(seconds=1), *(when[i] for i in task_ids))
        fired = [TimerFired(timestamp=at, task_id=i, fire_at=when[i]) for i in task_ids]
        return self.feed(*fired, *also, at=at)

    def rewind(self, reason: str, *, after: timedelta = timedelta(minutes=10)) -> Decision:
        """A rewind as a worker does it: a fresh replay that knows it is rewinding."""
        run = self.run
        run.now += after
        execution = Execution(run.specs, run.codec, run.options)
        execution.replay(run.history, rewinding=True)
        batch: list[HistoryEvent] = [
            OrchestratorStarted(timestamp=run.now),
            ExecutionRewound(timestamp=run.now, reason=reason),
        ]
        decision = execution.step(batch)
        run.live = execution
        run.history.extend(decision.events)
        run.decisions.append(decision)
        return decision

    def deploy(self) -> None:
        """The current code takes over: batches from now on are decided by it."""
        assert self.recorded_by is not None
        run = self.run
        run.specs = dict(golden.ORCHESTRATORS)
        run.live = Execution(run.specs, run.codec, run.options)
        if not isinstance(run.history[-1], ExecutionCompleted):  # a failed one waits to be rewound
            run.live.replay(run.history)  # as a worker restarted with the new code does
        self.incremental_from = self.batches

    def fork(self, source: Sequence[HistoryEvent], at: int, instance: str, reason: str) -> Decision:
        """This instance is a fork of `source` at event `at` (see Client.fork_orchestration)."""
        assert not self.history
        run = self.run
        run.history.extend(fork_history(source, at, instance, "exec-1"))
        at_boundary = at == len(source) or isinstance(source[at], OrchestratorStarted)
        if not at_boundary or len(run.history) < at:
            # Cut inside a batch (or its end dropped): what that batch decided after the
            # cut is not there, so stepping it again would not give what is recorded.
            self.incremental_from = self.batches
        run.now = max(e.timestamp for e in run.history)
        decision = self.rewind(reason, after=timedelta(hours=1))
        return decision


@dataclass
class Scenario:
    name: str
    orchestrator: str
    description: str
    script: Callable[[Script], None]
    status: str
    options: dict[str, int] | None = None
    max_payload_bytes: int | None = None
    recorded_by: str | None = None


SCENARIOS: list[Scenario] = []
RESULTS: dict[str, list[HistoryEvent]] = {}  # histories of the scenarios built so far


def scenario(
    name: str,
    orchestrator: str,
    status: str,
    description: str,
    *,
    options: dict[str, int] | None = None,
    max_payload_bytes: int | None = None,
    recorded_by: str | None = None,
) -> Callable[[Callable[[Script], None]], Callable[[Script], None]]:
    def register(fn: Callable[[Script], None]) -> Callable[[Script], None]:
        assert all(s.name != name for s in SCENARIOS), name
        SCENARIOS.append(
            Scenario(
                name,
                orchestrator,
                " ".join(description.split()),
                fn,
                status,
                options,
                max_payload_bytes,
                recorded_by,
            )
        )
        return fn

    return register


def failure_of(name: str) -> FailureDetails:
    """Why an earlier scenario's history first failed (its parent is told that)."""
    end = next(e for e in RESULTS[name] if isinstance(e, ExecutionCompleted))
    assert end.failure is not None
    return end.failure


# -- the seed patterns ---------------------------------------------------------------------


@scenario(
    "prompt_chaining_passes_gates",
    "prompt_chaining",
    "COMPLETED",
    "Prompt chaining: outline, draft and polish run one after another; both gates pass.",
)
def _(s: Script) -> None:
    s.start("durability", instance="chain-1")
    s.feed(done(0, ["durability: intro", "durability: body", "durability: conclusion"]))
    s.feed(done(1, "intro / body / conclusion"))
    s.feed(done(2, "INTRO / BODY / CONCLUSION."))


@scenario(
    "prompt_chaining_stops_at_gate",
    "prompt_chaining",
    "COMPLETED",
    "Prompt chaining: the outline fails the first gate, so no later step is scheduled.",
)
def _(s: Script) -> None:
    s.start("vague", instance="chain-2")
    s.feed(done(0, ["intro"]))


@scenario(
    "routing_billing",
    "route_query",
    "COMPLETED",
    "Routing: the classifier sends a refund request to the billing handler.",
)
def _(s: Script) -> None:
    s.start("I want a refund", instance="route-1")
    s.feed(done(0, "billing"))
    s.feed(done(1, "billing team: I want a refund"))


@scenario(
    "routing_technical",
    "route_query",
    "COMPLETED",
    "Routing: the same code, another route: the handler's name comes from a result.",
)
def _(s: Script) -> None:
    s.start("the app shows an error", instance="route-2")
    s.feed(done(0, "technical"))
    s.feed(done(1, "engineer: the app shows an error"))


@scenario(
    "sectioning_parallel_checks",
    "review",
    "COMPLETED",
    """Parallel sectioning: three checks fan out in one step; their results arrive in
    reverse order over two batches and come back in input order.""",
)
def _(s: Script) -> None:
    s.start("Durable and true.", instance="review-1")
    s.feed(done(2, {"check": "facts", "ok": True}))
    s.feed(done(1, {"check": "grammar", "ok": True}), done(0, {"check": "safety", "ok": True}))


@scenario(
    "voting_majority",
    "majority_vote",
    "COMPLETED",
    "Parallel voting: five ballots in one step, results in one batch, the majority wins.",
)
def _(s: Script) -> None:
    s.start("ship it?", instance="vote-1")
    votes = ["yes", "no", "yes", "no", "yes"]
    s.feed(*(done(i, v) for i, v in enumerate(votes)))


@scenario(
    "orchestrator_workers",
    "orchestrator_workers",
    "COMPLETED",
    """Orchestrator-workers: a plan, three child orchestrations with default ids
    (<parent>:<sequence number>), then a synthesis of their results.""",
)
def _(s: Script) -> None:
    s.start("app", instance="plan-1")
    s.feed(done(0, ["app: research", "app: design", "app: build"]))
    s.feed(child_done(2, {"subtask": "app: design", "result": "done(design)", "parent": "plan-1"}))
    s.feed(
        child_done(1, {"subtask": "app: research", "result": "done(research)", "parent": "plan-1"}),
        child_done(3, {"subtask": "app: build", "result": "done(build)", "parent": "plan-1"}),
    )
    s.feed(done(4, "done(research) + done(design) + done(build)"))


@scenario(
    "orchestrator_workers_child",
    "subtask_worker",
    "COMPLETED",
    "A child of orchestrator_workers, as its own history: it knows its parent.",
)
def _(s: Script) -> None:
    parent = ParentInstance(instance_id="plan-1", execution_id="exec-1", task_id=2)
    s.start("app: design", instance="plan-1:0002", parent=parent)
    s.feed(done(0, "done(design)"))


@scenario(
    "orchestrator_workers_child_failed",
    "orchestrator_workers",
    "FAILED",
    """Orchestrator-workers: one child fails; when_all waits for all, then the failure
    ends the parent (the failure keeps the child's as its inner cause).""",
)
def _(s: Script) -> None:
    s.start("app", instance="plan-2")
    s.feed(done(0, ["app: research", "app: design"]))
    s.feed(child_failed(1, failure("app.errors.ResearchUnavailable", "no sources")))
    s.feed(child_done(2, {"subtask": "app: design", "result": "done(design)", "parent": "plan-2"}))


@scenario(
    "evaluator_optimizer_accepted",
    "evaluator_optimizer",
    "COMPLETED",
    "Evaluator-optimizer: generate, evaluate, revise with the feedback; accepted in round 3.",
)
def _(s: Script) -> None:
    s.start({"task": "poem", "max_rounds": 5}, instance="eval-1")
    s.feed(done(0, "poem v1"))
    s.feed(done(1, {"accepted": False, "feedback": "v1 is too short"}))
    s.feed(done(2, "poem v2 (revised)"))
    s.feed(done(3, {"accepted": False, "feedback": "v2 is too short"}))
    s.feed(done(4, "poem v3 (revised)"))
    s.feed(done(5, {"accepted": True, "feedback": ""}))


@scenario(
    "evaluator_optimizer_max_rounds",
    "evaluator_optimizer",
    "COMPLETED",
    "Evaluator-optimizer: never accepted; it stops after max_rounds with the last answer.",
)
def _(s: Script) -> None:
    s.start({"task": "essay", "max_rounds": 2}, instance="eval-2")
    s.feed(done(0, "essay v1"))
    s.feed(done(1, {"accepted": False, "feedback": "v1 is too short"}))
    s.feed(done(2, "essay v2 (revised)"))
    s.feed(done(3, {"accepted": False, "feedback": "v2 is too short"}))


def _agent(turn: int = 0, results: list[Any] | None = None) -> dict[str, Any]:
    return {
        "turn": turn,
        "results": results or [],
        "approval_timeout": 30,
        "turns_per_execution": 3,
    }


def _tools(turn: int) -> dict[str, Any]:
    return {
        "tool_calls": [
            {"tool": "search", "args": {"q": f"topic {turn}"}},
            {"tool": "calculator", "args": {"a": turn, "b": 1}},
        ]
    }


EMAIL = {
    "tool_calls": [
        {"tool": "send_email", "args": {"to": "boss@example.com"}},
        {"tool": "search", "args": {"q": "status"}},
    ]
}


@scenario(
    "agent_loop_approved_while_waiting",
    "agent_loop",
    "COMPLETED",
    """Agent loop: turn 1 asks for an email, which needs approval; the approval event
    wins its race with the 30 s timer, the tools run, the cancelled timer fires later and
    changes nothing; turn 2 answers.""",
)
def _(s: Script) -> None:
    s.start(_agent(), instance="agent-1")
    s.feed(done(0, _tools(0)))
    s.feed(done(1, "found: topic 0"), done(2, 1))
    s.feed(done(3, EMAIL))
    s.feed(event("Approval", {"approved": True}), after=timedelta(seconds=12))
    s.feed(done(5, "email sent to boss@example.com"))
    s.fire(4, also=[done(6, "found: status")])
    s.feed(done(7, {"final": "total=1; email sent to boss@example.com"}))


@scenario(
    "agent_loop_approval_timeout",
    "agent_loop",
    "COMPLETED",
    """Agent loop: no approval comes; the timer wins the race, the wait is cancelled and
    only the tool that needs no approval runs.""",
)
def _(s: Script) -> None:
    s.start(_agent(), instance="agent-2")
    s.feed(done(0, EMAIL))
    s.fire(1)
    s.feed(done(2, "found: status"))
    s.feed(done(3, {"final": "email denied: no approval"}))


@scenario(
    "agent_loop_rejected",
    "agent_loop",
    "COMPLETED",
    "Agent loop: the approval event says no; the email is not sent.",
)
def _(s: Script) -> None:
    s.start(_agent(), instance="agent-3")
    s.feed(done(0, EMAIL))
    s.feed(event("approval", {"approved": False}), after=timedelta(seconds=5))
    s.feed(done(2, "found: status"))
    s.feed(done(3, {"final": "email denied: no approval"}))


@scenario(
    "agent_loop_continues_as_new",
    "agent_loop",
    "CONTINUED_AS_NEW",
    """Agent loop: an approval raised with the start is buffered; three turns of tools
    later the loop continues as new with save_events, carrying the approval over.""",
)
def _(s: Script) -> None:
    s.start(_agent(), instance="agent-4", events=[event("approval", {"approved": True})])
    for turn in range(3):
        base = turn * 3
        s.feed(done(base, _tools(turn)))
        s.feed(done(base + 1, f"found: topic {turn}"), done(base + 2, turn + 1))


@scenario(
    "agent_loop_next_execution",
    "agent_loop",
    "COMPLETED",
    """Agent loop, the execution after agent_loop_continues_as_new: it starts with the
    carried approval, which the wait at turn 3 takes at once; turn 4 answers.""",
)
def _(s: Script) -> None:
    before = RESULTS["agent_loop_continues_as_new"]
    end = before[-1]
    assert isinstance(end, ContinuedAsNew)
    s.run.now = end.timestamp
    s.start(raw_input=end.input, instance="agent-4", execution="exec-2", carried=end.carried_events)
    s.feed(done(0, EMAIL))
    s.feed(done(2, "email sent to boss@example.com"), done(3, "found: status"))
    s.feed(done(4, {"final": "total=6; email sent to boss@example.com"}))


# -- fan-out, races, timers ----------------------------------------------------------------


@scenario(
    "fan_out_fan_in",
    "fan_out_fan_in",
    "COMPLETED",
    "Fan-out/fan-in: one activity per item in parallel, then an aggregate of all results.",
)
def _(s: Script) -> None:
    s.start(["a", "b", "c", "d"], instance="fan-1")
    s.feed(done(3, 4), done(0, 1))
    s.feed(done(2, 3))
    s.feed(done(1, 2))
    s.feed(done(4, 10))


@scenario(
    "fan_out_empty",
    "fan_out_fan_in",
    "COMPLETED",
    "Fan-out over no items: when_all([]) completes at once, the aggregate runs first.",
)
def _(s: Script) -> None:
    s.start([], instance="fan-2")
    s.feed(done(0, 0))


@scenario(
    "fan_out_failure_caught",
    "tolerant_fan_out",
    "COMPLETED",
    """A caught fan-out failure: when_all raises the first failure once all are done; the
    code reads each task's outcome and reports the failed items.""",
)
def _(s: Script) -> None:
    s.start(["a", "b", "c"], instance="fan-3")
    s.feed(done(0, "A"), fail(1, ValueError, "b is malformed"))
    s.feed(fail(2, "app.errors.Unavailable", "c is offline"))
    s.feed(done(3, None))


@scenario(
    "race_event_wins",
    "approval_race",
    "COMPLETED",
    "when_any of an event and a timer: the event (name in another case) wins.",
)
def _(s: Script) -> None:
    s.start(3600, instance="race-1")
    s.feed(event("APPROVE", "alice"), after=timedelta(minutes=7))


@scenario(
    "race_timer_wins",
    "approval_race",
    "COMPLETED",
    "when_any of an event and a timer: the timer fires first; the wait is cancelled.",
)
def _(s: Script) -> None:
    s.start(60, instance="race-2")
    s.fire(0)


@scenario(
    "activity_timeout_late_result",
    "activity_with_timeout",
    "COMPLETED",
    """An activity raced with a timer: the timer wins, the fallback runs, and the slow
    activity's result arrives later and is ignored.""",
)
def _(s: Script) -> None:
    s.start(10, instance="timeout-1")
    s.fire(1)
    s.feed(done(0, "live report"), after=timedelta(seconds=5))
    s.feed(done(2, "cached report"))


@scenario(
    "timers_absolute_and_relative",
    "timers",
    "COMPLETED",
    """A timer at a naive datetime (taken as UTC), then one after a timedelta from the
    history time at which the first fired.""",
)
def _(s: Script) -> None:
    s.start(instance="timers-1")
    s.fire(0)
    s.fire(1)


@scenario(
    "timer_ninety_days",
    "long_sleep",
    "COMPLETED",
    "A ninety-day timer is one timer.",
)
def _(s: Script) -> None:
    s.start(90, instance="sleep-1")
    s.fire(0)


# -- retries and failures ----------------------------------------------------------------


@scenario(
    "retry_succeeds_on_third_attempt",
    "retrying_charge",
    "COMPLETED",
    """RetryPolicy: two failed attempts, each followed by a 5 s retry timer and the next
    attempt (TaskScheduled attempt=2, 3); the third succeeds.""",
)
def _(s: Script) -> None:
    s.start({"policy": "standard", "amount": 25, "catch": False}, instance="retry-1")
    s.feed(fail(0, ConnectionError, "gateway reset"))
    s.fire(1)
    s.feed(fail(2, ConnectionError, "gateway reset"))
    s.fire(3)
    s.feed(done(4, "rcpt-25"))


@scenario(
    "retry_exhausted_fails",
    "retrying_charge",
    "FAILED",
    "RetryPolicy: all three attempts fail; the last failure ends the orchestration.",
)
def _(s: Script) -> None:
    s.start({"policy": "standard", "amount": 30, "catch": False}, instance="retry-2")
    s.feed(fail(0, TimeoutError, "no answer"))
    s.fire(1)
    s.feed(fail(2, TimeoutError, "no answer"))
    s.fire(3)
    s.feed(fail(4, TimeoutError, "no answer"))


@scenario(
    "retry_backoff_capped",
    "retrying_charge",
    "COMPLETED",
    """RetryPolicy with backoff 2.0 capped at 3 s: retry delays 1 s, 2 s, 3 s; the
    fourth attempt succeeds.""",
)
def _(s: Script) -> None:
    s.start({"policy": "backoff", "amount": 40, "catch": False}, instance="retry-3")
    for attempt in range(3):
        s.feed(fail(attempt * 2, ConnectionError, "busy"))
        s.fire(attempt * 2 + 1)
    s.feed(done(6, "rcpt-40"))


@scenario(
    "retry_non_retryable_caught",
    "retrying_charge",
    "COMPLETED",
    """RetryPolicy with a non-retryable error type (by name): no retry; the caught
    failure becomes the result.""",
)
def _(s: Script) -> None:
    s.start({"policy": "non_retryable", "amount": 50, "catch": True}, instance="retry-4")
    s.feed(fail(0, "app.errors.CardDeclined", "insufficient funds"))


@scenario(
    "retry_timeout_gives_up",
    "retrying_charge",
    "COMPLETED",
    """RetryPolicy with a 2 min retry_timeout: the second failure comes too late for
    another retry; the failure is caught.""",
)
def _(s: Script) -> None:
    s.start({"policy": "timeout", "amount": 60, "catch": True}, instance="retry-5")
    s.feed(fail(0, ConnectionError, "busy"), after=timedelta(seconds=10))
    s.fire(1)
    s.feed(fail(2, ConnectionError, "busy"), after=timedelta(seconds=30))


@scenario(
    "caught_failure_fallback",
    "with_fallback",
    "COMPLETED",
    "A caught task failure (is_caused_by a builtin's name): the fallback activity runs.",
)
def _(s: Script) -> None:
    s.start("Oslo", instance="weather-1")
    s.feed(fail(0, TimeoutError, "primary timed out"))
    s.feed(done(1, {"city": "Oslo", "temp": -3}))
    s.feed(done(2, "Oslo: -3"))


@scenario(
    "uncaught_failure_fails",
    "with_fallback",
    "FAILED",
    "A task failure the code does not handle (re-raised) fails the orchestration.",
)
def _(s: Script) -> None:
    s.start("Bergen", instance="weather-2")
    s.feed(fail(0, KeyError, "'Bergen'"))


@scenario(
    "orchestrator_raises",
    "validating",
    "FAILED",
    "The orchestrator's own exception (a ValueError, not a task failure) fails it.",
)
def _(s: Script) -> None:
    s.start("o-17", instance="validate-1")
    s.feed(done(0, {"id": "o-17", "qty": 0}))


# -- children ------------------------------------------------------------------------------


@scenario(
    "child_ship_order",
    "ship_order",
    "COMPLETED",
    "A child orchestration's own history (explicit id), reporting to fulfil_order.",
)
def _(s: Script) -> None:
    parent = ParentInstance(instance_id="order-1", execution_id="exec-1", task_id=1)
    s.start({"amount": 99, "sku": "mug"}, instance="order-1-ship", parent=parent)
    s.feed(done(0, {"parcel": "p-1"}))
    s.feed(done(1, "TRK-1"))


@scenario(
    "child_notify_customer_fails",
    "notify_customer",
    "FAILED",
    "A child orchestration whose activity fails: it ends FAILED (reported to its parent).",
)
def _(s: Script) -> None:
    parent = ParentInstance(instance_id="order-1", execution_id="exec-1", task_id=2)
    s.start("shipped: TRK-1", instance="order-1:0002", parent=parent)
    s.feed(fail(0, "app.errors.SmsQuota", "daily quota reached"))


@scenario(
    "child_orchestrations_parent",
    "fulfil_order",
    "COMPLETED",
    """Children: one with an explicit id completes; one with the default id fails and the
    parent catches its failure (the child's histories: child_ship_order,
    child_notify_customer_fails).""",
)
def _(s: Script) -> None:
    s.start({"amount": 99, "sku": "mug"}, instance="order-1")
    s.feed(done(0, "paid 99"))
    s.feed(child_done(1, {"tracking": "TRK-1", "parent": "order-1"}), after=timedelta(minutes=2))
    s.feed(child_failed(2, failure_of("child_notify_customer_fails")))


@scenario(
    "child_retry_then_success",
    "child_with_retry",
    "COMPLETED",
    """A child orchestration with a RetryPolicy: the first child fails, a retry timer,
    then a second child (a new default id) completes.""",
)
def _(s: Script) -> None:
    s.start({"amount": 5, "sku": "pen"}, instance="retry-child-1")
    s.feed(child_failed(0, failure("app.errors.WarehouseClosed", "closed")))
    s.fire(1)
    s.feed(child_done(2, {"tracking": "TRK-2", "parent": "retry-child-1"}))


# -- external events -----------------------------------------------------------------------


@scenario(
    "event_buffered_before_wait",
    "confirm_after_lookup",
    "COMPLETED",
    """An event raised while the orchestrator is busy elsewhere is buffered, then taken
    by the wait as soon as it is reached.""",
)
def _(s: Script) -> None:
    s.start("ann", instance="confirm-1")
    s.feed(event("Confirm", "yes"))
    s.feed(done(0, {"user": "ann"}))


@scenario(
    "event_after_wait",
    "confirm_after_lookup",
    "COMPLETED",
    "An event raised after the orchestrator began waiting for it; other names are ignored.",
)
def _(s: Script) -> None:
    s.start("bob", instance="confirm-2")
    s.feed(done(0, {"user": "bob"}))
    s.feed(event("unrelated", 1), event("Confirm", "ok"), after=timedelta(hours=2))


@scenario(
    "events_same_name_fifo",
    "collect_events",
    "COMPLETED",
    """Several events with one name (in any case), raised while a timer runs: buffered,
    then taken first in, first out; the fifth comes in the batch that completes the
    orchestration, after its end, and is not recorded.""",
)
def _(s: Script) -> None:
    s.start(4, instance="collect-1", events=[event("item", 1), event("ITEM", 2)])
    s.feed(event("Item", 3))
    s.fire(0)
    s.feed(event("item", 4), event("item", 5))


@scenario(
    "send_event_ping",
    "ping",
    "COMPLETED",
    "send_event to another instance (EventSent), then a wait for its reply.",
)
def _(s: Script) -> None:
    s.start("ponger-1", instance="pinger-1")
    s.feed(event("pong", {"n": 2}))


@scenario(
    "send_event_pong",
    "pong",
    "COMPLETED",
    "The receiving side of send_event_ping: the event arrives, the answer is sent back.",
)
def _(s: Script) -> None:
    s.start(instance="ponger-1")
    s.feed(event("ping", {"from": "pinger-1", "n": 1}))


@scenario(
    "entity_call_and_signal",
    "entity_counter",
    "COMPLETED",
    "A durable entity: a signal (EntityOperationSignaled, one way), a call answered"
    " (EntityOperationCalled, EntityOperationCompleted) and a call whose operation failed"
    " (EntityOperationFailed), caught.",
)
def _(s: Script) -> None:
    s.start("k1", instance="entity-user-1")
    s.feed(EntityOperationCompleted(timestamp=_AT, task_id=1, result=enc(5)))
    refused = FailureDetails(
        message="Operation 'reset_to' on entity '@counter@k1' failed with error: no",
        error_type="durable.entities.EntityOperationFailedException",
        inner=failure(ValueError, "no"),
    )
    s.feed(EntityOperationFailed(timestamp=_AT, task_id=2, failure=refused))


@scenario(
    "entity_critical_section",
    "entity_transfer",
    "COMPLETED",
    "A critical section: locks asked for in the sorted order (EntityLockRequested),"
    " granted (EntityLockGranted), calls inside, and the release (EntityUnlockSent).",
)
def _(s: Script) -> None:
    s.start(5, instance="transfer-1")
    s.feed(EntityLockGranted(timestamp=_AT, task_id=0))
    s.feed(EntityOperationCompleted(timestamp=_AT, task_id=1, result=enc(100)))
    s.feed(EntityOperationCompleted(timestamp=_AT, task_id=2, result=enc(95)))
    s.feed(EntityOperationCompleted(timestamp=_AT, task_id=3, result=enc(105)))


# -- suspend, resume, terminate ------------------------------------------------------------


@scenario(
    "suspend_resume_holds_results",
    "prompt_chaining",
    "COMPLETED",
    """Suspended: an activity result that arrives is held (nothing is scheduled) until
    the resume, then applied.""",
)
def _(s: Script) -> None:
    s.start("durability", instance="chain-3")
    s.feed(suspend("maintenance"))
    s.feed(done(0, ["a: intro", "a: body", "a: end"]))
    s.feed(resume("done"), after=timedelta(hours=1))
    s.feed(done(1, "intro / body / end"))
    s.feed(done(2, "INTRO / BODY / END."))


@scenario(
    "suspended_snapshot",
    "fan_out_fan_in",
    "SUSPENDED",
    "An instance caught while suspended, holding a result and a second suspend.",
)
def _(s: Script) -> None:
    s.start(["a", "b"], instance="fan-4")
    s.feed(done(0, 1), suspend())
    s.feed(done(1, 2), suspend("again"))


@scenario(
    "terminate_while_suspended",
    "collect_events",
    "TERMINATED",
    "Terminated while suspended: termination is not held; the held event is dropped.",
)
def _(s: Script) -> None:
    s.start(1, instance="collect-2")
    s.feed(suspend("investigate"))
    s.feed(event("item", "held"))
    s.feed(terminate("stopped by operator"))


@scenario(
    "terminate_recursive_open_child",
    "fulfil_order",
    "TERMINATED",
    """Terminated with recurse (the default) while a child runs: the output is kept; the
    worker terminates the open child too (terminated_child).""",
)
def _(s: Script) -> None:
    s.start({"amount": 10, "sku": "cap"}, instance="order-2")
    s.feed(done(0, "paid 10"))
    s.feed(terminate({"by": "ops"}), after=timedelta(minutes=30))


@scenario(
    "terminated_child",
    "ship_order",
    "TERMINATED",
    "The open child of terminate_recursive_open_child, terminated by its parent's end.",
)
def _(s: Script) -> None:
    parent = ParentInstance(instance_id="order-2", execution_id="exec-1", task_id=1)
    s.run.now = T0 + timedelta(seconds=1)
    s.start({"amount": 10, "sku": "cap"}, instance="order-2-ship", parent=parent)
    s.feed(terminate(), after=timedelta(minutes=30))


@scenario(
    "terminate_not_recursive",
    "orchestrator_workers",
    "TERMINATED",
    "Terminated with recurse=False: its children keep running (the flag is recorded).",
)
def _(s: Script) -> None:
    s.start("site", instance="plan-3")
    s.feed(done(0, ["site: design", "site: build"]))
    s.feed(terminate(recurse=False), after=timedelta(minutes=5))


@scenario(
    "parent_sees_child_terminated",
    "fulfil_order",
    "FAILED",
    "A child terminated on its own: its parent gets ChildOrchestrationFailed and fails.",
)
def _(s: Script) -> None:
    s.start({"amount": 12, "sku": "hat"}, instance="order-3")
    s.feed(done(0, "paid 12"))
    s.feed(child_failed(1, terminated_child()))


# -- continue-as-new -----------------------------------------------------------------------


@scenario(
    "continue_as_new_drops_unconsumed_events",
    "counter",
    "CONTINUED_AS_NEW",
    """continue_as_new without save_events: two "add" events in one batch, the first is
    consumed and the second is not carried over.""",
)
def _(s: Script) -> None:
    s.start(0, instance="counter-1")
    s.feed(event("add", 3), event("add", 4))


@scenario(
    "continue_as_new_last_execution",
    "counter",
    "COMPLETED",
    "The counter's execution that reaches the total and completes.",
)
def _(s: Script) -> None:
    s.start(7, instance="counter-1", execution="exec-5")
    s.feed(event("add", 3))


@scenario(
    "continue_as_new_carries_buffered_events",
    "batch_collector",
    "CONTINUED_AS_NEW",
    """continue_as_new with save_events: two jobs arrived while the first ran; not
    consumed, they are carried over in ContinuedAsNew.carried_events.""",
)
def _(s: Script) -> None:
    s.start({"done": []}, instance="jobs-1", events=[event("job", "j1")])
    s.feed(event("job", "j2"), event("JOB", "j3"))
    s.feed(done(0, "r1"))


@scenario(
    "continue_as_new_carries_events_after_end",
    "batch_collector",
    "CONTINUED_AS_NEW",
    """continue_as_new with save_events: an event in the same batch after the step that
    continued as new is not recorded as raised here, only carried over.""",
)
def _(s: Script) -> None:
    s.start({"done": []}, instance="jobs-2", events=[event("job", "j1")])
    s.feed(done(0, "r1"), event("job", "last"))


@scenario(
    "continue_as_new_next_execution",
    "batch_collector",
    "COMPLETED",
    """The execution after continue_as_new_carries_events_after_end: it starts with the
    carried event, its job is the last one.""",
)
def _(s: Script) -> None:
    end = RESULTS["continue_as_new_carries_events_after_end"][-1]
    assert isinstance(end, ContinuedAsNew)
    s.run.now = end.timestamp
    s.start(raw_input=end.input, instance="jobs-2", execution="exec-2", carried=end.carried_events)
    s.feed(done(0, "r-last"))


@scenario(
    "continue_as_new_when_suggested",
    "poller",
    "CONTINUED_AS_NEW",
    """ctx.is_continue_as_new_suggested turns true at the configured history length
    (suggest_continue_as_new_events=12); the poller continues as new.""",
    options={"suggest_continue_as_new_events": 12},
)
def _(s: Script) -> None:
    s.start({"polls": 0}, instance="poll-1")
    i = 0
    while s.feed(done(i, "pending"), after=timedelta(minutes=1)).status.value == "RUNNING":
        i += 1


@scenario(
    "history_cap_fails",
    "unbounded_loop",
    "FAILED",
    """The history cap (max_history_events=12): the decision that would grow the history
    past it fails the orchestration with HistoryTooLargeError instead.""",
    options={"max_history_events": 12},
)
def _(s: Script) -> None:
    s.start(10, instance="loop-1")
    i = 0
    while s.feed(done(i, i)).status.value == "RUNNING":
        i += 1


# -- versioning ------------------------------------------------------------------------------


@scenario(
    "patch_new_run",
    "patched_flow",
    "COMPLETED",
    "is_patched in a new run: true, recorded as PatchApplied; the fraud check runs.",
)
def _(s: Script) -> None:
    s.start("o-1", instance="patch-1")
    s.feed(done(0, {"id": "o-1"}))
    s.feed(done(1, {"id": "o-1", "fraud": "clear"}))
    s.feed(done(2, "rcpt-o-1"))


@scenario(
    "patch_pre_patch_history",
    "patched_flow",
    "COMPLETED",
    """A history recorded before the patch (by patched_flow_v1) past the patched point,
    finished by the patched code: is_patched is false on replay, no fraud check.""",
    recorded_by="patched_flow_v1",
)
def _(s: Script) -> None:
    s.start("o-2", instance="patch-2")
    s.feed(done(0, {"id": "o-2"}))
    s.deploy()
    s.feed(done(1, "rcpt-o-2"), after=timedelta(hours=1))


@scenario(
    "patch_reached_after_deploy",
    "patched_flow",
    "COMPLETED",
    """Started by patched_flow_v1, which had not reached the patched point when the
    patched code took over: is_patched is then true (and recorded) in this execution.""",
    recorded_by="patched_flow_v1",
)
def _(s: Script) -> None:
    s.start("o-3", instance="patch-3")
    s.deploy()
    s.feed(done(0, {"id": "o-3"}), after=timedelta(hours=1))
    s.feed(done(1, {"id": "o-3", "fraud": "clear"}))
    s.feed(done(2, "rcpt-o-3"))


# -- rewind and fork -----------------------------------------------------------------------


@scenario(
    "rewind_failed_activity",
    "pipeline",
    "COMPLETED",
    """Rewind: the failed step and the FAILED end are cancelled (ExecutionRewound.cancels);
    the failed activity runs again with no new TaskScheduled; the others keep results.""",
)
def _(s: Script) -> None:
    s.start(3, instance="etl-1")
    s.feed(done(0, 3))
    s.feed(fail(1, "app.errors.QuotaExceeded", "transform quota"))
    s.rewind("quota raised")
    s.feed(done(1, 6))
    s.feed(done(2, "loaded 6"))


@scenario(
    "rewind_twice",
    "pipeline",
    "COMPLETED",
    "Rewind, the same step fails again, a second rewind; then it completes.",
)
def _(s: Script) -> None:
    s.start(4, instance="etl-2")
    s.feed(done(0, 4))
    s.feed(fail(1, ConnectionError, "one"))
    s.rewind("first try")
    s.feed(fail(1, ConnectionError, "two"))
    s.rewind("second try")
    s.feed(done(1, 8))
    s.feed(done(2, "loaded 8"))


@scenario(
    "rewind_exhausted_retries",
    "retrying_charge",
    "COMPLETED",
    """Rewind after a RetryPolicy gave up: the last attempt (TaskScheduled attempt=3) runs
    again; the earlier failed attempts and their retry timers stay as recorded.""",
)
def _(s: Script) -> None:
    s.start({"policy": "standard", "amount": 35, "catch": False}, instance="retry-6")
    s.feed(fail(0, TimeoutError, "no answer"))
    s.fire(1)
    s.feed(fail(2, TimeoutError, "no answer"))
    s.fire(3)
    s.feed(fail(4, TimeoutError, "no answer"))
    s.rewind("gateway fixed")
    s.feed(done(4, "rcpt-35"))


@scenario(
    "rewind_fan_out_siblings",
    "review",
    "COMPLETED",
    "Rewind of a fan-out: both failed checks run again; the completed one keeps its result.",
)
def _(s: Script) -> None:
    s.start("text", instance="review-2")
    s.feed(done(0, {"check": "safety", "ok": True}), fail(1, KeyError, "'grammar'"))
    s.feed(fail(2, KeyError, "'facts'"))
    s.rewind("models redeployed")
    s.feed(done(1, {"check": "grammar", "ok": True}), done(2, {"check": "facts", "ok": False}))


@scenario(
    "rewind_handled_failure_stays",
    "with_fallback",
    "COMPLETED",
    """Rewind: a failure the code handled before stays as recorded (not cancelled); only
    the step that ended the orchestration runs again.""",
)
def _(s: Script) -> None:
    s.start("Rome", instance="weather-3")
    s.feed(fail(0, TimeoutError, "primary timed out"))
    s.feed(done(1, {"city": "Rome", "temp": 18}))
    s.feed(fail(2, "app.errors.ModelOverloaded", "try later"))
    s.rewind("capacity back")
    s.feed(done(2, "Rome: 18"))


@scenario(
    "rewind_child_by_parent",
    "subtask_worker",
    "COMPLETED",
    """A failed child rewound because its parent was: its failed activity runs again
    and its result goes to the parent (rewind_child_failed_parent).""",
)
def _(s: Script) -> None:
    parent = ParentInstance(instance_id="plan-4", execution_id="exec-1", task_id=1)
    s.start("api: research", instance="plan-4:0001", parent=parent)
    s.feed(fail(0, "app.errors.ResearchUnavailable", "no sources"))
    s.rewind("its parent was rewound")
    s.feed(done(0, "done(research)"))


@scenario(
    "rewind_child_failed_parent",
    "orchestrator_workers",
    "COMPLETED",
    """Rewind of a parent that a failed child ended: the child is started again (a rerun;
    the worker also rewinds the child: rewind_child_by_parent).""",
)
def _(s: Script) -> None:
    s.start("api", instance="plan-4")
    s.feed(done(0, ["api: research", "api: build"]))
    s.feed(child_done(2, {"subtask": "api: build", "result": "done(build)", "parent": "plan-4"}))
    s.feed(child_failed(1, failure_of("rewind_child_by_parent")))
    s.rewind("sources back")
    s.feed(
        child_done(1, {"subtask": "api: research", "result": "done(research)", "parent": "plan-4"})
    )
    s.feed(done(3, "done(research) + done(build)"))


@scenario(
    "rewind_after_bug_fix",
    "pipeline",
    "COMPLETED",
    """A bug (buggy_pipeline_v1) failed the orchestration after its first step; the fixed
    code is deployed and the rewind carries on from there with the new steps.""",
    recorded_by="buggy_pipeline_v1",
)
def _(s: Script) -> None:
    s.start(5, instance="etl-3")
    s.feed(done(0, 5))
    s.deploy()
    s.rewind("bug fixed")
    s.feed(done(1, 10))
    s.feed(done(2, "loaded 10"))


@scenario(
    "fork_of_failed_run",
    "pipeline",
    "COMPLETED",
    """A fork (Client.fork_orchestration) of rewind_failed_activity at its FAILED end:
    the fork's history starts with the original's (ids rewritten) and goes on from a
    rewind of the failure.""",
)
def _(s: Script) -> None:
    source = RESULTS["rewind_failed_activity"]
    first_end = next(i for i, e in enumerate(source) if isinstance(e, ExecutionCompleted))
    s.fork(source, first_end + 1, "etl-1-fork", "forked from 'etl-1' at its failure")
    s.feed(done(1, 6))
    s.feed(done(2, "loaded 6"))


@scenario(
    "fork_inside_a_batch",
    "orchestrator_workers",
    "COMPLETED",
    """A fork cut inside a batch (after a result, before the commands it led to): the
    rewind that resumes the fork decides those commands anew, child ids rewritten.""",
)
def _(s: Script) -> None:
    source = RESULTS["orchestrator_workers"]
    at = next(i for i, e in enumerate(source) if isinstance(e, TaskCompleted)) + 1
    s.fork(source, at, "plan-1b", f"forked from 'plan-1' at event {at}")
    s.feed(
        child_done(1, {"subtask": "app: research", "result": "r", "parent": "plan-1b"}),
        child_done(2, {"subtask": "app: design", "result": "d", "parent": "plan-1b"}),
        child_done(3, {"subtask": "app: build", "result": "b", "parent": "plan-1b"}),
    )
    s.feed(done(4, "r + d + b"))


# -- bad yields and payloads -----------------------------------------------------------------


@scenario(
    "non_task_yield_fails",
    "yields_non_task",
    "FAILED",
    "Yielding a string (not a task) raises InvalidTaskError into the code; uncaught, it fails.",
)
def _(s: Script) -> None:
    s.start("fail", instance="bad-yield-1")


@scenario(
    "non_task_yield_caught",
    "yields_non_task",
    "COMPLETED",
    "Yielding a non-task raises InvalidTaskError, which the code catches and goes on.",
)
def _(s: Script) -> None:
    s.start("recover", instance="bad-yield-2")
    s.feed(done(0, "after recover"))


@scenario(
    "non_task_yield_forever",
    "yields_non_task",
    "FAILED",
    "Code that swallows InvalidTaskError and keeps yielding non-tasks is failed.",
)
def _(s: Script) -> None:
    s.start("forever", instance="bad-yield-3")


@scenario(
    "payload_typed_roundtrip",
    "typed_order",
    "COMPLETED",
    "Typed payloads: a Struct input, a result decoded into a Struct, a bool event.",
)
def _(s: Script) -> None:
    s.start({"sku": "mug", "qty": 2}, instance="typed-1")
    s.feed(done(0, {"sku": "mug", "unit_price": 7, "total": 14}))
    s.feed(event("accept", True))


@scenario(
    "payload_bad_orchestrator_input",
    "typed_order",
    "FAILED",
    "An input that does not decode into the orchestrator's input type fails it at once.",
)
def _(s: Script) -> None:
    s.start(raw_input='{"sku":5,"qty":"two"}', instance="typed-2")


@scenario(
    "payload_bad_event_data",
    "typed_order",
    "FAILED",
    "Event data that does not decode into data_type fails the wait; uncaught, the run.",
)
def _(s: Script) -> None:
    s.start({"sku": "pen", "qty": 1}, instance="typed-3")
    s.feed(done(0, {"sku": "pen", "unit_price": 2, "total": 2}))
    s.feed(event("accept", "maybe"))


@scenario(
    "payload_bad_activity_result_caught",
    "tolerant_pricing",
    "COMPLETED",
    "An activity result that does not decode into return_type fails the task; caught.",
)
def _(s: Script) -> None:
    s.start("lamp", instance="price-1")
    s.feed(done(0, raw='"twelve"'))
    s.feed(done(1, 10))


@scenario(
    "payload_encode_error",
    "sends_unencodable",
    "FAILED",
    "An activity input with no JSON form raises PayloadEncodeError in the code; it fails.",
)
def _(s: Script) -> None:
    s.start(instance="encode-1")
    s.feed(done(0, "first"))


@scenario(
    "payload_too_large",
    "big_input",
    "FAILED",
    "An activity input over the payload cap (max_payload_bytes=256) fails the run.",
    max_payload_bytes=256,
)
def _(s: Script) -> None:
    s.start(1000, instance="big-1")
    s.feed(done(0, "ok"))


# -- small ones ------------------------------------------------------------------------------


@scenario(
    "plain_function_orchestrator",
    "plain_function",
    "COMPLETED",
    "An orchestrator that is a plain function (not a generator) completes in one step.",
)
def _(s: Script) -> None:
    s.start(21, instance="plain-1")


@scenario(
    "deterministic_context_values",
    "deterministic_values",
    "COMPLETED",
    "ctx.new_uuid(), ctx.random() and history time, recorded in an input and the output.",
)
def _(s: Script) -> None:
    s.start(instance="det-1")
    s.feed(done(0), after=timedelta(seconds=3))
    s.fire(1)


@scenario(
    "scheduled_start",
    "long_sleep",
    "COMPLETED",
    "An instance scheduled to start later (ExecutionStarted.scheduled_start).",
)
def _(s: Script) -> None:
    s.run.now = T0 + timedelta(hours=1)
    s.start(1, instance="sleep-2", created=T0, scheduled_start=T0 + timedelta(hours=1))
    s.fire(0)


@scenario(
    "duplicate_completion_ignored",
    "route_query",
    "COMPLETED",
    "An activity result delivered twice (at least once delivery): the duplicate is ignored.",
)
def _(s: Script) -> None:
    s.start("hello", instance="route-3")
    s.feed(done(0, "general"))
    s.feed(done(0, "general"))
    s.feed(done(1, "assistant: hello"))


@scenario(
    "running_snapshot",
    "agent_loop",
    "RUNNING",
    "An instance caught mid-run: waiting for an approval or its timer.",
)
def _(s: Script) -> None:
    s.start(_agent(), instance="agent-5")
    s.feed(done(0, EMAIL))


# -- building the corpus -------------------------------------------------------------------


def build(case: Scenario) -> tuple[list[HistoryEvent], Script]:
    options = EngineOptions(**case.options) if case.options else None
    script = Script(case.orchestrator, options, case.max_payload_bytes, case.recorded_by)
    case.script(script)
    history = [scrub(e) for e in script.history]
    status = script.run.decisions[-1].status.value
    assert status == case.status, f"{case.name}: ended {status}, not {case.status}"
    return history, script


def render(case: Scenario, history: Sequence[HistoryEvent], incremental_from: int) -> str:
    """The file: a few header fields, then the history, one event per line."""
    header: dict[str, Any] = {
        "orchestrator": case.orchestrator,
        "description": case.description,
        "status": case.status,
    }
    if case.options:
        header["engine_options"] = case.options
    if case.max_payload_bytes:
        header["max_payload_bytes"] = case.max_payload_bytes
    if incremental_from:
        header["incremental_from_batch"] = incremental_from
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in header.items()]
    lines.append('  "history": [')
    events = [encode_event(e).decode() for e in history]
    lines += [f"    {e}," for e in events[:-1]] + [f"    {events[-1]}"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def build_corpus() -> dict[str, str]:
    """Every scenario's file name and text."""
    RESULTS.clear()
    files: dict[str, str] = {}
    for case in SCENARIOS:
        history, script = build(case)
        RESULTS[case.name] = history
        files[f"{case.name}.json"] = render(case, history, script.incremental_from)
    return files


def main() -> int:
    files = build_corpus()
    HISTORIES.mkdir(exist_ok=True)
    for stale in sorted(HISTORIES.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
            print(f"removed {stale.name}")
    changed = 0
    for name, text in files.items():
        path = HISTORIES / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed += 1
    print(f"{len(files)} histories in {HISTORIES}, {changed} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
