"""Tools for testing orchestrations: offline replay of histories, and virtual time."""

from durable.testing.environment import TestEnvironment, VirtualClock
from durable.testing.replayer import Replayer, load_history

__all__ = ["Replayer", "TestEnvironment", "VirtualClock", "load_history"]
