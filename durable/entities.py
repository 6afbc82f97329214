"""Durable entities: small pieces of state, each changed only by its own operations, one
at a time. `from durabletask.entities import ...` becomes `from durable.entities import ...`.
"""

from __future__ import annotations

from durable.core.entity import (
    CriticalSection,
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityMetadata,
    EntityOperationFailedException,
)
from durable.core.errors import LockingRulesViolationError

__all__ = [
    "CriticalSection",
    "DurableEntity",
    "EntityContext",
    "EntityInstanceId",
    "EntityMetadata",
    "EntityOperationFailedException",
    "LockingRulesViolationError",
]
