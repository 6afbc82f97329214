"""Every error `durable` raises; all derive from `DurableError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durable.core.events import FailureDetails


class DurableError(Exception):
    """Base class of every error raised by `durable`."""


class NonDeterminismError(DurableError):
    """The orchestrator's code no longer does what its recorded history says it did."""


class OrchestrationFailedError(DurableError):
    """An orchestration ended in the FAILED state.

    Attributes:
        instance_id: the failed instance.
        failure_details: why it failed, or None if unknown.
    """

    def __init__(
        self, message: str, instance_id: str, failure_details: FailureDetails | None
    ) -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.failure_details = failure_details


class OrchestrationAlreadyExistsError(DurableError):
    """An instance with this id exists and has not finished."""


class OrchestrationNotFoundError(DurableError, LookupError):
    """No instance has this id."""


class OrchestrationStateError(DurableError):
    """The instance is in a state that does not allow the operation."""


class TaskFailedError(DurableError):
    """A task awaited by an orchestrator failed; `details` says how."""

    def __init__(self, message: str, details: FailureDetails) -> None:
        super().__init__(message)
        self.details = details


class TaskCancelledError(DurableError):
    """The result of a cancelled task was asked for."""


class InvalidTaskError(DurableError, TypeError):
    """An orchestrator yielded something that is not a task."""


class NotRegisteredError(DurableError, LookupError):
    """No orchestrator or activity with this name is registered on the worker."""


class LockingRulesViolationError(DurableError):
    """A critical section's rule was broken: a second `lock_entities` while locks are held
    or asked for, or a call to an entity the critical section did not lock."""


class HistoryTooLargeError(DurableError):
    """The history reached its configured cap; the orchestration should continue as new."""


class PayloadError(DurableError):
    """Base class of payload encoding, decoding and size errors."""


class PayloadEncodeError(PayloadError, TypeError):
    """A value cannot be encoded as JSON."""


class PayloadDecodeError(PayloadError, ValueError):
    """Stored bytes cannot be decoded into the declared type."""


class PayloadTooLargeError(PayloadError, ValueError):
    """An encoded payload is larger than the configured cap."""


class StoreError(DurableError):
    """Base class of store errors."""


class LeaseLostError(StoreError):
    """The worker's lease on an instance or activity expired or was taken over.

    The commit that raised this was rejected whole; nothing it carried was written.
    """


class StoreFullError(StoreError):
    """The store has no space left (disk full, or a size limit reached).

    The transaction that raised this was rolled back whole; retry once space is back.
    """


class StoreBusyError(StoreError):
    """The store stayed locked by another connection past the busy timeout.

    The transaction that raised this was rolled back whole; it is safe to retry.
    """


class CorruptHistoryError(StoreError):
    """A stored event cannot be decoded: the data was damaged or written by other software.

    Only the instance that owns the event is affected; it stays as it is, blocked.
    """


for _cls in list(globals().values()):
    # Failure details name errors by module and qualname; users see and match the
    # public path `durable.X`, not the private module that defines it.
    if isinstance(_cls, type) and issubclass(_cls, DurableError):
        _cls.__module__ = "durable"
