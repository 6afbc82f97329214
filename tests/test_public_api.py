"""The exported names are exactly the intended ones, and durabletask code ports by import."""

from __future__ import annotations

import pytest

import durable
from durable import task

EXPECTED = {
    "task", "OrchestrationContext", "ActivityContext", "Task", "RetryPolicy", "when_all",
    "when_any", "Worker", "Client", "SyncClient", "Store", "MemoryStore", "SqliteStore",
    "PostgresStore",
    "open_store", "EngineOptions", "ActivityLimit",
    "OrchestrationState", "OrchestrationStatus", "FailureDetails", "History", "HistoryEvent",
    "DurableError", "NonDeterminismError", "OrchestrationFailedError",
    "OrchestrationAlreadyExistsError", "OrchestrationNotFoundError", "OrchestrationStateError",
    "TaskFailedError", "TaskCancelledError", "InvalidTaskError", "NotRegisteredError",
    "HistoryTooLargeError", "PayloadError", "PayloadEncodeError", "PayloadDecodeError",
    "PayloadTooLargeError", "StoreError", "LeaseLostError", "StoreFullError", "StoreBusyError",
    "CorruptHistoryError", "LockingRulesViolationError",
    "CriticalSection", "DurableEntity", "EntityContext", "EntityInstanceId", "EntityMetadata",
    "EntityOperationFailedException",
    "__version__",
}  # fmt: skip


def test_exported_names_are_exactly_the_intended_ones() -> None:
    assert set(durable.__all__) == EXPECTED
    for name in durable.__all__:
        assert hasattr(durable, name), name


def test_durabletask_names_exist_in_the_task_module() -> None:
    for name in (
        "OrchestrationContext", "ActivityContext", "Task", "CompletableTask", "WhenAllTask",
        "WhenAnyTask", "RetryPolicy", "FailureDetails", "TaskFailedError",
        "NonDeterminismError", "when_all", "when_any", "get_name", "Orchestrator", "Activity",
    ):  # fmt: skip
        assert hasattr(task, name), name
    from durable import entities  # noqa: PLC0415 - `durabletask.entities` ports by import

    for name in (
        "DurableEntity", "EntityContext", "EntityInstanceId", "EntityMetadata",
        "EntityOperationFailedException",
    ):  # fmt: skip
        assert getattr(entities, name).__module__ == "durable.entities", name
    assert task.when_all is durable.when_all
    assert task.when_any is durable.when_any


def test_every_error_derives_from_durable_error_and_is_named_publicly() -> None:
    errors = [getattr(durable, n) for n in durable.__all__ if n.endswith("Error")]
    for error in errors:
        assert issubclass(error, durable.DurableError), error
        assert error.__module__ == "durable", error


def test_open_store_memory_and_unknown_scheme() -> None:
    assert isinstance(durable.open_store("memory://"), durable.MemoryStore)
    with pytest.raises(ValueError, match="ftp://x"):
        durable.open_store("ftp://x")
