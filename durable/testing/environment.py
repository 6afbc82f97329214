"""`TestEnvironment`: a worker, a client and an in-memory store on virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from durable.client import Client
from durable.store.memory import MemoryStore
from durable.worker import Worker

_EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class VirtualClock:
    """A clock that moves only when told to (or when a `TestEnvironment` is idle).

    Args:
        start: the time it starts at (default 2030-01-01 UTC, so tests do not depend on
            the day they run).
    """

    def __init__(self, start: datetime = _EPOCH) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move forward by `delta`.

        Raises:
            ValueError: `delta` is negative (time never goes back).
        """
        if delta < timedelta(0):
            raise ValueError("time never goes back: delta must not be negative")
        self._now += delta

    def set(self, when: datetime) -> None:
        """Move forward to `when` (no-op if it is not later)."""
        self._now = max(self._now, when if when.tzinfo else when.replace(tzinfo=UTC))


class TestEnvironment:
    """Run orchestrations in a test, with timers of days or months done at once.

    Time is virtual. With `auto_advance` (the default), whenever nothing is running or
    due, time jumps to the next timer, so a 30-day wait takes no wall time. Work that is
    in flight (an activity running, a decision being made) holds time still. Without it,
    time moves only by `advance()`.

    Events the test raises while time is jumping race with the timers, as they would in
    production with a timer that long; raise them before the orchestration waits, or use
    `auto_advance=False` and `advance()` by hand.

    Args:
        orchestrators: the orchestrators the worker runs.
        activities: the activities the worker runs.
        start: the virtual time at the start.
        auto_advance: jump to the next timer whenever everything is idle.
        worker_options: passed to `Worker` (concurrency, payload cap, ...).

    Attributes:
        store: the in-memory store.
        clock: the virtual clock.
        worker: the running worker.
        client: a client on the store.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self,
        orchestrators: Iterable[Callable[..., Any]] = (),
        activities: Iterable[Callable[..., Any]] = (),
        *,
        start: datetime = _EPOCH,
        auto_advance: bool = True,
        **worker_options: Any,
    ) -> None:
        self.clock = VirtualClock(start)
        self.store = MemoryStore(clock=self.clock)
        worker_options.setdefault("poll_interval", 0.05)
        self.worker = Worker(
            self.store, orchestrators=orchestrators, activities=activities, **worker_options
        )
        self.client = Client(self.store, poll_interval=0.05)
        self._auto = auto_advance
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TestEnvironment:
        await self.worker.start()
        if self._auto:
            self._ticker = asyncio.create_task(self._skip_idle_time(), name="durable-time")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.worker.shutdown()

    def now(self) -> datetime:
        """The virtual time."""
        return self.clock()

    async def advance(self, delta: timedelta) -> None:
        """Move time forward by `delta`; timers due by then fire."""
        self.clock.advance(delta)
        self._wake()

    def _wake(self) -> None:
        self.store.orchestration_work.notify()
        self.store.instance_changes.notify()

    async def _skip_idle_time(self) -> None:
        # Two looks a moment apart must both find nothing to do: work handed from one
        # task to another in this process shows in between.
        quiet = 0
        while True:
            await asyncio.sleep(0.002)
            if not self.store.is_idle():
                quiet = 0
                continue
            quiet += 1
            if quiet < 2:
                continue
            wake = await self.store.next_wake_time()
            if wake is not None and wake > self.clock():
                self.clock.set(wake)
                self._wake()
            quiet = 0
