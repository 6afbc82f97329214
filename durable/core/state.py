"""The state of an orchestration instance as clients see it."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

from durable.core.errors import OrchestrationFailedError
from durable.core.events import FailureDetails
from durable.core.payload import PayloadCodec


class OrchestrationStatus(enum.Enum):
    """Where an instance is in its life."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    SUSPENDED = "SUSPENDED"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and TERMINATED: the instance will not run again."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED}
)

_CODEC = PayloadCodec(max_bytes=2**62)


class OrchestrationState(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one orchestration instance.

    Attributes:
        failure_details: why the instance failed; while it runs, the error that blocks it
            (a non-determinism error, say), if any.
    """

    instance_id: str
    name: str
    runtime_status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None = None
    serialized_output: str | None = None
    serialized_custom_status: str | None = None
    failure_details: FailureDetails | None = None
    parent_instance_id: str | None = None
    execution_id: str | None = None
    scheduled_start_at: datetime | None = None

    def get_input(self, type: object = Any) -> Any:  # noqa: A002 - the API's parameter name
        """The input, decoded (into `type` if given)."""
        return _CODEC.decode(self.serialized_input, type, "orchestration input")

    def get_output(self, type: object = Any) -> Any:  # noqa: A002
        """The output, decoded (into `type` if given)."""
        return _CODEC.decode(self.serialized_output, type, "orchestration output")

    def get_custom_status(self, type: object = Any) -> Any:  # noqa: A002
        """The custom status, decoded (into `type` if given)."""
        return _CODEC.decode(self.serialized_custom_status, type, "custom status")

    def raise_if_failed(self) -> None:
        """Raise `OrchestrationFailedError` if the instance failed."""
        if self.runtime_status is OrchestrationStatus.FAILED:
            details = self.failure_details
            why = f"{details.error_type}: {details.message}" if details else "unknown error"
            raise OrchestrationFailedError(
                f"orchestration {self.instance_id!r} failed: {why}", self.instance_id, details
            )
