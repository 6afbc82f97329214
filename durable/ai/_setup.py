"""Putting agents, tools, models and their limits on a worker in one call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import msgspec

from durable.ai._agent import AgentLike
from durable.ai._model import Model, activity_name, model_activity
from durable.ai._tools import Tool
from durable.ai._types import ModelRequest, ModelResponse
from durable.limits import ActivityLimit
from durable.worker import Worker


def model_limit(
    model: str = "default",
    *,
    max_concurrent: int | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    window: timedelta = timedelta(minutes=1),
) -> ActivityLimit:
    """A provider quota for the model registered as `model`, shared by all workers of a store.

    With `window` other than a minute, the two rates count per that window instead.
    Tokens are estimated at the start of a call (a quarter of the request's JSON size,
    plus `max_output_tokens`) and replaced by the provider's count when it answers.
    """
    return ActivityLimit(
        activity_name(model),
        max_concurrent=max_concurrent,
        max_requests=requests_per_minute,
        max_tokens=tokens_per_minute,
        window=window,
        estimate=_estimate_tokens,
        usage=_used_tokens,
    )


def _estimate_tokens(request: Any) -> int:
    if not isinstance(request, ModelRequest):
        return 0
    size = len(msgspec.json.encode(request.contents)) + len(request.system_instruction or "")
    return size // 4 + (request.max_output_tokens or 0)


def _used_tokens(response: Any) -> int | None:
    if isinstance(response, ModelResponse) and response.usage.total_tokens:
        return response.usage.total_tokens
    return None


def register(
    worker: Worker,
    *,
    models: Mapping[str, Model] | None = None,
    agents: Iterable[AgentLike] = (),
    tools: Iterable[Tool] = (),
    limits: Iterable[ActivityLimit] = (),
) -> None:
    """Register models (one activity per alias), agents (their orchestrators and their
    tools' activities, recursively), extra tools and limits on `worker`.

    Raises:
        ValueError: two different functions would be registered under one name.
    """
    for alias, m in (models or {}).items():
        worker.add_activity(model_activity(alias, m))
    orchestrators: dict[str, Any] = {}
    activities: dict[str, Any] = {t.activity_name: t.activity for t in tools}
    for agent in agents:
        for fn in agent.orchestrators():
            _collect(orchestrators, fn)
        for fn in agent.activities():
            _collect(activities, fn)
    for fn in orchestrators.values():
        worker.add_orchestrator(fn)
    for fn in activities.values():
        worker.add_activity(fn)
    for limit in limits:
        worker.add_limit(limit)


def _collect(found: dict[str, Any], fn: Any) -> None:
    name = fn.__name__
    if name in found and found[name] is not fn:
        raise ValueError(f"two different functions are named {name!r}")
    found[name] = fn
