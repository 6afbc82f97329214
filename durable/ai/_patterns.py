"""The agent patterns as building blocks: generators an orchestrator runs with `yield from`.

Each model call in them is an activity and each sub-task a child orchestration, so a
crash in the middle of a pattern resumes it without paying twice for finished calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from durable.ai._agent import AgentInput, AgentLike, AgentResult
from durable.ai._model import DEFAULT_MODEL_RETRY, generate
from durable.ai._types import ModelResponse
from durable.core.context import OrchestrationContext
from durable.core.errors import DurableError
from durable.core.tasks import RetryPolicy, Task, when_all

Steps = Generator[Task[Any], Any, Any]


class GateFailedError(DurableError):
    """A chain step's output did not pass its gate, even after the allowed retries."""


GateFailedError.__module__ = "durable.ai"

Gate = Callable[[str], str | None]
"""Checks a step's output: None if it passes, else what is wrong (told to the model)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a prompt chain.

    Attributes:
        prompt: the step's prompt; `{input}` is replaced by the previous step's output.
        gate: a programmatic check of the output (None: no check).
        retries: how often the step is asked again, with the gate's complaint, before
            the chain fails with `GateFailedError`.
        system: the step's system instruction.
        model: the alias of the model to call.
    """

    prompt: str
    gate: Gate | None = None
    retries: int = 1
    system: str | None = None
    model: str = "default"


def chain(
    ctx: OrchestrationContext,
    steps: Sequence[Step],
    input: str,  # noqa: A002
    *,
    retry_policy: RetryPolicy | None = DEFAULT_MODEL_RETRY,
) -> Generator[Task[Any], Any, list[str]]:
    """Prompt chaining: each step works on the previous step's output.

    Returns:
        Every step's output, in order (the last is the chain's result).

    Raises:
        GateFailedError: a step's output failed its gate after its retries.
    """
    outputs: list[str] = []
    current = input
    for number, step in enumerate(steps, 1):
        prompt = step.prompt.replace("{input}", current)
        complaint: str | None = None
        for _ in range(step.retries + 1):
            asked = prompt if complaint is None else f"{prompt}\n\nFix this: {complaint}"
            response = yield generate(
                ctx, asked, model=step.model, system=step.system, retry_policy=retry_policy
            )
            current = response.text
            complaint = step.gate(current) if step.gate is not None else None
            if complaint is None:
                break
        if complaint is not None:
            raise GateFailedError(f"step {number} failed its gate: {complaint}")
        outputs.append(current)
    return outputs


def classify(
    ctx: OrchestrationContext,
    text: str,
    labels: Sequence[str],
    *,
    instructions: str = "Classify the user's message. Answer with one label.",
    model: str = "default",
    retry_policy: RetryPolicy | None = DEFAULT_MODEL_RETRY,
) -> Generator[Task[Any], Any, str]:
    """Routing, first half: a model picks one of `labels` for `text` (structured output).

    An answer outside `labels` becomes the first label, so routing always goes somewhere.
    """
    if not labels:
        raise ValueError("classify() needs at least one label")
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
    }
    response: ModelResponse = yield generate(
        ctx,
        text,
        system=f"{instructions}\nLabels: {', '.join(labels)}",
        json_schema=schema,
        model=model,
        retry_policy=retry_policy,
    )
    label = _field(response, "label")
    return label if label in labels else labels[0]


def route(
    ctx: OrchestrationContext,
    text: str,
    routes: Mapping[str, AgentLike],
    *,
    instructions: str = "Pick the agent best suited to answer the user's message.",
    model: str = "default",
) -> Generator[Task[Any], Any, AgentResult]:
    """Routing: classify `text`, then run the chosen agent as a child orchestration."""
    label = yield from classify(ctx, text, list(routes), instructions=instructions, model=model)
    result: AgentResult = yield ctx.call_sub_orchestrator(
        routes[label].name, input=AgentInput(prompt=text), return_type=AgentResult
    )
    return result


def sections(
    ctx: OrchestrationContext,
    prompts: Sequence[str],
    *,
    system: str | None = None,
    model: str = "default",
    retry_policy: RetryPolicy | None = DEFAULT_MODEL_RETRY,
) -> Generator[Task[Any], Any, list[str]]:
    """Parallelization by sectioning: independent prompts answered at once, in order."""
    responses: list[ModelResponse] = yield when_all(
        [generate(ctx, p, system=system, model=model, retry_policy=retry_policy) for p in prompts]
    )
    return [r.text for r in responses]


@dataclass(frozen=True, slots=True)
class Vote:
    """The outcome of `vote`: the winning answer, every answer, and the winner's count."""

    winner: str
    answers: list[str]
    count: int


def vote(
    ctx: OrchestrationContext,
    prompt: str,
    *,
    models: Sequence[str] = ("default", "default", "default"),
    system: str | None = None,
    normalize: Callable[[str], str] = lambda s: s.strip().lower(),
    retry_policy: RetryPolicy | None = DEFAULT_MODEL_RETRY,
) -> Generator[Task[Any], Any, Vote]:
    """Parallelization by voting: the same prompt to several models (or one model several
    times); the most common normalized answer wins, ties going to the earliest model."""
    responses: list[ModelResponse] = yield when_all(
        [generate(ctx, prompt, model=m, system=system, retry_policy=retry_policy) for m in models]
    )
    answers = [normalize(r.text) for r in responses]
    counts = Counter(answers)
    best = max(counts.values())
    winner = next(a for a in answers if counts[a] == best)
    return Vote(winner=winner, answers=answers, count=best)


def plan_and_run(
    ctx: OrchestrationContext,
    task: str,
    worker: AgentLike,
    *,
    instructions: str = "Split the task into independent subtasks, one sentence each.",
    max_subtasks: int = 8,
    model: str = "default",
) -> Generator[Task[Any], Any, list[tuple[str, AgentResult]]]:
    """Orchestrator-workers: a planner call splits `task` into subtasks; each runs as a
    child orchestration of `worker` at once.

    Returns:
        (subtask, result) pairs in the planner's order.
    """
    schema = {
        "type": "object",
        "properties": {"subtasks": {"type": "array", "items": {"type": "string"}}},
        "required": ["subtasks"],
    }
    plan: ModelResponse = yield generate(
        ctx,
        task,
        system=f"{instructions} At most {max_subtasks}.",
        json_schema=schema,
        model=model,
    )
    found = _field(plan, "subtasks")
    subtasks = [str(s) for s in found][:max_subtasks] if isinstance(found, list) else [task]
    results: list[AgentResult] = yield when_all(
        [
            ctx.call_sub_orchestrator(
                worker.name, input=AgentInput(prompt=s), return_type=AgentResult
            )
            for s in subtasks
        ]
    )
    return list(zip(subtasks, results, strict=True))


@dataclass(frozen=True, slots=True)
class Refined:
    """The outcome of `refine`: the last draft, whether it passed, and the rounds taken."""

    text: str
    passed: bool
    rounds: int
    feedback: str


def refine(
    ctx: OrchestrationContext,
    task: str,
    *,
    writer: str = "Do the task. If feedback is given, revise your draft to address it.",
    evaluator: str = "Judge the draft against the task. Pass it only if it fully succeeds.",
    max_rounds: int = 3,
    model: str = "default",
    judge_model: str | None = None,
) -> Generator[Task[Any], Any, Refined]:
    """Evaluator-optimizer: draft, judge (structured `pass`/`feedback`), revise, until the
    judge passes the draft or `max_rounds` drafts were made."""
    schema = {
        "type": "object",
        "properties": {"pass": {"type": "boolean"}, "feedback": {"type": "string"}},
        "required": ["pass", "feedback"],
    }
    draft, feedback = "", ""
    for round_ in range(1, max_rounds + 1):
        prompt = task if not draft else f"{task}\n\nDraft:\n{draft}\n\nFeedback:\n{feedback}"
        written: ModelResponse = yield generate(ctx, prompt, system=writer, model=model)
        draft = written.text
        judged: ModelResponse = yield generate(
            ctx,
            f"Task:\n{task}\n\nDraft:\n{draft}",
            system=evaluator,
            json_schema=schema,
            model=judge_model or model,
        )
        feedback = str(_field(judged, "feedback") or "")
        if _field(judged, "pass") is True:
            return Refined(text=draft, passed=True, rounds=round_, feedback=feedback)
    return Refined(text=draft, passed=False, rounds=max_rounds, feedback=feedback)


def _field(response: ModelResponse, name: str) -> Any:
    try:
        data = response.json()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return data.get(name) if isinstance(data, dict) else None
