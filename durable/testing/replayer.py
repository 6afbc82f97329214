"""`Replayer`: replays recorded histories against the current code, before a deploy."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from durable.core.commands import Command, CompleteOrchestration, ContinueAsNew, describe_command
from durable.core.decision import EngineOptions
from durable.core.engine import Execution
from durable.core.errors import NonDeterminismError
from durable.core.events import ExecutionStarted, HistoryEvent
from durable.core.functions import Registry
from durable.core.history import History
from durable.core.payload import DEFAULT_MAX_PAYLOAD_BYTES, PayloadCodec
from durable.core.state import OrchestrationStatus

HistoryLike = History | Sequence[HistoryEvent] | str | bytes | os.PathLike[str]
"""A history as events, as its JSON text, or as the path of a JSON file."""


class Replayer:
    """Replays histories (exported with `client.get_orchestration_history(...).to_json()`,
    or by the CLI) against the orchestrators registered now.

    Run it in CI before a deploy: a change that would break running instances raises
    `NonDeterminismError` here instead of blocking them in production.

    Args:
        orchestrators: orchestrator functions, registered under their names.
        max_payload_bytes: the payload cap (as the worker's).
        engine_options: history limits (as the worker's).
        strict: also compare the arguments of recorded calls (activity and child inputs,
            timer times, event data sent), not only which calls are made. Workers do not
            require that; turn it on to catch arguments computed from outside state.
    """

    def __init__(
        self,
        orchestrators: Iterable[Callable[..., Any]] = (),
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        engine_options: EngineOptions | None = None,
        strict: bool = False,
    ) -> None:
        self._strict = strict
        self._registry = Registry()
        for fn in orchestrators:
            self._registry.add_orchestrator(fn)
        self._codec = PayloadCodec(max_payload_bytes)
        self._options = engine_options or EngineOptions()

    def add_orchestrator(self, fn: Callable[..., Any], name: str | None = None) -> str:
        """Register an orchestrator (under another name if the history knows it so)."""
        return self._registry.add_orchestrator(fn, name)

    def replay(self, history: HistoryLike) -> OrchestrationStatus:
        """Replay one history; returns the status the current code reaches.

        Raises:
            NonDeterminismError: the code does not do what the history records, or it
                does more at the end than the history's last step recorded.
            NotRegisteredError: the history's orchestrator is not registered.
            ValueError: the history cannot be read.
        """
        events = load_history(history)
        execution = Execution(self._registry.orchestrator, self._codec, self._options)
        execution.strict = self._strict
        execution.replay(events)
        decision = execution.step(())
        if decision.commands:
            name = next((e.name for e in events if isinstance(e, ExecutionStarted)), "?")
            calls = ", ".join(_describe(c) for c in decision.commands)
            raise NonDeterminismError(
                f"after the last step recorded in the history of orchestrator {name!r}, the "
                f"current code goes on with {calls}, which the recorded run did not do at "
                "that point; guard the change with ctx.is_patched(...)"
            )
        return decision.status


def _describe(command: Command) -> str:
    match command:
        case CompleteOrchestration(status=status):
            return f"ending the orchestration as {status}"
        case ContinueAsNew():
            return "continue_as_new()"
        case _:
            return describe_command(command)


def load_history(history: HistoryLike) -> History:
    """A history from events, JSON text, or a JSON file.

    The JSON may be the list of events (`History.to_json()`), or an object holding it
    under `"history"`.

    Raises:
        ValueError: it is not a history.
    """
    if isinstance(history, History):
        return history
    if isinstance(history, os.PathLike):
        history = Path(history).read_bytes()
    if isinstance(history, str | bytes):
        try:
            data = json.loads(history)
            if isinstance(data, dict) and "history" in data:
                data = data["history"]
            return History.from_json(json.dumps(data))
        except ValueError as e:  # json and msgspec errors both derive from it
            raise ValueError(f"not a history: {e}") from e
    return History(history)
