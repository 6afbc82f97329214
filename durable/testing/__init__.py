"""Tools for testing orchestrations: a determinism checker, offline replay, virtual time."""

from durable.testing.checker import DeterminismCheckError, check_determinism
from durable.testing.environment import TestEnvironment, VirtualClock
from durable.testing.replayer import Replayer, load_history

__all__ = [
    "DeterminismCheckError",
    "Replayer",
    "TestEnvironment",
    "VirtualClock",
    "check_determinism",
    "load_history",
]
