"""Tools: plain functions the model may call, run as activities, declared from their signatures."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, overload

import msgspec

from durable.ai._types import FunctionCall, FunctionDeclaration
from durable.core.context import ActivityContext, OrchestrationContext
from durable.core.errors import DurableError
from durable.core.tasks import CompletableTask, RetryPolicy

TOOL_PREFIX = "durable.ai.tool."

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Yields|Raises|Examples?|Notes?):\s*$"
)


class ToolArgumentsError(DurableError):
    """The model called a tool with arguments that do not fit its signature (not retried)."""


ToolArgumentsError.__module__ = "durable.ai"


class Tool:
    """A function the model may call; it runs as an activity named `durable.ai.tool.<name>`.

    Make one with the `tool` decorator. Its declaration (what the model is told) comes
    from the signature's type hints and the Google-style docstring.

    Attributes:
        name: the name the model calls it by.
        description: the docstring's summary.
        parameters: the JSON schema of its arguments.
        needs_approval: a human must approve each call (see `Agent`).
        retry_policy: how a failed call is retried before the model hears of the error.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool = False,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"a tool must be a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not _NAME.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use letters, digits, '_', '.', ':' or '-', "
                "starting with a letter or '_', at most 64 characters"
            )
        summary, arg_docs = _docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self.needs_approval = needs_approval
        self.retry_policy = _never_for_bad_arguments(retry_policy)
        self._takes_ctx, self._args_type = _arguments_struct(fn, self.name)
        self.parameters = _schema(self._args_type, arg_docs)
        self.activity = self._make_activity()

    def __repr__(self) -> str:
        return f"Tool({self.name!r}{', needs_approval=True' if self.needs_approval else ''})"

    @property
    def declaration(self) -> FunctionDeclaration:
        """What the model is told about the tool."""
        return FunctionDeclaration(
            name=self.name, description=self.description, parameters=self.parameters
        )

    @property
    def activity_name(self) -> str:
        """The name of the activity that runs it."""
        return TOOL_PREFIX + self.name

    def start(self, ctx: OrchestrationContext, call: FunctionCall) -> CompletableTask[Any]:
        """Schedule the call as an activity; the task's result is the tool's return value."""
        return ctx.call_activity(
            self.activity_name, input=call.args, retry_policy=self.retry_policy
        )

    def _arguments(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            value = msgspec.convert(args, self._args_type)
        except msgspec.ValidationError as e:
            raise ToolArgumentsError(f"bad arguments for tool {self.name!r}: {e}") from None
        return {f: getattr(value, f) for f in value.__struct_fields__}

    def _make_activity(self) -> Callable[..., Any]:
        fn, takes_ctx, arguments = self.fn, self._takes_ctx, self._arguments
        if inspect.iscoroutinefunction(fn):

            async def run_async(ctx: ActivityContext, args: dict[str, Any]) -> Any:
                kwargs = arguments(args or {})
                return await (fn(ctx, **kwargs) if takes_ctx else fn(**kwargs))

            run: Callable[..., Any] = run_async
        else:

            def run_sync(ctx: ActivityContext, args: dict[str, Any]) -> Any:
                kwargs = arguments(args or {})
                return fn(ctx, **kwargs) if takes_ctx else fn(**kwargs)

            run = run_sync
        run.__name__ = run.__qualname__ = self.activity_name
        return run


def _never_for_bad_arguments(policy: RetryPolicy | None) -> RetryPolicy | None:
    # The same arguments would fail the same way: the model hears of it at once.
    if policy is None or ToolArgumentsError in policy.non_retryable_error_types:
        return policy
    return RetryPolicy(
        policy.first_retry_interval,
        policy.max_number_of_attempts,
        policy.backoff_coefficient,
        policy.max_retry_interval,
        policy.retry_timeout,
        (*policy.non_retryable_error_types, ToolArgumentsError),
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    retry_policy: RetryPolicy | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    retry_policy: RetryPolicy | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a plain function (sync or async) a tool: `@ai.tool` or `@ai.tool(needs_approval=True)`.

    The function may take an `ActivityContext` first (named `ctx`) for an idempotency key;
    its other parameters, with their type hints, are what the model fills in.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            needs_approval=needs_approval,
            retry_policy=retry_policy,
        )

    return wrap(fn) if fn is not None else wrap


def _arguments_struct(fn: Callable[..., Any], name: str) -> tuple[bool, type[msgspec.Struct]]:
    params = list(inspect.signature(fn).parameters.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: the arguments are plain JSON
        hints = {}
    takes_ctx = bool(params) and (
        params[0].name == "ctx" or hints.get(params[0].name) is ActivityContext
    )
    if takes_ctx:
        params = params[1:]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise TypeError(
                f"tool {name!r}: parameter {p.name!r} must be an ordinary named parameter"
            )
        annotation = hints.get(p.name, Any)
        if p.default is p.empty:
            fields.append((p.name, annotation))
        else:
            fields.append((p.name, annotation, p.default))
    try:
        struct = msgspec.defstruct(f"{name}_arguments", fields, forbid_unknown_fields=True)
        msgspec.json.schema(struct)
    except (TypeError, ValueError) as e:
        raise TypeError(f"tool {name!r}: its parameters have no JSON schema: {e}") from None
    return takes_ctx, struct


def _schema(struct: type[msgspec.Struct], docs: dict[str, str]) -> dict[str, Any]:
    raw = msgspec.json.schema(struct)
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs, 0)
    schema.pop("title", None)
    schema.setdefault("properties", {})
    for prop, text in docs.items():
        if prop in schema["properties"]:
            schema["properties"][prop]["description"] = text
    return schema


_DROPPED = frozenset({"$defs", "title", "additionalProperties"})


def _inline(node: Any, defs: dict[str, Any], depth: int) -> Any:
    # Providers accept a subset of JSON schema: resolve $ref, drop titles.
    if depth > 20:
        raise TypeError("tool argument types must not be recursive")
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return _inline(target, defs, depth + 1)
        return {k: _inline(v, defs, depth) for k, v in node.items() if k not in _DROPPED}
    if isinstance(node, list):
        return [_inline(v, defs, depth) for v in node]
    return node


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before the first section) and the `Args:` descriptions."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section = None
    current = None
    args_indent = 0
    for line in doc.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            current = None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters") and line.strip():
            entry = re.match(r"^\s{0,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if entry and (current is None or _indent(line) <= args_indent):
                current = entry.group(1)
                args_indent = _indent(line)
                args[current] = entry.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(summary).strip(), args


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
