"""An eternal orchestration on SQLite: memory and database size must stay flat.

One orchestration runs ITERATIONS iterations of one activity each and continues as new
every CHUNK iterations (the monitor and agent-loop pattern), on a `SqliteStore` with one
`Worker`, in this process. At every tenth of the run the script samples the process's
RSS and the size of the database files (main file and WAL). Flat means: the last
sample is within 10% (RSS) and 25% (files) of the sample at the first tenth, when the
caches and the file have warmed up.

Run: `nox -s bench` or `python benchmarks/eternal.py [--quick]` (10,000 iterations).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import durable
from durable import task

HERE = Path(__file__).resolve().parent
CHUNK = 10
BOUND_S = 900
RSS_SLACK = 1.10
FILES_SLACK = 1.25

PROGRESS: dict[str, int] = {"done": 0}


def tick(ctx: task.ActivityContext, n: int) -> int:
    PROGRESS["done"] = n + 1
    return n + 1


def monitor(ctx: task.OrchestrationContext, state: list[int]) -> Any:
    n, end = state
    for _ in range(CHUNK):
        if n >= end:
            return n
        n = yield ctx.call_activity(tick, input=n)
    ctx.continue_as_new([n, end])
    return None


def files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def run(iterations: int, folder: Path) -> dict[str, Any]:
    path = folder / "eternal.db"
    me = psutil.Process()
    samples: list[dict[str, float]] = []
    async with (
        durable.SqliteStore(path) as store,
        durable.Worker(store, orchestrators=[monitor], activities=[tick]),
    ):
        client = durable.Client(store)
        began = time.perf_counter()
        iid = await client.schedule_new_orchestration(monitor, input=[0, iterations])
        mark = iterations // 10
        while True:
            state = await client.get_orchestration_state(iid)
            done = PROGRESS["done"]
            if done >= mark * (len(samples) + 1) or (state and state.runtime_status.is_terminal):
                gc.collect()
                samples.append(
                    {
                        "iterations": done,
                        "seconds": round(time.perf_counter() - began, 2),
                        "rss_mb": round(me.memory_info().rss / 2**20, 1),
                        "files_mb": round(files_size(path) / 2**20, 2),
                    }
                )
            if state is not None and state.runtime_status.is_terminal:
                break
            await asyncio.sleep(0.05)
        assert state is not None and state.get_output() == iterations, state
    wall = time.perf_counter() - began
    first, last = samples[0], samples[-1]
    return {
        "iterations": iterations,
        "continue_as_new_every": CHUNK,
        "wall_s": round(wall, 2),
        "iterations_per_s": round(iterations / wall),
        "samples": samples,
        "rss_growth": round(last["rss_mb"] / first["rss_mb"], 3),
        "files_growth": round(last["files_mb"] / max(first["files_mb"], 0.01), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 iterations, not 100,000")
    parser.add_argument("--out", default=str(HERE / "results" / "eternal.json"))
    args = parser.parse_args()
    iterations = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="durable-eternal-") as tmp:
        try:
            result = asyncio.run(asyncio.wait_for(run(iterations, Path(tmp)), BOUND_S))
        except TimeoutError:
            raise SystemExit(f"benchmarks/eternal.py: ABORTED after {BOUND_S} s") from None
    print(
        f"eternal orchestration on SQLite: {iterations:,} iterations, continue-as-new every"
        f" {CHUNK}: {result['wall_s']} s ({result['iterations_per_s']:,}/s)"
    )
    for s in result["samples"]:
        print(
            f"  {s['iterations']:>8,} iterations  {s['seconds']:>7} s  RSS {s['rss_mb']:>6} MB"
            f"  files {s['files_mb']:>6} MB"
        )
    rss_ok = result["rss_growth"] <= RSS_SLACK
    files_ok = result["files_growth"] <= FILES_SLACK
    print(
        f"RSS last/first tenth: {result['rss_growth']}x ({'flat' if rss_ok else 'GROWING'}),"
        f" files: {result['files_growth']}x ({'flat' if files_ok else 'GROWING'})"
    )
    result["flat"] = rss_ok and files_ok
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not result["flat"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
