"""check_determinism: it catches each trap, shows a small run, and passes the seed patterns."""

from __future__ import annotations

import importlib.util
import os
import random
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import strategies as st

from durable import demo, task
from durable.testing import DeterminismCheckError, check_determinism


def double(ctx: task.ActivityContext, x: int) -> int:
    return 2 * x


def check(orchestrator: Any, **kw: Any) -> None:
    kw.setdefault("activities", [double])
    kw.setdefault("input", 3)
    kw.setdefault("max_examples", 25)
    check_determinism(orchestrator, **kw)


# -- the traps --------------------------------------------------------------------------


def branches_on_random(ctx: task.OrchestrationContext, n: int) -> Any:
    if random.random() < 0.5:
        yield ctx.call_activity(double, input=n)
    return n


def branches_on_the_clock(ctx: task.OrchestrationContext, n: int) -> Any:
    if datetime.now().microsecond % 2:
        yield ctx.create_timer(timedelta(seconds=1))
    return n


def branches_on_the_environment(ctx: task.OrchestrationContext, n: int) -> Any:
    if os.environ.get("FAST_MODE"):
        return n
    return (yield ctx.call_activity(double, input=n))


def reads_getenv(ctx: task.OrchestrationContext, n: int) -> Any:
    mode = os.getenv("MODE", "slow")
    return (yield ctx.call_activity(double, input=len(mode)))


def uses_uuid(ctx: task.OrchestrationContext, n: int) -> Any:
    key = uuid.uuid4().hex
    return (yield ctx.call_activity(double, input=len(key)))


def uses_time(ctx: task.OrchestrationContext, n: int) -> Any:
    started = time.time()
    yield ctx.call_activity(double, input=n)
    return started > 0


SEEN: list[int] = []


def branches_on_a_global(ctx: task.OrchestrationContext, n: int) -> Any:
    SEEN.append(n)  # state that outlives the execution: it differs on replay
    if len(SEEN) % 2:
        yield ctx.call_activity(double, input=n)
    return (yield ctx.call_activity(double, input=n + 1))


COUNTER = [0]


def passes_a_global_as_input(ctx: task.OrchestrationContext, n: int) -> Any:
    COUNTER[0] += 1
    return (yield ctx.call_activity(double, input=COUNTER[0]))


@pytest.mark.parametrize(
    ("orchestrator", "names"),
    [
        (branches_on_random, "random.random()"),
        (branches_on_the_clock, "datetime.now()"),
        (branches_on_the_environment, "os.environ"),
        (reads_getenv, "os.getenv()"),
        (uses_uuid, "uuid.uuid4()"),
        (uses_time, "time.time()"),
    ],
)
def test_a_call_to_a_clock_randomness_or_the_environment_is_named_with_its_line(
    orchestrator: Any, names: str
) -> None:
    with pytest.raises(DeterminismCheckError) as caught:
        check(orchestrator)
    message = str(caught.value)
    assert names in message
    assert f"{Path(__file__).name}:" in message  # the line in the user's code
    assert "The run that shows it" in message


def test_mutable_global_state_is_caught_by_the_replay_after_each_step() -> None:
    SEEN.clear()
    with pytest.raises(DeterminismCheckError, match="full replay") as caught:
        check(branches_on_a_global)
    assert "step 1: start with input" in str(caught.value)


def test_arguments_computed_from_global_state_are_compared_too() -> None:
    with pytest.raises(DeterminismCheckError) as caught:
        check(passes_a_global_as_input)
    message = str(caught.value)
    assert "call_activity('double', input=" in message
    assert "live:" in message and "replay:" in message


# -- what passes ------------------------------------------------------------------------


def careful(ctx: task.OrchestrationContext, n: int) -> Any:
    """Everything allowed: ctx time, events, timers, races, retries, children."""
    started = ctx.current_utc_datetime
    a = yield ctx.call_activity(double, input=n)
    b, c = yield task.when_all(
        [ctx.call_activity(double, input=a), ctx.call_activity(double, input=a + 1)]
    )
    approval = ctx.wait_for_external_event("approve")
    deadline = ctx.create_timer(started + timedelta(hours=1))
    winner = yield task.when_any([approval, deadline])
    if winner is approval:
        deadline.cancel()
    child = yield ctx.call_sub_orchestrator("helper", input=b)
    if n > 0 and not ctx.is_replaying:
        ctx.set_custom_status({"done": True})
    return [a, b, c, winner is approval, child]


def draws_the_safe_way(ctx: task.OrchestrationContext, n: int) -> Any:
    rng = ctx.random()
    picks = [rng.random(), rng.choice("abc"), rng.randint(1, 6), ctx.new_uuid()]
    if picks[0] < 0.5:
        yield ctx.call_activity(double, input=picks[2])
    return picks


def test_ctx_random_and_ctx_new_uuid_are_allowed() -> None:
    check(draws_the_safe_way)


def test_a_careful_orchestrator_passes_with_inputs_from_a_strategy() -> None:
    check(careful, input=None, inputs=st.integers(-5, 5), max_examples=40)


def _patterns() -> ModuleType:
    path = Path(__file__).parents[1] / "runtime" / "test_patterns.py"
    spec = importlib.util.spec_from_file_location("seed_patterns", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys  # noqa: PLC0415

    sys.path.insert(0, str(path.parent))  # it imports its helpers by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


PATTERNS = _patterns()


@pytest.mark.parametrize(
    ("name", "value", "kw"),
    [
        ("prompt_chaining", "durable execution", {}),
        ("route_query", "my invoice is wrong", {}),
        ("review", "a draft to check", {}),
        ("majority_vote", "is replay deterministic?", {}),
        ("orchestrator_workers", "ship the release", {"child_results": st.text(max_size=5)}),
        ("evaluator_optimizer", {"topic": "replay", "max_rounds": 3}, {}),
        (
            "agent_loop",
            {"turn": 0, "results": [], "approval_timeout": 60},
            {"event_data": st.fixed_dictionaries({"approved": st.booleans()})},
        ),
    ],
)
def test_the_seed_patterns_pass(name: str, value: Any, kw: dict[str, Any]) -> None:
    acts = [
        getattr(PATTERNS, a)
        for a in dir(PATTERNS)
        if callable(getattr(PATTERNS, a))
        and getattr(getattr(PATTERNS, a), "__code__", None) is not None
        and getattr(PATTERNS, a).__code__.co_varnames[:1] == ("ctx",)
        and "ActivityContext" in str(getattr(PATTERNS, a).__annotations__.get("ctx", ""))
    ]
    check(getattr(PATTERNS, name), activities=acts, input=value, max_examples=20, **kw)


def test_the_demo_agent_passes() -> None:
    check(
        demo.research_agent,
        activities=[],
        input="durable execution",
        activity_results={
            "plan": st.lists(st.text(max_size=8), min_size=1, max_size=4),
            "write_section": st.text(max_size=8),
            "review": st.text(max_size=8),
            "publish": st.text(max_size=8),
        },
        event_data=st.booleans(),
        max_examples=30,
    )
