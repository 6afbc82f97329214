"""What one step of an orchestration decided, and the limits the engine enforces."""

from __future__ import annotations

import msgspec

from durable.core.commands import (
    Command,
    CreateTimer,
    ScheduleActivity,
    StartChildOrchestration,
)
from durable.core.events import FailureDetails, HistoryEvent
from durable.core.state import OrchestrationStatus

Rerun = ScheduleActivity | CreateTimer | StartChildOrchestration
"""A recorded command whose work is started again (after a rewind, or in a fork)."""


class EngineOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Limits the engine enforces.

    Attributes:
        max_history_events: a decision that would grow the history past this fails the
            orchestration with `HistoryTooLargeError`.
        suggest_continue_as_new_events: `is_continue_as_new_suggested` turns true here...
        suggest_continue_as_new_bytes: ...or once the payloads in history reach this size.
    """

    max_history_events: int = 200_000
    suggest_continue_as_new_events: int = 10_000
    suggest_continue_as_new_bytes: int = 10 * 1024 * 1024


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What one step of an orchestration decided.

    Attributes:
        events: the history events to append, in order: the new events applied, the
            patch markers and commands recorded, and the final event if it finished.
        commands: the new commands, in sequence order, then the completion if any.
        status: RUNNING, SUSPENDED, or the terminal status.
        custom_status: the custom status after this step.
        output: the encoded output, when it completed or was terminated with one.
        failure: why it failed, when it failed.
        reruns: after a rewind (or in a fork), the activities, timers and children still
            awaited, to run (or rewind) again; they are recorded already and get no new
            events.
    """

    events: tuple[HistoryEvent, ...]
    commands: tuple[Command, ...]
    status: OrchestrationStatus
    custom_status: str | None = None
    output: str | None = None
    failure: FailureDetails | None = None
    reruns: tuple[Rerun, ...] = ()
