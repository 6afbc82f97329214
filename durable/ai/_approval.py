"""Human approval: an external event raced against a durable timer."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import msgspec

from durable.core.context import OrchestrationContext
from durable.core.tasks import Task, when_any


class Approval(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A human's answer to a tool call that needs approval (the event's data).

    Send `{"approved": true}` (or just `true`) as the agent's approval event.

    Attributes:
        approved: the decision for every pending call.
        reason: shown to the model when a call is denied.
        calls: decisions for single calls by id, overriding `approved`.
    """

    approved: bool
    reason: str = ""
    calls: dict[str, bool] = msgspec.field(default_factory=dict)

    def allows(self, call_id: str) -> bool:
        """The decision for one call."""
        return self.calls.get(call_id, self.approved)


def wait_for_approval(
    ctx: OrchestrationContext,
    *,
    event: str = "approval",
    timeout: timedelta = timedelta(hours=24),
    approve_on_timeout: bool = False,
    request: Any = None,
) -> Generator[Task[Any], Any, Approval]:
    """Human in the loop: wait for an approval event, or decide by default at the timeout.

    `request` (any JSON value) is published as the custom status, for the person or UI
    that answers. The event's data is an `Approval` (or a bare `true`/`false`); data that
    cannot be read is a denial.
    """
    if request is not None:
        ctx.set_custom_status({"step": "approval", "event": event, "request": request})
    answer = ctx.wait_for_external_event(event)
    timer = ctx.create_timer(timeout)
    winner = yield when_any([answer, timer])
    if winner is not answer:
        return Approval(approved=approve_on_timeout, reason=f"no answer within {timeout}")
    timer.cancel()
    return _as_approval(answer.get_result())


def _as_approval(data: Any) -> Approval:
    # A human's input is not trusted to be well formed: anything unclear is a denial.
    if isinstance(data, bool):
        return Approval(approved=data)
    try:
        return msgspec.convert(data, Approval)
    except (msgspec.ValidationError, TypeError):
        return Approval(approved=False, reason=f"unreadable approval: {data!r}")
