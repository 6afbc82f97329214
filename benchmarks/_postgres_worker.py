"""The worker process of benchmarks/postgres.py: one `durable.Worker` on a Postgres hub.

`python benchmarks/_postgres_worker.py URL HUB MAX_ACTIVITIES MAX_ORCHESTRATIONS
MAX_CONNECTIONS MAX_SECONDS [--sticky-seconds S] [--profile PROFILE_FILE]`

It opens the store, prints `ready`, starts working when it reads `go` on stdin and stops
when it reads `stop` (or stdin closes, or MAX_SECONDS pass: it never outlives a
benchmark that died). Then it prints one JSON line: the activities it ran with their
start and end times (`time.perf_counter()`, CLOCK_MONOTONIC: comparable between
processes), every store call it made (count and seconds, by method), and the CPU time
of its threads between `go` and `stop` (read from /proc: Linux only). With --profile,
the working phase runs under cProfile, one profiler per thread: PROFILE_FILE.worker (the
worker's event loop) and PROFILE_FILE.store (the store's own event loop thread).

The orchestrator and activity are those of benchmarks/sqlite.py (`_sqlite_worker.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _sqlite_worker as defs  # noqa: E402

import durable  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


class CountingStore:
    """Passes everything to the store; counts and times its coroutine methods."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
        """Per method: calls, seconds, and calls that returned an empty list (no work)."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(value):
            if callable(value):  # (a method: found directly from now on, as below)
                setattr(self, name, value)
            return value
        calls = self.calls[name]

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            result = None
            try:
                result = await value(*args, **kwargs)
                return result
            finally:
                calls[0] += 1
                calls[1] += time.perf_counter() - began
                calls[2] += result == []

        setattr(self, name, timed)  # found directly from now on
        return timed


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = names.get(int(tid), "other")
        if name.startswith("durable-activity"):
            name = "durable-activity"
        elif name.startswith("durable-durable_"):
            name = "store-loop"
        elif name == "MainThread":
            name = "worker-loop"
        out[name] += (int(fields[11]) + int(fields[12])) / _TICKS
    return dict(out)


async def serve(
    url: str,
    hub: str,
    max_activities: int,
    max_orchestrations: int,
    max_connections: int,
    max_seconds: float,
    sticky_seconds: float | None = None,
    profile: str | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:  # a thread: stdin may be a pipe asyncio cannot watch
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "stop")

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    options: dict[str, Any] = {}
    if sticky_seconds is not None:  # else the store's default
        options["sticky_seconds"] = sticky_seconds
    store = durable.PostgresStore(
        url, hub=hub, min_connections=max_connections, max_connections=max_connections, **options
    )
    async with store:
        counting = CountingStore(store)
        worker = durable.Worker(
            counting,  # type: ignore[arg-type]
            orchestrators=defs.ORCHESTRATORS,
            activities=defs.ACTIVITIES,
            max_concurrent_activities=max_activities,
            max_concurrent_orchestrations=max_orchestrations,
        )
        print("ready", flush=True)
        while (await asyncio.wait_for(lines.get(), max_seconds)) != "go":
            pass
        profilers: list[cProfile.Profile] = []
        if profile:  # one profiler for this loop's thread, one for the store's
            profilers = [cProfile.Profile(time.thread_time), cProfile.Profile(time.thread_time)]
            profilers[0].enable()
            store_loop = store._runner.loop  # type: ignore[union-attr]
            store_loop.call_soon_threadsafe(profilers[1].enable)
        cpu_before, wall_before = thread_cpu(), time.perf_counter()
        async with worker:
            try:
                while (await asyncio.wait_for(lines.get(), max_seconds)) != "stop":
                    pass
            except TimeoutError:
                pass
            cpu_after, wall_after = thread_cpu(), time.perf_counter()
        if profilers:
            profilers[0].disable()
            stopped = threading.Event()
            store_loop.call_soon_threadsafe(lambda: (profilers[1].disable(), stopped.set()))
            stopped.wait(5)
            profilers[0].dump_stats(f"{profile}.worker")
            profilers[1].dump_stats(f"{profile}.store")
    cpu = {k: round(v - cpu_before.get(k, 0.0), 3) for k, v in cpu_after.items()}
    report = {
        "pid": os.getpid(),
        "activities": len(defs.ENDS),
        "wall_s": round(wall_after - wall_before, 3),
        "cpu_s": cpu,
        "store_calls": {
            k: [int(n), round(s, 4), int(e)] for k, (n, s, e) in counting.calls.items()
        },
        "starts": [[iid, k, t] for (iid, k), t in defs.STARTS.items()],
        "ends": [[iid, k, t] for (iid, k), t in defs.ENDS.items()],
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("hub")
    parser.add_argument("max_activities", type=int)
    parser.add_argument("max_orchestrations", type=int)
    parser.add_argument("max_connections", type=int)
    parser.add_argument("max_seconds", type=float)
    parser.add_argument("--sticky-seconds", type=float, default=None)
    parser.add_argument("--profile", default=None)
    a = parser.parse_args()
    asyncio.run(
        serve(
            a.url,
            a.hub,
            a.max_activities,
            a.max_orchestrations,
            a.max_connections,
            a.max_seconds,
            a.sticky_seconds,
            a.profile,
        )
    )


if __name__ == "__main__":
    main()
