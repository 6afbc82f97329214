"""`Agent`: the tool-calling agent loop as an orchestration, with approvals and bounded history."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, Protocol

import msgspec

from durable.ai._approval import Approval, await_approval
from durable.ai._model import DEFAULT_MODEL_RETRY, generate
from durable.ai._tools import Tool
from durable.ai._types import (
    Content,
    FunctionCall,
    FunctionDeclaration,
    FunctionResponse,
    ModelRequest,
    Part,
    user,
)
from durable.core.context import OrchestrationContext
from durable.core.errors import TaskFailedError
from durable.core.tasks import CompletableTask, RetryPolicy, Task, when_all

ESCALATE = "escalate"
TRANSFER_PREFIX = "transfer_to_"

Stopped = Literal["done", "max_turns", "escalated"]

log = logging.getLogger("durable.ai.agent")
"""What agents do, logged once per decision: the replay-safe logger skips replays."""


class AgentInput(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What an agent orchestration starts from (a plain string is taken as `prompt`).

    Attributes:
        prompt: the new user message.
        messages: the conversation before it (carried across continue-as-new).
        state: values shared between agents (`output_key`) and used in instructions
            (`{key}` in an instruction is replaced by `state[key]`).
        turn: model turns already taken (counts toward `max_turns` across runs).
    """

    prompt: str | None = None
    messages: tuple[Content, ...] = ()
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    turn: int = 0


class AgentResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How an agent run ended.

    Attributes:
        text: the final answer's text.
        agent: the agent that gave it (a sub-agent after a transfer).
        turns: model turns taken in all.
        stopped: "done", "max_turns" (the cap was reached), or "escalated".
        state: the shared state, with this agent's `output_key` set.
    """

    text: str
    agent: str
    turns: int = 0
    stopped: Stopped = "done"
    state: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def escalated(self) -> bool:
        """Whether the agent asked to leave its loop (`LoopAgent`)."""
        return self.stopped == "escalated"


class AgentLike(Protocol):
    """What workflow agents and agent tools need of an agent."""

    name: str
    description: str
    orchestrator: Callable[..., Any]

    def orchestrators(self) -> list[Callable[..., Any]]: ...

    def activities(self) -> list[Callable[..., Any]]: ...


class AgentTool:
    """An agent offered to another agent as a tool: each call runs it as a child orchestration.

    The model passes one argument, `request`; the tool answers with the agent's final text.
    """

    needs_approval = False

    def __init__(self, agent: AgentLike, *, description: str | None = None) -> None:
        self.agent = agent
        self.name = agent.name
        self.description = description or agent.description or f"Ask the {agent.name} agent."

    @property
    def declaration(self) -> FunctionDeclaration:
        return FunctionDeclaration(
            name=self.name,
            description=self.description,
            parameters={
                "type": "object",
                "properties": {
                    "request": {"type": "string", "description": "what to ask the agent"}
                },
                "required": ["request"],
            },
        )

    def start(self, ctx: OrchestrationContext, call: FunctionCall) -> CompletableTask[Any]:
        request = str(call.args.get("request", ""))
        return ctx.call_sub_orchestrator(
            self.agent.name, input=AgentInput(prompt=request), return_type=AgentResult
        )


def agent_tool(agent: AgentLike, *, description: str | None = None) -> AgentTool:
    """Offer `agent` as a tool; its calls run as child orchestrations."""
    return AgentTool(agent, description=description)


ToolLike = Tool | AgentTool


class Agent:
    """A model with instructions and tools, run as a durable orchestration named `name`.

    Each turn calls the model (an activity), then runs the tools it asks for as parallel
    activities, until it answers without calling a tool. Tools that need approval wait
    for a human (an external event) or a timeout. Every `continue_as_new_every` turns, or
    when the history grows large, the agent continues as new with a compacted
    conversation, so its history stays bounded however long it runs.

    Args:
        name: the orchestration's name (and the name other agents use for it).
        instructions: the system instruction; `{key}` is replaced by `state[key]`.
        description: what the agent does (told to agents that can transfer or call it).
        model: the alias of the model it calls.
        tools: tools (`@ai.tool` functions) and agents offered as tools (`agent_tool`).
        sub_agents: agents it may hand the conversation over to (a `transfer_to_<name>`
            tool each); the sub-agent's answer is the final answer.
        output_key: store the final text in `state[output_key]`.
        max_turns: the cap on model turns, across continue-as-new.
        continue_as_new_every: turns per execution before continuing as new.
        keep_messages: messages kept verbatim when the conversation is compacted.
        summarizer: the alias of a model that summarizes the older messages when
            compacting (None: they are dropped, the first user message stays).
        approval_event: the external event that answers approvals.
        approval_timeout: how long to wait for it.
        approve_on_timeout: the decision when no answer comes in time.
        can_escalate: offer an `escalate` tool that ends the run with `stopped="escalated"`
            (a `LoopAgent` then stops looping).
        temperature: sampling temperature.
        stream: an orchestration stream to write the model's text to as it arrives.
        model_retry: the retry policy of model calls.
    """

    def __init__(
        self,
        name: str,
        *,
        instructions: str = "",
        description: str = "",
        model: str = "default",
        tools: Sequence[ToolLike] = (),
        sub_agents: Sequence[AgentLike] = (),
        output_key: str | None = None,
        max_turns: int = 50,
        continue_as_new_every: int = 20,
        keep_messages: int = 12,
        summarizer: str | None = None,
        approval_event: str = "approval",
        approval_timeout: timedelta = timedelta(hours=24),
        approve_on_timeout: bool = False,
        can_escalate: bool = False,
        temperature: float | None = None,
        stream: str | None = None,
        model_retry: RetryPolicy | None = DEFAULT_MODEL_RETRY,
    ) -> None:
        if max_turns < 1 or continue_as_new_every < 1 or keep_messages < 1:
            raise ValueError("max_turns, continue_as_new_every and keep_messages must be >= 1")
        self.name = name
        self.instructions = instructions
        self.description = description
        self.model = model
        self.tools: dict[str, ToolLike] = {}
        for t in tools:
            if t.name in self.tools:
                raise ValueError(f"agent {name!r}: two tools are named {t.name!r}")
            self.tools[t.name] = t
        self.sub_agents = {TRANSFER_PREFIX + a.name: a for a in sub_agents}
        self.output_key = output_key
        self.max_turns = max_turns
        self.continue_as_new_every = continue_as_new_every
        self.keep_messages = keep_messages
        self.summarizer = summarizer
        self.approval_event = approval_event
        self.approval_timeout = approval_timeout
        self.approve_on_timeout = approve_on_timeout
        self.can_escalate = can_escalate
        self.temperature = temperature
        self.stream = stream
        self.model_retry = model_retry
        self.orchestrator = _named(self._run, name)

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, tools={list(self.tools)})"

    # -- what a worker registers -----------------------------------------------------

    def orchestrators(self) -> list[Callable[..., Any]]:
        """This agent's orchestrator and those of the agents it calls or transfers to."""
        found: dict[str, Callable[..., Any]] = {self.name: self.orchestrator}
        for other in self._agents():
            for fn in other.orchestrators():
                found.setdefault(fn.__name__, fn)
        return list(found.values())

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of its tools, and of the agents it calls or transfers to."""
        found: dict[str, Callable[..., Any]] = {
            t.activity_name: t.activity for t in self.tools.values() if isinstance(t, Tool)
        }
        for other in self._agents():
            for fn in other.activities():
                found.setdefault(fn.__name__, fn)
        return list(found.values())

    def _agents(self) -> Iterable[AgentLike]:
        yield from self.sub_agents.values()
        yield from (t.agent for t in self.tools.values() if isinstance(t, AgentTool))

    def declarations(self) -> tuple[FunctionDeclaration, ...]:
        """What the model is told it may call."""
        out = [t.declaration for t in self.tools.values()]
        for tool_name, agent in self.sub_agents.items():
            out.append(
                FunctionDeclaration(
                    name=tool_name,
                    description=f"Hand the conversation over to the {agent.name} agent. "
                    f"{agent.description}".strip(),
                    parameters={"type": "object", "properties": {}},
                )
            )
        if self.can_escalate:
            out.append(
                FunctionDeclaration(
                    name=ESCALATE,
                    description="Call this when the goal is met and no more rounds are needed.",
                    parameters={"type": "object", "properties": {}},
                )
            )
        return tuple(out)

    # -- the loop --------------------------------------------------------------------

    def _run(
        self,
        ctx: OrchestrationContext,
        input: AgentInput | str | None,  # noqa: A002
    ) -> Generator[Task[Any], Any, AgentResult | None]:
        start = _as_input(input)
        state = dict(start.state)
        conversation = list(start.messages)
        if start.prompt:
            conversation.append(user(start.prompt))
        turn = start.turn
        declarations = self.declarations()
        ran = 0
        last_text = ""
        while True:
            if turn >= self.max_turns:
                return self._result(ctx, last_text, turn, "max_turns", state)
            if ran >= self.continue_as_new_every or (ran and ctx.is_continue_as_new_suggested):
                messages = yield from self._compact(ctx, conversation)
                ctx.continue_as_new(AgentInput(messages=tuple(messages), state=state, turn=turn))
                return None
            ctx.set_custom_status({"agent": self.name, "turn": turn + 1, "step": "model"})
            response = yield generate(
                ctx,
                ModelRequest(
                    contents=tuple(conversation),
                    model=self.model,
                    system_instruction=_fill(self.instructions, state) or None,
                    tools=declarations,
                    temperature=self.temperature,
                    stream=self.stream,
                ),
                retry_policy=self.model_retry,
            )
            turn += 1
            ran += 1
            conversation.append(response.content)
            last_text = response.text or last_text
            calls = response.function_calls
            ctx.create_replay_safe_logger(log).debug(
                "agent %s (%s): turn %d: the model asked for %s",
                self.name,
                ctx.instance_id,
                turn,
                ", ".join(c.name for c in calls) or "nothing more",
            )
            if not calls:
                return self._result(ctx, response.text, turn, "done", state)
            for call in calls:
                if call.name == ESCALATE and self.can_escalate:
                    return self._result(ctx, last_text, turn, "escalated", state)
                target = self.sub_agents.get(call.name)
                if target is not None:
                    handed = AgentInput(messages=tuple(conversation[:-1]), state=state)
                    result: AgentResult = yield ctx.call_sub_orchestrator(
                        target.name, input=handed, return_type=AgentResult
                    )
                    merged = {**state, **result.state}
                    final = self._result(
                        ctx, result.text, turn + result.turns, result.stopped, merged
                    )
                    return msgspec.structs.replace(final, agent=result.agent)
            answers = yield from self._run_tools(ctx, calls, turn)
            conversation.append(Content(role="user", parts=tuple(answers)))

    def _result(
        self,
        ctx: OrchestrationContext,
        text: str,
        turn: int,
        stopped: Stopped,
        state: dict[str, Any],
    ) -> AgentResult:
        ctx.set_custom_status({"agent": self.name, "turn": turn, "step": stopped})
        ctx.create_replay_safe_logger(log).info(
            "agent %s (%s) stopped (%s) after %d turns", self.name, ctx.instance_id, stopped, turn
        )
        if self.output_key is not None:
            state = {**state, self.output_key: text}
        return AgentResult(text=text, agent=self.name, turns=turn, stopped=stopped, state=state)

    def _run_tools(
        self, ctx: OrchestrationContext, calls: Sequence[FunctionCall], turn: int
    ) -> Generator[Task[Any], Any, list[Part]]:
        ids = [c.id or f"{turn}.{i}" for i, c in enumerate(calls)]
        approval = Approval(approved=True)
        pending = [
            {"id": i, "name": c.name, "args": c.args}
            for i, c in zip(ids, calls, strict=True)
            if (t := self.tools.get(c.name)) is not None and t.needs_approval
        ]
        if pending:
            approval = yield from self._await_approval(ctx, turn, pending)
        answers: list[dict[str, Any] | None] = [None] * len(calls)
        started: list[tuple[int, ToolLike, CompletableTask[Any]]] = []
        for n, (call_id, call) in enumerate(zip(ids, calls, strict=True)):
            found = self.tools.get(call.name)
            if found is None:
                known = ", ".join(self.tools) or "none"
                answers[n] = {"error": f"there is no tool named {call.name!r} (tools: {known})"}
            elif found.needs_approval and not approval.allows(call_id):
                why = f": {approval.reason}" if approval.reason else ""
                answers[n] = {"error": f"a human did not approve this call{why}"}
            else:
                started.append((n, found, found.start(ctx, call)))
        if started:
            ctx.set_custom_status(
                {
                    "agent": self.name,
                    "turn": turn,
                    "step": "tools",
                    "tools": [t.name for _, t, _ in started],
                }
            )
            # Each failure goes back to the model as that call's answer.
            with contextlib.suppress(TaskFailedError):
                yield when_all([task for _, _, task in started])
            for n, found, task in started:
                answers[n] = _answer(found, task)
        return [
            Part(
                function_response=FunctionResponse(
                    name=call.name, response=answer or {}, id=call.id
                )
            )
            for call, answer in zip(calls, answers, strict=True)
        ]

    def _await_approval(
        self, ctx: OrchestrationContext, turn: int, pending: list[dict[str, Any]]
    ) -> Generator[Task[Any], Any, Approval]:
        status = {
            "agent": self.name,
            "turn": turn,
            "step": "approval",
            "event": self.approval_event,
            "calls": pending,
        }
        ctx.create_replay_safe_logger(log).info(
            "agent %s (%s): waiting for approval of %s (event %r)",
            self.name,
            ctx.instance_id,
            ", ".join(str(p["name"]) for p in pending),
            self.approval_event,
        )
        return (
            yield from await_approval(
                ctx, self.approval_event, self.approval_timeout, self.approve_on_timeout, status
            )
        )

    def _compact(
        self, ctx: OrchestrationContext, conversation: list[Content]
    ) -> Generator[Task[Any], Any, list[Content]]:
        """The conversation to carry into the next execution, bounded in size."""
        if len(conversation) <= self.keep_messages:
            return conversation
        cut = len(conversation) - self.keep_messages
        while cut < len(conversation) and conversation[cut].role != "model":
            cut += 1  # the kept tail starts with a model turn, never an orphan answer
        first = conversation[0]
        task = first.text if first.role == "user" else ""
        if self.summarizer is None:
            head = user(task) if task else user("(earlier messages were dropped)")
            return [head, *conversation[cut:]]
        # One plain-text user turn: no function-call parts reach a request without tools.
        summary = yield generate(
            ctx,
            "Summarize this conversation for your own later use: the task, what was done, "
            "what was found, and what is still open. Be brief.\n\n"
            + _transcript(conversation[:cut]),
            model=self.summarizer,
            retry_policy=self.model_retry,
        )
        head = user(f"{task}\n\nSummary of the conversation so far:\n{summary.text}".strip())
        return [head, *conversation[cut:]]


def _transcript(contents: Sequence[Content]) -> str:
    """The conversation as text, one line per part, for a summarizer."""
    lines = []
    for content in contents:
        for part in content.parts:
            if part.thought:
                continue
            if part.text:
                lines.append(f"{content.role}: {part.text}")
            if (call := part.function_call) is not None:
                lines.append(f"{content.role} called {call.name}({_json(call.args)})")
            if (answer := part.function_response) is not None:
                lines.append(f"{answer.name} answered: {_json(answer.response)}")
    return "\n".join(lines)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _answer(found: ToolLike, task: Task[Any]) -> dict[str, Any]:
    if task.is_failed:
        details = task.get_exception().details
        return {"error": f"{details.error_type.rsplit('.', 1)[-1]}: {details.message}"}
    result = task.get_result()
    if isinstance(found, AgentTool):
        return {"result": result.text}
    if isinstance(result, Mapping):
        return dict(result)
    return {"result": result}


def _as_input(value: AgentInput | str | Mapping[str, Any] | None) -> AgentInput:
    if value is None:
        return AgentInput()
    if isinstance(value, str):
        return AgentInput(prompt=value)
    if isinstance(value, AgentInput):
        return value
    return msgspec.convert(value, AgentInput)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _fill(template: str, state: Mapping[str, Any]) -> str:
    """Replace `{key}` by `state[key]`; anything else in braces stays as it is."""
    return _PLACEHOLDER.sub(
        lambda m: str(state[m.group(1)]) if m.group(1) in state else m.group(0), template
    )


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def orchestrator(
        ctx: OrchestrationContext,
        input: Any = None,  # noqa: A002
    ) -> Generator[Task[Any], Any, Any]:
        return (yield from fn(ctx, input))

    orchestrator.__name__ = orchestrator.__qualname__ = name
    return orchestrator
