"""What the runtime knows of a user's orchestrator or activity function."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from durable.core.entity import Entity, entity_name
from durable.core.errors import NotRegisteredError
from durable.core.payload import check_decodable


def get_name(fn: Callable[..., Any]) -> str:
    """The name a function is registered and called by: its `__name__`.

    Raises:
        ValueError: `fn` is a lambda, which has no usable name.
    """
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ValueError(f"cannot infer a name from {fn!r}: pass name=... explicitly")
    return name


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """A registered function: its name, how to call it, and its payload types.

    Attributes:
        name: the registered name.
        fn: the function.
        input_type: what the input decodes into (`Any` when not annotated).
        output_type: what its result decodes into for callers (`Any` when not annotated).
        takes_input: False for functions that take only the context.
        is_async: True for `async def` functions (allowed for activities only).
    """

    name: str
    fn: Callable[..., Any]
    input_type: object
    output_type: object
    takes_input: bool
    is_async: bool


def orchestrator_spec(fn: Callable[..., Any], name: str | None = None) -> FunctionSpec:
    """Describe an orchestrator, rejecting what cannot be one.

    Raises:
        TypeError: `fn` is an `async def` function or not callable.
        ValueError: no name can be inferred.
    """
    spec = _spec(fn, name)
    if spec.is_async or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"orchestrator {spec.name!r} is an async function; write it as a generator "
            "(`def` with `yield ctx.call_activity(...)`) so that it can be replayed"
        )
    return spec


def activity_spec(fn: Callable[..., Any], name: str | None = None) -> FunctionSpec:
    """Describe an activity (plain or `async def`)."""
    return _spec(fn, name)


_SPECS: dict[tuple[Callable[..., Any], str | None], FunctionSpec] = {}
"""Descriptions made so far (clients ask at every call); at most `_SPECS_KEPT`."""
_SPECS_KEPT = 1024


def _spec(fn: Callable[..., Any], name: str | None) -> FunctionSpec:
    try:
        spec = _SPECS.get((fn, name))
    except TypeError:  # an unhashable callable object: described each time
        return _describe(fn, name)
    if spec is None:
        spec = _describe(fn, name)
        if len(_SPECS) < _SPECS_KEPT:
            _SPECS[fn, name] = spec
    return spec


def _describe(fn: Callable[..., Any], name: str | None) -> FunctionSpec:
    if not callable(fn):
        raise TypeError(f"expected a function, got {fn!r}")
    name = get_name(fn) if name is None else name
    if not name:
        raise ValueError("the name must not be empty")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    takes_input = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to plain JSON
        hints = {}
    input_type: object = Any
    if takes_input and len(positional) >= 2:
        input_type = _decodable(hints.get(positional[1].name, Any))
    output_type = _decodable(_result_type(hints.get("return", Any)))
    return FunctionSpec(
        name=name,
        fn=fn,
        input_type=input_type,
        output_type=output_type,
        takes_input=takes_input,
        is_async=inspect.iscoroutinefunction(fn),
    )


@functools.lru_cache(maxsize=4096)
def declared_output_type(fn: Callable[..., Any]) -> object:
    """What `fn`'s result decodes into, from its return annotation (`Any` if none)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references, or not a function at all
        return Any
    return _decodable(_result_type(hints.get("return", Any)))


def _result_type(annotation: object) -> object:
    # Generator[Task, Any, R] annotates an orchestrator returning R.
    origin = typing.get_origin(annotation)
    if origin is Generator or origin is typing.Generator:
        args = typing.get_args(annotation)
        return args[2] if len(args) == 3 else Any
    if origin in (Iterable, typing.Iterator, typing.Iterable):
        return Any
    return annotation


def _decodable(annotation: object) -> object:
    if annotation is inspect.Parameter.empty or annotation is None:
        return Any
    try:
        check_decodable(annotation)
    except TypeError:
        return Any
    return annotation


class Registry:
    """Orchestrators and activities by name, as a worker holds them."""

    def __init__(self) -> None:
        self.orchestrators: dict[str, FunctionSpec] = {}
        self.activities: dict[str, FunctionSpec] = {}
        self.entities: dict[str, Entity] = {}

    def add_orchestrator(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an orchestrator; returns its name.

        Raises:
            ValueError: the name is taken or cannot be inferred.
            TypeError: `fn` cannot be an orchestrator.
        """
        return _add(self.orchestrators, orchestrator_spec(fn, name), "orchestrator")

    def add_activity(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an activity; returns its name."""
        return _add(self.activities, activity_spec(fn, name), "activity")

    def add_entity(self, entity: Entity, name: str | None = None) -> str:
        """Register an entity (a function `(ctx, input)` or a DurableEntity class); returns
        its name, lowercase (entity names are case-insensitive).

        Raises:
            ValueError: the name is taken or cannot be inferred.
            TypeError: `entity` is neither.
        """
        if not callable(entity):
            raise TypeError(f"an entity is a function or a DurableEntity class, not {entity!r}")
        key = entity_name(entity, name)
        if key in self.entities:
            raise ValueError(f"an entity named {key!r} is already registered")
        self.entities[key] = entity
        return key

    def entity(self, name: str) -> Entity:
        """The entity registered as `name` (any case).

        Raises:
            NotRegisteredError: none is.
        """
        found = self.entities.get(name.lower())
        if found is None:
            raise NotRegisteredError(
                f"no entity named {name!r} is registered on this worker; register it with"
                " Worker(entities=[...]) or worker.add_entity(...)"
            )
        return found

    def orchestrator(self, name: str) -> FunctionSpec:
        """The orchestrator registered as `name`.

        Raises:
            NotRegisteredError: none is.
        """
        return _get(self.orchestrators, name, "orchestrator", "add_orchestrator")

    def activity(self, name: str) -> FunctionSpec:
        """The activity registered as `name`.

        Raises:
            NotRegisteredError: none is.
        """
        return _get(self.activities, name, "activity", "add_activity")


def _add(table: dict[str, FunctionSpec], spec: FunctionSpec, kind: str) -> str:
    if spec.name in table:
        raise ValueError(f"an {kind} named {spec.name!r} is already registered")
    table[spec.name] = spec
    return spec.name


def _get(table: Mapping[str, FunctionSpec], name: str, kind: str, method: str) -> FunctionSpec:
    spec = table.get(name)
    if spec is None:
        known = ", ".join(sorted(table)) or "none"
        plural = "activities" if kind == "activity" else f"{kind}s"
        raise NotRegisteredError(
            f"no {kind} named {name!r} is registered on this worker (registered: {known}); "
            f"register it with worker.{method}(...) or Worker(..., {plural}=[...])"
        )
    return spec
