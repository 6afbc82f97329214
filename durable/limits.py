"""Concurrency and rate limits on activities, held in the store for every worker at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from durable.core.functions import get_name
from durable.store.flow import FlowLimit


class ActivityLimit:
    """A budget for one activity, shared by every worker of the store.

    Work over the budget waits in the store (other workers may take it when it is due);
    it is delayed, never dropped. Give every worker of a store the same limits.

    Args:
        activity: the activity function or its registered name.
        max_concurrent: runs at once, across all workers.
        max_requests: starts per `window`.
        max_tokens: tokens per `window`: each start counts `estimate(input)` tokens,
            replaced by `usage(result)` once it finishes.
        window: the sliding window of the rate limits (default one minute).
        estimate: a start's token estimate, from its input (default 0).
        usage: the tokens a run used, from its result (None: keep the estimate).
    """

    def __init__(
        self,
        activity: Callable[..., Any] | str,
        *,
        max_concurrent: int | None = None,
        max_requests: int | None = None,
        max_tokens: int | None = None,
        window: timedelta | float = timedelta(minutes=1),
        estimate: Callable[[Any], int] | None = None,
        usage: Callable[[Any], int | None] | None = None,
    ) -> None:
        self.activity = activity if isinstance(activity, str) else get_name(activity)
        seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
        self.flow = FlowLimit(
            max_concurrent=max_concurrent,
            max_requests=max_requests,
            max_tokens=max_tokens,
            window_seconds=seconds,
        )
        if max_concurrent is None and max_requests is None and max_tokens is None:
            raise ValueError("an ActivityLimit needs max_concurrent, max_requests or max_tokens")
        self.estimate = estimate
        self.usage = usage

    def __repr__(self) -> str:
        f = self.flow
        return (
            f"ActivityLimit({self.activity!r}, max_concurrent={f.max_concurrent}, "
            f"max_requests={f.max_requests}, max_tokens={f.max_tokens}, "
            f"window={f.window_seconds}s)"
        )

    def tokens_for(self, value: Any) -> int:
        """The token estimate of a start with input `value`."""
        return max(int(self.estimate(value)), 0) if self.estimate is not None else 0

    def tokens_used(self, result: Any) -> int | None:
        """The tokens a run used, from its result (None: unknown)."""
        if self.usage is None:
            return None
        used = self.usage(result)
        return None if used is None else max(int(used), 0)
