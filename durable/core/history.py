"""A history: the ordered events of one execution, with an exact JSON form."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeGuard, overload

import msgspec

from durable.core.errors import HistoryTooLargeError
from durable.core.events import (
    ChildOrchestrationCreated,
    ContinuedAsNew,
    EntityRequest,
    EventSent,
    ExecutionCompleted,
    ExecutionRewound,
    ExecutionStarted,
    HistoryEvent,
    qualified_name,
)

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(list[HistoryEvent])
_ONE_DECODER = msgspec.json.Decoder(HistoryEvent | EntityRequest)
_MANY_DECODER = msgspec.json.Decoder(list[HistoryEvent])


class History(Sequence[HistoryEvent]):
    """An immutable sequence of history events that round-trips to JSON exactly.

    Args:
        events: the events, oldest first.
    """

    __slots__ = ("_events",)

    def __init__(self, events: Iterable[HistoryEvent] = ()) -> None:
        self._events = tuple(events)

    @classmethod
    def from_json(cls, data: str | bytes) -> History:
        """Parse the JSON form (a list of tagged events).

        Raises:
            msgspec.ValidationError: the data is not a valid history.
        """
        return cls(_DECODER.decode(data))

    def to_json(self) -> str:
        """The JSON form: a list of objects, each tagged by its `kind`."""
        return _ENCODER.encode(self._events).decode()

    @overload
    def __getitem__(self, index: int) -> HistoryEvent: ...
    @overload
    def __getitem__(self, index: slice) -> History: ...
    def __getitem__(self, index: int | slice) -> HistoryEvent | History:
        if isinstance(index, slice):
            return History(self._events[index])
        return self._events[index]

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[HistoryEvent]:
        return iter(self._events)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._events == other._events
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._events)

    def __repr__(self) -> str:
        return f"History({len(self._events)} events)"


def encode_event(event: HistoryEvent | EntityRequest) -> bytes:
    """One event (of a history, or a message) as JSON bytes (the form stores keep)."""
    return _ENCODER.encode(event)


def decode_event(data: str | bytes) -> HistoryEvent | EntityRequest:
    """One event (of a history, or a message) from its JSON form."""
    event: HistoryEvent | EntityRequest = _ONE_DECODER.decode(data)
    return event


def encode_events(events: Sequence[HistoryEvent]) -> bytes:
    """Consecutive events as one JSON array (the form of a chunk of history)."""
    return _ENCODER.encode(events)


def decode_events(data: str | bytes) -> list[HistoryEvent]:
    """Events from a JSON array made by `encode_events`."""
    events: list[HistoryEvent] = _MANY_DECODER.decode(data)
    return events


def cancelled_events(history: Sequence[HistoryEvent]) -> set[int]:
    """Positions of the events that recorded rewinds cancel; replay skips them."""
    cancelled: set[int] = set()
    for event in history:
        if isinstance(event, ExecutionRewound):
            cancelled.update(event.cancels)
    return cancelled


def ended_by_history_cap(event: HistoryEvent) -> TypeGuard[ExecutionCompleted]:
    """Whether `event` is the FAILED end the engine records when the history cap is hit."""
    return (
        isinstance(event, ExecutionCompleted)
        and event.failure is not None
        and event.failure.error_type == qualified_name(HistoryTooLargeError)
    )


def fork_history(
    history: Sequence[HistoryEvent], at: int, instance_id: str, execution_id: str
) -> list[HistoryEvent]:
    """The first `at` events of `history`, as the start of a new instance's history.

    The start event is always kept (`at` reaches at least to it).

    Ids that name the original instance become the new one's: the start event, the
    default ids of its children (`<id>:<sequence number>`) and events it sent itself. A
    completed, terminated or continued end at the cut is dropped, so the fork decides
    its end anew; a FAILED end stays, for the fork's resume to cancel like a rewind.

    Raises:
        ValueError: `at` is not between 1 and the length of the history, or the history
            does not begin with its start.
    """
    if not 1 <= at <= len(history):
        raise ValueError(f"at must be between 1 and {len(history)} (the history's length)")
    start = next((e for e in history[:2] if isinstance(e, ExecutionStarted)), None)
    if start is None:
        raise ValueError("the history does not begin with an ExecutionStarted event")
    old = start.instance_id
    prefix: list[HistoryEvent] = []
    for event in history[: max(at, history.index(start) + 1)]:
        match event:
            case ExecutionStarted():
                prefix.append(
                    msgspec.structs.replace(
                        event,
                        instance_id=instance_id,
                        execution_id=execution_id,
                        parent=None,
                        scheduled_start=None,
                    )
                )
            case ChildOrchestrationCreated(instance_id=child, task_id=t) if (
                child == f"{old}:{t:04x}"
            ):
                prefix.append(msgspec.structs.replace(event, instance_id=f"{instance_id}:{t:04x}"))
            case EventSent(instance_id=target) if target == old:
                prefix.append(msgspec.structs.replace(event, instance_id=instance_id))
            case _:
                prefix.append(event)
    end = prefix[-1]
    if isinstance(end, ContinuedAsNew) or (
        isinstance(end, ExecutionCompleted) and end.status != "FAILED"
    ):
        prefix.pop()
    return prefix
