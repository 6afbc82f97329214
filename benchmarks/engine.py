"""Engine and in-memory runtime speed: prints figures and writes them as JSON.

Run: `nox -s bench` or `python benchmarks/engine.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import durable
from durable import task
from durable.core.engine import Execution
from durable.core.events import ExecutionStarted, OrchestratorStarted, TaskCompleted
from durable.core.functions import orchestrator_spec


def step(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


async def astep(ctx: task.ActivityContext, x: int) -> int:
    return x + 1


def chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(astep, input=x)
    return x


def sync_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(step, input=x)
    return x


def bench_pure_engine(decisions: int) -> dict[str, float]:
    """Decisions/s of the incremental engine, one activity completion per decision."""
    specs = {"chain": orchestrator_spec(chain)}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    execution = Execution(specs)
    start = ExecutionStarted(
        timestamp=t0, name="chain", instance_id="i", execution_id="e", input=str(decisions)
    )
    execution.step((OrchestratorStarted(timestamp=t0), start))
    began = time.perf_counter()
    for i in range(decisions):
        now = t0 + timedelta(microseconds=i)
        execution.step(
            (
                OrchestratorStarted(timestamp=now),
                TaskCompleted(timestamp=now, task_id=i, result=str(i + 1)),
            )
        )
    elapsed = time.perf_counter() - began
    assert execution.is_finished
    return {"decisions": decisions, "seconds": elapsed, "decisions_per_s": decisions / elapsed}


async def run_many(orchestrator: Any, instances: int, steps: int) -> float:
    store = durable.MemoryStore()
    worker = durable.Worker(
        store,
        orchestrators=[chain, sync_chain],
        activities=[step, astep],
        max_concurrent_activities=1000,
        max_concurrent_orchestrations=500,
    )
    async with worker:
        client = durable.Client(store)
        began = time.perf_counter()
        ids = [
            await client.schedule_new_orchestration(orchestrator, input=steps)
            for _ in range(instances)
        ]
        for iid in ids:
            state = await client.wait_for_orchestration_completion(iid, timeout=600)
            assert state is not None and state.get_output() == steps, state
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    parser.add_argument("--out", default="benchmarks/results/engine.json")
    args = parser.parse_args()
    scale = 10 if args.quick else 1

    pure = bench_pure_engine(20_000 // scale)
    instances = 1000 // scale
    t_many = asyncio.run(run_many(chain, instances, 10))
    t_many_sync = asyncio.run(run_many(sync_chain, instances, 10))
    t_1k = asyncio.run(run_many(chain, 1, 1000 // scale))
    t_10k = asyncio.run(run_many(chain, 1, 10_000 // scale))

    figures = {
        "date": datetime.now(UTC).date().isoformat(),
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "pure_engine_decisions_per_s": round(pure["decisions_per_s"]),
        "memory_completions_per_s_async": round(instances * 10 / t_many),
        "memory_completions_per_s_sync": round(instances * 10 / t_many_sync),
        "t_1000_seq_s": round(t_1k, 3),
        "t_10000_seq_s": round(t_10k, 3),
        "growth_ratio_10k_over_1k": round(t_10k / t_1k, 2),
    }
    print(f"pure engine:            {figures['pure_engine_decisions_per_s']:>10,} decisions/s")
    print(
        f"in memory, {instances} x 10 steps: "
        f"{figures['memory_completions_per_s_async']:>10,} completions/s (async activities)"
    )
    print(
        f"in memory, {instances} x 10 steps: "
        f"{figures['memory_completions_per_s_sync']:>10,} completions/s (sync, thread pool)"
    )
    print(f"1 x {1000 // scale} sequential steps:  {t_1k:8.3f} s")
    print(f"1 x {10_000 // scale} sequential steps: {t_10k:8.3f} s")
    print(f"growth t(10x)/t(1x):    {figures['growth_ratio_10k_over_1k']:>10} (target <= 11)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
