"""Human approval: an external event raced against a durable timer."""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import msgspec

from durable.core.context import OrchestrationContext
from durable.core.tasks import Task, when_any


class Approval(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A human's answer to a request for approval (the event's data).

    Send `{"approved": true, "request_id": ...}` as the approval event, echoing the
    `request_id` of the custom status; `true` or `{"approved": true}` alone also work.

    Attributes:
        approved: the decision for every pending call.
        reason: shown to the model when a call is denied.
        calls: decisions for single calls by id, overriding `approved`.
        request_id: the request this answers. An answer that names another request (an
            earlier one, answered twice) is dropped; one that names none is taken by
            whichever request is waiting, or by the next one if none is.
    """

    approved: bool
    reason: str = ""
    calls: dict[str, bool] = msgspec.field(default_factory=dict)
    request_id: str = ""

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

    While it waits, the custom status is `{"step": "approval", "event": ..., "request_id":
    ..., "request": ...}`: `request` (any JSON value) is for the person or UI that answers,
    and an answer that echoes `request_id` can only answer this request. Once decided, the
    status becomes `{"step": "decided", "request_id": ..., "approved": ...}`. The event's
    data is an `Approval` (or a bare `true`/`false`); data that cannot be read is a denial.
    """
    status: dict[str, Any] = {"step": "approval", "event": event}
    if request is not None:
        status["request"] = request
    return (yield from await_approval(ctx, event, timeout, approve_on_timeout, status))


def await_approval(
    ctx: OrchestrationContext,
    event: str,
    timeout: timedelta,
    approve_on_timeout: bool,
    status: dict[str, Any],
) -> Generator[Task[Any], Any, Approval]:
    """`wait_for_approval` with the waiting custom status given whole (a request id is added)."""
    request_id = ctx.new_uuid()
    ctx.set_custom_status({**status, "request_id": request_id})
    timer = ctx.create_timer(timeout)
    while True:
        answer = ctx.wait_for_external_event(event)
        winner = yield when_any([answer, timer])
        if winner is not answer:
            decision = Approval(approved=approve_on_timeout, reason=f"no answer within {timeout}")
            break
        decision = _as_approval(answer.get_result())
        if decision.request_id in {"", request_id}:
            timer.cancel()
            break
        # An answer to another request (sent twice, or too late): not this one's.
    ctx.set_custom_status(
        {"step": "decided", "request_id": request_id, "approved": decision.approved}
    )
    return decision


def _as_approval(data: Any) -> Approval:
    # A human's input is not trusted to be well formed: anything unclear is a denial.
    if isinstance(data, bool):
        return Approval(approved=data)
    try:
        return msgspec.convert(data, Approval)
    except (msgspec.ValidationError, TypeError):
        return Approval(approved=False, reason=f"unreadable approval: {data!r}")
