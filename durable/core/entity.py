"""Durable entities: ids, the code an entity runs, and running a batch of its operations.

An entity is a small piece of state with a name and a key (`EntityInstanceId`), changed
only by its operations, which run one at a time. The runtime hands a batch of operations
(in arrival order) to `run_operations` together with the state as stored, and commits what
comes out (the new state, the results, the messages the operations send) in one store
transaction: each operation takes effect exactly once. An operation that raises leaves
the state, and everything it asked to send, as they were before it.

Everything here is pure: no I/O, no clock (times are passed in), no randomness.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast, overload

import msgspec

from durable.core.events import EntityRequest, FailureDetails, as_utc
from durable.core.payload import PayloadCodec

T = TypeVar("T")


class EntityInstanceId:
    """An entity's identity: its entity name (lowercase) and a key.

    Its string form, which is also its instance id in the store, is `@name@key`. The name
    is case-insensitive (stored lowercase); the key keeps its case. Neither may be empty or
    contain `@`.
    """

    __slots__ = ("entity", "key")

    def __init__(self, entity: str, key: str) -> None:
        EntityInstanceId.validate_entity_name(entity)
        EntityInstanceId.validate_key(key)
        self.entity = entity.lower()
        self.key = key

    @staticmethod
    def validate_entity_name(name: str) -> None:
        """Raise ValueError unless `name` can name an entity."""
        _check_part(name, "name")

    @staticmethod
    def validate_key(key: str) -> None:
        """Raise ValueError unless `key` can be an entity's key."""
        _check_part(key, "key")

    @staticmethod
    def parse(entity_id: str) -> EntityInstanceId:
        """The id whose string form is `entity_id` (`@name@key`).

        Raises:
            ValueError: `entity_id` is not of that form.
        """
        if not isinstance(entity_id, str) or not entity_id.startswith("@"):
            raise ValueError(f"an entity id looks like '@name@key', not {entity_id!r}")
        name, sep, key = entity_id[1:].partition("@")
        if not sep:
            raise ValueError(f"an entity id looks like '@name@key', not {entity_id!r}")
        return EntityInstanceId(name, key)

    def __str__(self) -> str:
        return f"@{self.entity}@{self.key}"

    def __repr__(self) -> str:
        return f"EntityInstanceId({self.entity!r}, {self.key!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityInstanceId):
            return NotImplemented
        return (self.entity, self.key) == (other.entity, other.key)

    def __hash__(self) -> int:
        return hash((self.entity, self.key))

    def __lt__(self, other: EntityInstanceId) -> bool:
        return str(self) < str(other)


def _check_part(value: object, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"an entity {what} must be a non-empty string")
    if "@" in value:
        raise ValueError(f"an entity {what} must not contain '@': {value!r}")


def entity_target(entity: object, operation: object) -> str:
    """The instance id of `entity`, checked along with the operation's name."""
    if not isinstance(entity, EntityInstanceId):
        raise TypeError(f"an entity is named by an EntityInstanceId, not {entity!r}")
    if not isinstance(operation, str) or not operation:
        raise ValueError("an operation name must be a non-empty string")
    return str(entity)


def lock_targets(entities: object) -> tuple[str, ...]:
    """The instance ids of the entities to lock: checked, without repeats, sorted (the one
    order in which every critical section takes its locks, so that none waits on another
    in a circle)."""
    if isinstance(entities, EntityInstanceId | str | bytes) or not isinstance(
        entities, Sequence | set | frozenset
    ):
        raise TypeError(f"lock_entities takes a list of EntityInstanceId, not {entities!r}")
    targets = {entity_target(e, "lock") for e in entities}
    if not targets:
        raise ValueError("lock_entities needs at least one entity")
    return tuple(sorted(targets))


class CriticalSection:
    """The locks of a critical section, entered: `with (yield ctx.lock_entities(...)):`.

    Leaving the `with` block (at its end, by an exception, or when the orchestration
    ends) releases every lock. Inside it, the orchestration may call only the entities
    it locked; their operations run for it alone until the release.
    """

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release

    def __enter__(self) -> CriticalSection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()


def is_entity_id(instance_id: str) -> bool:
    """Whether an instance id names an entity (orchestration ids never start with '@')."""
    return instance_id.startswith("@")


class EntityOperationFailedException(Exception):  # noqa: N818 - the name durabletask gives it
    """An entity operation raised; what a caller of the operation is told."""

    def __init__(
        self, entity_instance_id: EntityInstanceId, operation_name: str, failure: FailureDetails
    ) -> None:
        super().__init__(
            f"Operation '{operation_name}' on entity '{entity_instance_id}' failed with error:"
            f" {failure.message}"
        )
        self.entity_instance_id = entity_instance_id
        self.operation_name = operation_name
        self.failure_details = failure


# -- what an operation asks for besides its result -------------------------------------


class SignalOut(msgspec.Struct, frozen=True, kw_only=True):
    """A one-way operation for another entity (or this one), maybe delayed."""

    entity: str
    operation: str
    input: str | None = None
    signal_time: datetime | None = None


class StartOut(msgspec.Struct, frozen=True, kw_only=True):
    """A new orchestration to start."""

    name: str
    instance_id: str
    input: str | None = None


class EntityContext:
    """What an entity operation sees: its entity, the operation, the state, and ways to
    send work elsewhere (sent only if the operation succeeds)."""

    def __init__(
        self,
        entity_id: EntityInstanceId,
        operation: str,
        state: str | None,
        codec: PayloadCodec,
        new_id: Callable[[], str],
    ) -> None:
        self._entity_id = entity_id
        self._operation = operation
        self._state = state
        self._codec = codec
        self._new_id = new_id
        self.signals: list[SignalOut] = []
        self.starts: list[StartOut] = []

    @property
    def entity_id(self) -> EntityInstanceId:
        return self._entity_id

    @property
    def operation(self) -> str:
        return self._operation

    @property
    def orchestration_id(self) -> str:
        """The entity's own instance id (`@name@key`)."""
        return str(self._entity_id)

    @property
    def state(self) -> str | None:
        """The state as stored (JSON text, None for none)."""
        return self._state

    @overload
    def get_state(self, intended_type: type[T], default: T) -> T: ...
    @overload
    def get_state(self, intended_type: type[T]) -> T | None: ...
    @overload
    def get_state(self) -> Any: ...
    def get_state(self, intended_type: object = None, default: Any = None) -> Any:
        """A fresh copy of the state, decoded (into `intended_type` if given), or `default`
        when the entity has none. Changing the copy changes nothing: call `set_state`."""
        return self._decoded(intended_type, default)

    def _decoded(self, intended_type: object, default: Any) -> Any:
        if self._state is None:
            return default
        target: object = Any if intended_type is None else intended_type
        return self._codec.decode(self._state, target, f"state of entity {self._entity_id}")

    def set_state(self, new_state: Any) -> None:
        """Replace the state (encoded now: a value with no JSON form fails the operation);
        None removes it."""
        self._state = self._codec.encode(new_state, f"state of entity {self._entity_id}")

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        signal_time: datetime | None = None,
    ) -> None:
        """Send `operation` to an entity, one-way, once this operation succeeds."""
        target = entity_target(entity_instance_id, operation)
        what = f"input of operation {operation!r} for {target}"
        self.signals.append(
            SignalOut(
                entity=target,
                operation=operation,
                input=self._codec.encode(input, what),
                signal_time=None if signal_time is None else as_utc(signal_time),
            )
        )

    def schedule_new_orchestration(
        self,
        orchestration_name: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        instance_id: str | None = None,
    ) -> str:
        """Start an orchestration once this operation succeeds; returns its instance id."""
        if not isinstance(orchestration_name, str) or not orchestration_name:
            raise ValueError("an orchestration name must be a non-empty string")
        iid = instance_id if instance_id is not None else self._new_id()
        if is_entity_id(iid):
            raise ValueError(f"an orchestration's instance id must not start with '@': {iid!r}")
        what = f"input of orchestration {orchestration_name!r}"
        self.starts.append(
            StartOut(
                name=orchestration_name, instance_id=iid, input=self._codec.encode(input, what)
            )
        )
        return iid


class DurableEntity:
    """Base class of class-based entities: each public method is an operation.

    A new object is made for every operation, so keep what must last in the state
    (`get_state` / `set_state`), never in attributes. `delete` (built in) removes the
    state.
    """

    entity_context: EntityContext

    def _initialize_entity_context(self, context: EntityContext) -> None:
        self.entity_context = context

    @overload
    def get_state(self, intended_type: type[T], default: T) -> T: ...
    @overload
    def get_state(self, intended_type: type[T]) -> T | None: ...
    @overload
    def get_state(self) -> Any: ...
    def get_state(self, intended_type: object = None, default: Any = None) -> Any:
        return self.entity_context._decoded(intended_type, default)

    def set_state(self, state: Any) -> None:
        self.entity_context.set_state(state)

    def signal_entity(
        self,
        entity_instance_id: EntityInstanceId,
        operation: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        signal_time: datetime | None = None,
    ) -> None:
        self.entity_context.signal_entity(entity_instance_id, operation, input, signal_time)

    def schedule_new_orchestration(
        self,
        orchestration_name: str,
        input: Any = None,  # noqa: A002 - durabletask's parameter name
        instance_id: str | None = None,
    ) -> str:
        return self.entity_context.schedule_new_orchestration(
            orchestration_name, input, instance_id
        )

    def delete(self, input: Any = None) -> None:  # noqa: A002 - durabletask's name
        """The built-in operation that removes the entity's state."""
        self.set_state(None)


Entity = Callable[[EntityContext, Any], Any] | type[DurableEntity]
"""What is registered as an entity: a function `(ctx, input)`, or a DurableEntity class."""


def entity_name(entity: object, name: str | None = None) -> str:
    """The name `entity` is registered under (lowercase): `name`, else its own name."""
    if name is None:
        name = getattr(entity, "__durable_entity_name__", None) or getattr(entity, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        raise ValueError("give a lambda (or an unnamed callable) a name to register it")
    EntityInstanceId.validate_entity_name(name)
    return name.lower()


class EntityMetadata:
    """What a client reads of an entity: its id, when it last changed, and its state."""

    def __init__(
        self,
        id: EntityInstanceId,  # noqa: A002 - durabletask's name
        last_modified: datetime,
        *,
        includes_state: bool,
        state: str | None,
        backlog_queue_size: int = 0,
        locked_by: str | None = None,
    ) -> None:
        self.id = id
        self.last_modified = last_modified
        self.includes_state = includes_state
        self.backlog_queue_size = backlog_queue_size
        """Requests waiting for a critical section to release the entity."""
        self.locked_by = locked_by
        """The critical section holding the entity (`instance/execution/task`), if any."""
        self._state = state if includes_state else None

    def get_state(self, intended_type: object = None) -> Any:
        """The state's JSON text; with `intended_type`, the state decoded into it."""
        if intended_type is None or self._state is None:
            return self._state
        return msgspec.json.decode(self._state, type=intended_type)

    def get_typed_state(self, intended_type: object = None) -> Any:
        """The state decoded (into `intended_type` if given); None if it has none."""
        if self._state is None:
            return None
        return msgspec.json.decode(
            self._state, type=Any if intended_type is None else intended_type
        )

    def __repr__(self) -> str:
        return f"EntityMetadata({self.id!r}, last_modified={self.last_modified.isoformat()})"


for _public in (
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityMetadata,
    EntityOperationFailedException,
):
    _public.__module__ = "durable.entities"  # where users import them (and failures name)


# -- running a batch ---------------------------------------------------------------------


class EntityRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the store keeps of an entity between batches (its instance's output)."""

    state: str | None = None
    """The state's JSON text; None: the entity has none."""
    locked_by: str | None = None
    """The critical section holding the entity's lock."""
    waiting: tuple[EntityRequest, ...] = ()
    """Requests that came while others held the lock, in arrival order."""
    released: tuple[str, ...] = ()
    """Critical sections released before their lock request came here (it is skipped)."""


_RELEASED_KEPT = 64


def admit(
    record: EntityRecord, requests: Sequence[EntityRequest]
) -> tuple[list[EntityRequest], EntityRecord]:
    """Which requests the entity acts on now, in order (operations, and the lock requests
    it grants), and its record after them: who holds the lock, and what waits for it.

    The requests that waited come first, then `requests`, in arrival order. A locked
    entity acts only on its holder's requests; the others wait until the holder's
    unlock, and then come first again.
    """
    locked, released = record.locked_by, list(record.released)
    queue = deque([*record.waiting, *requests])
    waiting: list[EntityRequest] = []
    acted: list[EntityRequest] = []
    while queue:
        request = queue.popleft()
        if request.lock_action == "unlock":
            if request.holder == locked:
                locked = None
                queue.extendleft(reversed(waiting))
                waiting = []
            elif request.holder is not None and request.holder not in released:
                released.append(request.holder)  # its lock comes later, or waits here
            continue
        if locked is not None and request.holder != locked:
            waiting.append(request)
            continue
        if request.lock_action == "lock":
            if request.holder in released:
                released.remove(request.holder)  # (a section that ended before it came)
                continue
            locked = request.holder
        acted.append(request)
    after = EntityRecord(
        state=record.state,
        locked_by=locked,
        waiting=tuple(waiting),
        released=tuple(released[-_RELEASED_KEPT:]),
    )
    return acted, after


_RECORD_DECODER = msgspec.json.Decoder(EntityRecord)
_RECORD_ENCODER = msgspec.json.Encoder()


def read_record(output: str | None) -> EntityRecord:
    """The record stored as an entity instance's output (a new entity: an empty one)."""
    return EntityRecord() if output is None else _RECORD_DECODER.decode(output)


def write_record(record: EntityRecord) -> str:
    return _RECORD_ENCODER.encode(record).decode()


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One operation to run: its name, its input (JSON text), and a tag for its result."""

    operation: str
    input: str | None = None
    tag: str = ""


class OperationResult(msgspec.Struct, frozen=True, kw_only=True):
    """How one operation ended: its result (JSON text) or its failure."""

    tag: str
    result: str | None = None
    failure: FailureDetails | None = None


class BatchOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a batch leaves: the state after it, each operation's result, and what the
    operations that succeeded send (in the order they asked)."""

    state: str | None
    results: tuple[OperationResult, ...]
    signals: tuple[SignalOut, ...]
    starts: tuple[StartOut, ...]


def run_operations(  # noqa: PLR0917 - the batch and all it needs
    entity: Entity,
    entity_id: EntityInstanceId,
    state: str | None,
    operations: Sequence[Operation],
    codec: PayloadCodec,
    new_id: Callable[[], str],
) -> BatchOutcome:
    """Run `operations` on `entity` one at a time, in order, from `state`.

    An operation that raises (its own error, an unknown operation, an input that does
    not decode, a result with no JSON form) leaves the state and the sends as they were
    before it; the next operation goes on from there.
    """
    results: list[OperationResult] = []
    signals: list[SignalOut] = []
    starts: list[StartOut] = []
    for op in operations:
        ctx = EntityContext(entity_id, op.operation, state, codec, new_id)
        try:
            value = _dispatch(entity, ctx, op, codec)
            result = codec.encode(value, f"result of operation {op.operation!r} on {entity_id}")
        except Exception as e:
            results.append(OperationResult(tag=op.tag, failure=FailureDetails.from_exception(e)))
            continue
        state = ctx.state
        signals += ctx.signals
        starts += ctx.starts
        results.append(OperationResult(tag=op.tag, result=result))
    return BatchOutcome(
        state=state, results=tuple(results), signals=tuple(signals), starts=tuple(starts)
    )


def _dispatch(entity: Entity, ctx: EntityContext, op: Operation, codec: PayloadCodec) -> Any:
    if isinstance(entity, type) and issubclass(entity, DurableEntity):
        instance = entity()
        instance._initialize_entity_context(ctx)
        method = getattr(instance, op.operation, None) if not op.operation.startswith("_") else None
        if method is None or not callable(method):
            raise AttributeError(f"entity '{ctx.entity_id}' has no operation {op.operation!r}")
        wanted = _input_type(method, skip=0)
        if wanted is _NO_INPUT:
            if op.input is not None:
                raise TypeError(f"operation {op.operation!r} takes no input")
            return method()
        return method(_decode_input(codec, op, wanted, ctx))
    wanted = _input_type(entity, skip=1)
    value = None if wanted is _NO_INPUT else _decode_input(codec, op, wanted, ctx)
    return cast(Callable[[EntityContext, Any], Any], entity)(ctx, value)


_NO_INPUT = object()


_INPUT_TYPES: dict[tuple[object, int], object] = {}
"""`_input_type` of each entity function and operation met (registered code: few)."""


def _input_type(fn: Callable[..., Any], skip: int) -> object:
    """The declared type of `fn`'s input parameter (after `skip` others), Any if it has
    no annotation, `_NO_INPUT` if it takes none."""
    key = (getattr(fn, "__func__", fn), skip)
    found = _INPUT_TYPES.get(key)
    if found is None:
        found = _INPUT_TYPES[key] = _read_input_type(fn, skip)
    return found


def _read_input_type(fn: Callable[..., Any], skip: int) -> object:
    try:
        params = list(inspect.signature(fn, eval_str=True).parameters.values())[skip:]
    except (TypeError, ValueError, NameError):
        return Any
    if not params:
        return _NO_INPUT
    annotation = params[0].annotation
    return Any if annotation is inspect.Parameter.empty else annotation


def _decode_input(codec: PayloadCodec, op: Operation, wanted: object, ctx: EntityContext) -> Any:
    return codec.decode(op.input, wanted, f"input of operation {op.operation!r} on {ctx.entity_id}")
