"""Helpers for driving the replay engine on hand-built histories."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from durable.core.decision import Decision, EngineOptions
from durable.core.engine import Execution, replay
from durable.core.events import (
    EventRaised,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    OrchestratorStarted,
    ParentInstance,
    TaskCompleted,
    TaskFailed,
    TimerFired,
)
from durable.core.functions import FunctionSpec, orchestrator_spec
from durable.core.payload import PayloadCodec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def enc(value: Any) -> str | None:
    """A value as the engine stores it in events (None stays None)."""
    return None if value is None else msgspec.json.encode(value).decode()


def dec(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def details_of(exc: BaseException) -> FailureDetails:
    """Failure details of `exc` raised for real, so that it carries a traceback."""
    try:
        raise exc
    except BaseException as e:
        return FailureDetails.from_exception(e)


def completed(task_id: int, value: Any = None) -> TaskCompleted:
    return TaskCompleted(timestamp=T0, task_id=task_id, result=enc(value))


def failed(task_id: int, exc: BaseException) -> TaskFailed:
    return TaskFailed(timestamp=T0, task_id=task_id, failure=details_of(exc))


def fired(task_id: int, fire_at: datetime = T0) -> TimerFired:
    return TimerFired(timestamp=T0, task_id=task_id, fire_at=fire_at)


def raised(name: str, value: Any = None) -> EventRaised:
    return EventRaised(timestamp=T0, name=name, input=enc(value))


def specs_of(*fns: Callable[..., Any] | FunctionSpec) -> dict[str, FunctionSpec]:
    specs = [f if isinstance(f, FunctionSpec) else orchestrator_spec(f) for f in fns]
    return {s.name: s for s in specs}


class Run:
    """One orchestration instance driven batch by batch, as a worker would drive it.

    Each `feed` steps a live `Execution` (the incremental path) and, unless disabled,
    checks that a fresh full replay of the history decides exactly the same.
    """

    def __init__(
        self,
        *orchestrators: Callable[..., Any] | FunctionSpec,
        options: EngineOptions | None = None,
        codec: PayloadCodec | None = None,
        check_replay: bool = True,
    ) -> None:
        self.specs = specs_of(*orchestrators)
        self.options = options
        self.codec = codec
        self.check_replay = check_replay
        self.live = Execution(self.specs, codec, options)
        self.history: list[HistoryEvent] = []
        self.decisions: list[Decision] = []
        self.now = T0

    def start(
        self,
        name: str | Callable[..., Any],
        input: Any = None,
        *,
        instance_id: str = "i",
        execution_id: str = "e",
        parent: ParentInstance | None = None,
        raw_input: str | None = None,
    ) -> Decision:
        if not isinstance(name, str):
            name = name.__name__
        text = raw_input if raw_input is not None else enc(input)
        event = ExecutionStarted(
            timestamp=self.now,
            name=name,
            instance_id=instance_id,
            execution_id=execution_id,
            input=text,
            parent=parent,
        )
        return self.step([OrchestratorStarted(timestamp=self.now), event])

    def feed(self, *events: HistoryEvent, at: datetime | None = None) -> Decision:
        """Deliver `events` in one batch opened by an OrchestratorStarted at `at`.

        Without `at`, history time moves one second forward per batch.
        """
        self.now = at if at is not None else self.now + timedelta(seconds=1)
        return self.step([OrchestratorStarted(timestamp=self.now), *events])

    def step(self, batch: Sequence[HistoryEvent]) -> Decision:
        if self.check_replay:
            expected, _ = replay(
                self.specs, self.history, batch, codec=self.codec, options=self.options
            )
        decision = self.live.step(batch)
        if self.check_replay:
            assert decision == expected, "the incremental and full-replay decisions differ"
        self.history.extend(decision.events)
        self.decisions.append(decision)
        return decision

    def replay_fresh(
        self, *orchestrators: Callable[..., Any] | FunctionSpec
    ) -> tuple[Decision, Execution]:
        """Replay the whole history with other code (default: the same) and decide."""
        specs = specs_of(*orchestrators) if orchestrators else self.specs
        return replay(specs, self.history, [], codec=self.codec, options=self.options)


def output_of(decision: Decision) -> Any:
    return dec(decision.output)
