"""Flow control shared by every store: when a rate- or concurrency-limited activity may start."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

CONCURRENCY_RETRY_SECONDS = 0.2
"""How long work waits before asking again when every concurrency slot is taken."""


class FlowLimit(msgspec.Struct, frozen=True, kw_only=True):
    """A budget shared by every worker of a store, for one key (an activity name).

    Attributes:
        max_concurrent: activities running at once.
        max_requests: activities started per window.
        max_tokens: tokens used per window (estimated at the start, corrected at the end).
        window_seconds: the length of the sliding window.
    """

    max_concurrent: int | None = None
    max_requests: int | None = None
    max_tokens: int | None = None
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_concurrent", "max_requests", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.window_seconds > 0:
            raise ValueError("window_seconds must be positive")

    @property
    def rates(self) -> bool:
        """Whether starts are counted in a window."""
        return self.max_requests is not None or self.max_tokens is not None


def wait_seconds(
    limit: FlowLimit,
    now: float,
    running: int,
    started: Sequence[tuple[float, int]],
    tokens: int,
) -> float:
    """How long a new start must wait; 0.0 when it may start now.

    Args:
        limit: the budget.
        now: the current time, in seconds.
        running: slots held now.
        started: (start time, tokens) of the starts inside the window, oldest first.
        tokens: the new start's estimated tokens.

    A start larger than the whole token budget waits for an empty window, then goes alone,
    so that it is delayed, never refused.
    """
    wait = 0.0
    if limit.max_concurrent is not None and running >= limit.max_concurrent:
        wait = CONCURRENCY_RETRY_SECONDS
    window = limit.window_seconds
    if limit.max_requests is not None and len(started) >= limit.max_requests:
        # Enough of the oldest starts must leave the window for one more to fit.
        oldest_kept = started[len(started) - limit.max_requests]
        wait = max(wait, oldest_kept[0] + window - now)
    if limit.max_tokens is not None and started:
        used = sum(t for _, t in started)
        leaving = 0
        while leaving < len(started) and used + tokens > limit.max_tokens:
            used -= started[leaving][1]
            leaving += 1
        if leaving:
            wait = max(wait, started[leaving - 1][0] + window - now)
    return max(wait, 0.0)


def flow_holder(activity_id: int, lease_owner: str) -> str:
    """The name a work item holds its flow slot under: one lease of one activity.

    A worker whose lease ran out may still release its slot late; the owner in the name
    keeps that release from freeing the slot the activity's next holder took.
    """
    return f"{activity_id}:{lease_owner}"
