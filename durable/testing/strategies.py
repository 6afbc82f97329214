"""Hypothesis strategies for testing orchestrations: payloads, outcomes, events, histories."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from durable.core.decision import EngineOptions
from durable.core.events import EventRaised, FailureDetails, TaskCompleted, TaskFailed
from durable.core.functions import Registry, get_name
from durable.core.history import History
from durable.core.payload import PayloadCodec
from durable.testing.checker import Chance, Run, simulate

__all__ = ["activity_outcomes", "event_schedules", "failures", "histories", "payloads"]

_CODEC = PayloadCodec()
_T0 = datetime(2030, 1, 1, tzinfo=UTC)


def payloads(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """JSON-shaped values: what inputs, results and event data can be."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def failures() -> st.SearchStrategy[FailureDetails]:
    """Failure details of common exception types, with messages."""
    kinds = st.sampled_from([ValueError, KeyError, TimeoutError, ConnectionError, RuntimeError])
    return st.builds(
        lambda kind, message: FailureDetails.from_exception(kind(message)),
        kinds,
        st.text(max_size=30),
    )


def activity_outcomes(
    task_id: int = 0, results: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[TaskCompleted | TaskFailed]:
    """The event that answers activity `task_id`: its result, or its failure."""
    ok = st.builds(
        lambda value: TaskCompleted(
            timestamp=_T0, task_id=task_id, result=_CODEC.encode(value, "result")
        ),
        results if results is not None else payloads(),
    )
    failed = st.builds(
        lambda failure: TaskFailed(timestamp=_T0, task_id=task_id, failure=failure), failures()
    )
    return ok | failed


def event_schedules(
    names: Sequence[str],
    data: st.SearchStrategy[Any] | None = None,
    *,
    max_size: int = 5,
    within: timedelta = timedelta(days=1),
) -> st.SearchStrategy[list[tuple[timedelta, EventRaised]]]:
    """External events and when they arrive (a delay from the start), in arrival order."""
    one = st.tuples(
        st.timedeltas(min_value=timedelta(0), max_value=within),
        st.sampled_from(list(names)),
        data if data is not None else payloads(),
    )

    def build(items: list[tuple[timedelta, str, Any]]) -> list[tuple[timedelta, EventRaised]]:
        ordered = sorted(items, key=lambda item: item[0])
        return [
            (delay, EventRaised(timestamp=_T0 + delay, name=name, input=_CODEC.encode(v, "d")))
            for delay, name, v in ordered
        ]

    return st.lists(one, max_size=max_size).map(build)


def histories(
    orchestrator: Callable[..., Any],
    *,
    activities: Iterable[Callable[..., Any]] = (),
    inputs: st.SearchStrategy[Any] | None = None,
    activity_results: dict[str, st.SearchStrategy[Any]] | None = None,
    child_results: st.SearchStrategy[Any] | None = None,
    event_data: st.SearchStrategy[Any] | None = None,
    failures: bool = True,
    max_steps: int = 30,
    engine_options: EngineOptions | None = None,
) -> st.SearchStrategy[History]:
    """Histories of runs of `orchestrator`, recorded as a worker would record them.

    The runs are chosen as `check_determinism` chooses them (completion orders, results,
    failures, events), and checked the same way while they are made. The history is the
    last execution's (after a continue-as-new, the new one's).
    """
    registry = Registry()
    registry.add_orchestrator(orchestrator)
    for fn in activities:
        registry.add_activity(fn)
    chance = Chance(
        st=st,
        results=dict(activity_results or {}),
        children=child_results if child_results is not None else st.none(),
        event_data=event_data if event_data is not None else payloads(max_leaves=3),
        failures=failures,
    )
    options = engine_options or EngineOptions()
    name = get_name(orchestrator)

    @st.composite
    def build(draw: Any) -> History:
        run = Run(registry, options)
        value = draw(inputs if inputs is not None else st.none())
        simulate(_Labelled(draw), run, chance, name=name, value=value, steps=max_steps)
        return History(run.history)

    return build()


class _Labelled:
    """`st.data()`'s `draw(strategy, label=...)` over a composite's `draw`."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        self._draw = draw

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        del label
        return self._draw(strategy)
