"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import durable

WAIT = 5.0
"""Seconds any single wait may take; every wait in these tests needs a fraction of it."""


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    """Poll `check` until it holds; fail the test if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.01)


async def status_of(client: durable.Client, iid: str) -> durable.OrchestrationStatus | None:
    state = await client.get_orchestration_state(iid)
    return None if state is None else state.runtime_status


def has_status(
    client: durable.Client, iid: str, status: durable.OrchestrationStatus
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await status_of(client, iid) is status

    return check


class Calls:
    """What activities did, recorded from any thread: counts and values per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.values: defaultdict[str, list[Any]] = defaultdict(list)

    def add(self, key: str, value: Any = None) -> None:
        with self._lock:
            self.counts[key] += 1
            self.values[key].append(value)

    def clear(self) -> None:
        with self._lock:
            self.counts.clear()
            self.values.clear()
