"""Durable execution for Python: orchestrations as generators, replayed from history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable import task
from durable.client import Client, SyncClient
from durable.core.context import ActivityContext, OrchestrationContext
from durable.core.decision import EngineOptions
from durable.core.errors import (
    CorruptHistoryError,
    DurableError,
    HistoryTooLargeError,
    InvalidTaskError,
    LeaseLostError,
    LockingRulesViolationError,
    NonDeterminismError,
    NotRegisteredError,
    OrchestrationAlreadyExistsError,
    OrchestrationFailedError,
    OrchestrationNotFoundError,
    OrchestrationStateError,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    PayloadTooLargeError,
    StoreBusyError,
    StoreError,
    StoreFullError,
    TaskCancelledError,
    TaskFailedError,
)
from durable.core.events import FailureDetails, HistoryEvent
from durable.core.history import History
from durable.core.state import OrchestrationState, OrchestrationStatus
from durable.core.tasks import RetryPolicy, Task, when_all, when_any
from durable.entities import (
    CriticalSection,
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityMetadata,
    EntityOperationFailedException,
)
from durable.limits import ActivityLimit
from durable.store import MemoryStore, SqliteStore, Store
from durable.store.open import open_store
from durable.worker import Worker

if TYPE_CHECKING:
    from durable.store.postgres import PostgresStore

__version__ = "0.1.0"

__all__ = [
    # programming model
    "task",
    "CriticalSection",
    "DurableEntity",
    "EntityContext",
    "EntityInstanceId",
    "EntityMetadata",
    "EntityOperationFailedException",
    "OrchestrationContext",
    "ActivityContext",
    "Task",
    "RetryPolicy",
    "when_all",
    "when_any",
    # runtime
    "Worker",
    "Client",
    "SyncClient",
    "Store",
    "MemoryStore",
    "SqliteStore",
    "PostgresStore",
    "open_store",
    "EngineOptions",
    "ActivityLimit",
    # state and history
    "OrchestrationState",
    "OrchestrationStatus",
    "FailureDetails",
    "History",
    "HistoryEvent",
    # errors
    "DurableError",
    "NonDeterminismError",
    "OrchestrationFailedError",
    "OrchestrationAlreadyExistsError",
    "OrchestrationNotFoundError",
    "OrchestrationStateError",
    "TaskFailedError",
    "TaskCancelledError",
    "InvalidTaskError",
    "NotRegisteredError",
    "HistoryTooLargeError",
    "LockingRulesViolationError",
    "PayloadError",
    "PayloadEncodeError",
    "PayloadDecodeError",
    "PayloadTooLargeError",
    "StoreError",
    "LeaseLostError",
    "StoreFullError",
    "StoreBusyError",
    "CorruptHistoryError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # psycopg is imported only by programs that use Postgres.
    if name == "PostgresStore":
        from durable.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
