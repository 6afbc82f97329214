"""Workflow agents (as in ADK): sequential, parallel and loop composition of agents."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from durable.ai._agent import AgentInput, AgentLike, AgentResult, _as_input, _named
from durable.core.context import OrchestrationContext
from durable.core.tasks import Task, when_all


class _Workflow:
    """Runs sub-agents as child orchestrations that share `state` through output keys."""

    def __init__(self, name: str, agents: Sequence[AgentLike], description: str = "") -> None:
        if not agents:
            raise ValueError(f"workflow agent {name!r} needs at least one agent")
        self.name = name
        self.description = description
        self.agents = list(agents)
        self.orchestrator = _named(self._run, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {[a.name for a in self.agents]})"

    def orchestrators(self) -> list[Callable[..., Any]]:
        """Its own orchestrator and those of every agent under it."""
        found: dict[str, Callable[..., Any]] = {self.name: self.orchestrator}
        for agent in self.agents:
            for fn in agent.orchestrators():
                found.setdefault(fn.__name__, fn)
        return list(found.values())

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of every agent under it."""
        found: dict[str, Callable[..., Any]] = {}
        for agent in self.agents:
            for fn in agent.activities():
                found.setdefault(fn.__name__, fn)
        return list(found.values())

    def _run(
        self,
        ctx: OrchestrationContext,
        input: AgentInput | str | None,  # noqa: A002
    ) -> Generator[Task[Any], Any, AgentResult]:
        raise NotImplementedError  # each kind below

    def _call(
        self, ctx: OrchestrationContext, agent: AgentLike, prompt: str | None, state: dict[str, Any]
    ) -> Task[AgentResult]:
        return ctx.call_sub_orchestrator(
            agent.name, input=AgentInput(prompt=prompt, state=state), return_type=AgentResult
        )


class SequentialAgent(_Workflow):
    """Runs its agents one after the other, each seeing the state the previous ones left.

    Stops early if one escalates.
    """

    def _run(
        self,
        ctx: OrchestrationContext,
        input: AgentInput | str | None,  # noqa: A002
    ) -> Generator[Task[Any], Any, AgentResult]:
        start = _as_input(input)
        state = dict(start.state)
        last = AgentResult(text="", agent=self.name, state=state)
        turns = 0
        for agent in self.agents:
            last = yield self._call(ctx, agent, start.prompt, state)
            state, turns = dict(last.state), turns + last.turns
            if last.escalated:
                break
        return AgentResult(
            text=last.text, agent=self.name, turns=turns, stopped=last.stopped, state=state
        )


class ParallelAgent(_Workflow):
    """Runs its agents at once on the same state; their output keys are merged in order."""

    def _run(
        self,
        ctx: OrchestrationContext,
        input: AgentInput | str | None,  # noqa: A002
    ) -> Generator[Task[Any], Any, AgentResult]:
        start = _as_input(input)
        results: list[AgentResult] = yield when_all(
            [self._call(ctx, a, start.prompt, dict(start.state)) for a in self.agents]
        )
        state = dict(start.state)
        for r in results:
            state.update({k: v for k, v in r.state.items() if start.state.get(k) != v})
        text = "\n\n".join(f"[{r.agent}] {r.text}" for r in results)
        turns = sum(r.turns for r in results)
        return AgentResult(text=text, agent=self.name, turns=turns, state=state)


class LoopAgent(_Workflow):
    """Runs its agents in sequence, again and again, until one escalates or
    `max_iterations` rounds are done.

    Args:
        name: the orchestration's name.
        agents: the agents of one round, in order.
        max_iterations: the cap on rounds.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[AgentLike],
        *,
        max_iterations: int = 10,
        description: str = "",
    ) -> None:
        if max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        super().__init__(name, agents, description)
        self.max_iterations = max_iterations

    def _run(
        self,
        ctx: OrchestrationContext,
        input: AgentInput | str | None,  # noqa: A002
    ) -> Generator[Task[Any], Any, AgentResult]:
        start = _as_input(input)
        state = dict(start.state)
        last = AgentResult(text="", agent=self.name, state=state)
        turns = 0
        for _ in range(self.max_iterations):
            for agent in self.agents:
                last = yield self._call(ctx, agent, start.prompt, state)
                state, turns = dict(last.state), turns + last.turns
                if last.escalated:
                    return AgentResult(
                        text=last.text, agent=self.name, turns=turns, stopped="done", state=state
                    )
        return AgentResult(
            text=last.text, agent=self.name, turns=turns, stopped="max_turns", state=state
        )
