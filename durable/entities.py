"""Durable entities: small pieces of state, each changed only by its own operations, one
at a time. `from durabletask.entities import ...` becomes `from durable.entities import ...`.
"""

from __future__ import annotations

from durable.core.entity import (
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityMetadata,
    EntityOperationFailedException,
)

__all__ = [
    "DurableEntity",
    "EntityContext",
    "EntityInstanceId",
    "EntityMetadata",
    "EntityOperationFailedException",
]
