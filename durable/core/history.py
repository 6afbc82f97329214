"""A history: the ordered events of one execution, with an exact JSON form."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeGuard, overload

import msgspec

from durable.core.errors import HistoryTooLargeError
from durable.core.events import (
    ExecutionCompleted,
    ExecutionRewound,
    HistoryEvent,
    qualified_name,
)

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(list[HistoryEvent])
_ONE_DECODER = msgspec.json.Decoder(HistoryEvent)


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


def encode_event(event: HistoryEvent) -> bytes:
    """One event as JSON bytes (the form stores keep)."""
    return _ENCODER.encode(event)


def decode_event(data: str | bytes) -> HistoryEvent:
    """One event from its JSON form."""
    event: HistoryEvent = _ONE_DECODER.decode(data)
    return event


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
