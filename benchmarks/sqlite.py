"""SqliteStore speed (synchronous=FULL): prints figures and writes them as JSON.

Workloads, each on a fresh database file in its own temporary directory:
  1. many orchestrations of 10 sequential async activities, started together, one worker;
  2. one orchestration of 1,000 and one of 10,000 sequential activities (growth must be linear);
  3. a fan-out of 1,000 activities in one orchestration (when_all);
  4. recovery: a worker process is SIGKILLed half-way through 100 orchestrations; a new
     worker, on a store opened anew (what a restart does), finishes them.

Run: `nox -s bench` or `python benchmarks/sqlite.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the shared definitions, also run as the worker process
    sys.path.insert(0, str(HERE))

import _sqlite_worker as defs  # noqa: E402

import durable  # noqa: E402

T = TypeVar("T")

SYNCHRONOUS = "FULL"
MAX_ACTIVITIES = 64  # the Worker defaults: what users get
MAX_ORCHESTRATIONS = 64
TARGET_COMPLETIONS_PER_S = 3000
TARGET_GROWTH = 11.0
RECOVERY_LEASE_S = 30.0  # the Worker default


def bounded(what: str, seconds: float, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end, or abort the benchmark after `seconds`."""
    try:
        return asyncio.run(asyncio.wait_for(coro, seconds))
    except TimeoutError:
        raise SystemExit(
            f"benchmarks/sqlite.py: ABORTED: {what} did not finish within {seconds:g} s"
        ) from None


def new_db(tmp: str) -> Path:
    return Path(tmp) / "bench.db"


def worker_for(store: durable.SqliteStore, lease_seconds: float = 30.0) -> durable.Worker:
    return durable.Worker(
        store,
        orchestrators=defs.ORCHESTRATORS,
        activities=defs.ACTIVITIES,
        max_concurrent_activities=MAX_ACTIVITIES,
        max_concurrent_orchestrations=MAX_ORCHESTRATIONS,
        lease_seconds=lease_seconds,
    )


async def wait_all(client: durable.Client, ids: list[str], expected: int) -> None:
    for iid in ids:
        state = await client.wait_for_orchestration_completion(iid, timeout=600)
        assert state is not None, iid
        assert state.runtime_status is durable.OrchestrationStatus.COMPLETED, state
        assert state.get_output() == expected, state


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def bench_many(path: Path, instances: int, steps: int) -> dict[str, float]:
    """Workload 1: `instances` x `steps` sequential activities, started together."""
    defs.STARTS.clear()
    defs.ENDS.clear()
    async with durable.SqliteStore(path, synchronous=SYNCHRONOUS) as store, worker_for(store):
        client = durable.Client(store)
        began = time.perf_counter()
        ids = await asyncio.gather(
            *(
                client.schedule_new_orchestration(defs.sq_chain, input=steps)
                for _ in range(instances)
            )
        )
        scheduled = time.perf_counter()
        await wait_all(client, ids, steps)
        ended = time.perf_counter()
    gaps = [defs.STARTS[iid, k + 1] - defs.ENDS[iid, k] for iid in ids for k in range(steps - 1)]
    assert len(defs.ENDS) == instances * steps
    wall = ended - began
    return {
        "instances": instances,
        "steps": steps,
        "schedule_s": scheduled - began,
        "wall_s": wall,
        "orchestrations_per_s": instances / wall,
        "completions_per_s": instances * steps / wall,
        "gap_p50_ms": percentile(gaps, 50) * 1000,
        "gap_p99_ms": percentile(gaps, 99) * 1000,
        "gap_max_ms": max(gaps) * 1000,
    }


async def bench_one(path: Path, orchestrator: Any, n: int) -> float:
    """Workloads 2 and 3: the wall time of one orchestration, from schedule to completion."""
    defs.STARTS.clear()
    defs.ENDS.clear()
    async with durable.SqliteStore(path, synchronous=SYNCHRONOUS) as store, worker_for(store):
        client = durable.Client(store)
        began = time.perf_counter()
        iid = await client.schedule_new_orchestration(orchestrator, input=n)
        await wait_all(client, [iid], n)
        wall = time.perf_counter() - began
    assert len(defs.ENDS) == n
    return wall


async def bench_chains(path: Path, n: int, runs: int) -> dict[str, Any]:
    """Workload 2: one chain of `n` steps, `runs` times on fresh files; the median wall time.

    Also the time per step in each tenth of the last run's steps: flat per-step costs
    mean linear growth whatever the noise between runs (the machine may be shared).
    """
    walls = []
    for run in range(runs):
        walls.append(await bench_one(path.with_name(f"chain-{run}.db"), defs.sq_chain, n))
    ends = sorted(defs.ENDS.values())
    tenth = n // 10
    return {
        "steps": n,
        "runs": runs,
        "wall_s": sorted(walls)[runs // 2],
        "ms_per_step_by_tenth": [
            (ends[min(i + tenth, n - 1)] - ends[i]) / (min(i + tenth, n - 1) - i) * 1000
            for i in range(0, n, tenth)
        ],
    }


async def bench_recovery(
    path: Path, instances: int, steps: int, lease: float, budget: float
) -> dict[str, float]:
    """Workload 4: kill a worker process half-way; time a new worker's finish."""
    async with durable.SqliteStore(path, synchronous=SYNCHRONOUS) as store:
        client = durable.Client(store)
        ids = [
            await client.schedule_new_orchestration(defs.sq_slow_chain, input=steps)
            for _ in range(instances)
        ]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "_sqlite_worker.py"),
            str(path),
            str(lease),
            str(budget),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        half = instances * steps // 2
        done = 0
        try:
            if (await proc.stdout.readline()).strip() != b"ready":
                raise SystemExit("benchmarks/sqlite.py: the worker process failed to start")
            while done < half:
                if not await proc.stdout.readline():
                    raise SystemExit(
                        f"benchmarks/sqlite.py: the worker process exited after {done} activities"
                    )
                done += 1
            proc.kill()  # SIGKILL: no shutdown, no lease released
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        states = [await client.get_orchestration_state(iid) for iid in ids]
        finished_at_kill = sum(s is not None and s.runtime_status.is_terminal for s in states)
        assert finished_at_kill < instances, "nothing was in flight when the worker was killed"
        # A restarted program opens the store anew: the open ends the dead process's
        # leases (its lock file is free), so the new worker need not wait for them.
        restarted = time.perf_counter()
        async with (
            durable.SqliteStore(path, synchronous=SYNCHRONOUS) as fresh,
            worker_for(fresh, lease_seconds=lease),
        ):
            await wait_all(durable.Client(fresh), ids, steps)
            recovered = time.perf_counter() - restarted
    return {
        "instances": instances,
        "steps": steps,
        "activity_seconds": defs.SLOW_SECONDS,
        "lease_s": lease,
        "killed_after_activities": done,
        "finished_at_kill": finished_at_kill,
        "completed_after_restart": instances,
        "recovery_s": recovered,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    parser.add_argument(
        "--only",
        type=int,
        action="append",
        choices=(1, 2, 3, 4),
        help="run only this workload (repeatable; for profiling: no JSON unless --out)",
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/sqlite.json")
    args = parser.parse_args()
    quick = args.quick
    todo = set(args.only or (1, 2, 3, 4))
    out = args.out or (None if args.only else "benchmarks/results/sqlite.json")
    instances = 200 if quick else 1000
    long_chain = 1000 if quick else 10_000
    short_chain = long_chain // 10
    fan_out = 200 if quick else 1000

    figures: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "synchronous": SYNCHRONOUS,
        "quick": quick,
        "worker": {
            "max_concurrent_activities": MAX_ACTIVITIES,
            "max_concurrent_orchestrations": MAX_ORCHESTRATIONS,
        },
    }
    lines = [f"SqliteStore, synchronous={SYNCHRONOUS}, SQLite {sqlite3.sqlite_version}"]
    # Abort bounds (a normal full run takes ~20 s): together under 3 minutes.

    if 1 in todo:
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            many = bounded(
                f"workload 1 ({instances} x 10 steps)", 40, bench_many(new_db(tmp), instances, 10)
            )
        met = many["completions_per_s"] >= TARGET_COMPLETIONS_PER_S
        figures.update(
            many_instances=instances,
            many_schedule_s=round(many["schedule_s"], 3),
            many_wall_s=round(many["wall_s"], 3),
            orchestrations_per_s=round(many["orchestrations_per_s"]),
            completions_per_s=round(many["completions_per_s"]),
            target_completions_per_s=TARGET_COMPLETIONS_PER_S,
            target_completions_met=met,
            step_gap_p50_ms=round(many["gap_p50_ms"], 2),
            step_gap_p99_ms=round(many["gap_p99_ms"], 2),
            step_gap_max_ms=round(many["gap_max_ms"], 2),
        )
        lines += [
            f"1. {instances:,} x 10 sequential steps, started together, one worker",
            f"   scheduling (gathered):      {many['schedule_s']:10.3f} s",
            f"   first schedule to all done: {many['wall_s']:10.3f} s",
            f"   orchestrations/s:           {figures['orchestrations_per_s']:>10,}",
            f"   activity completions/s:     {figures['completions_per_s']:>10,}",
            f"   step gap (end k -> start k+1): p50 {many['gap_p50_ms']:.2f} ms,"
            f" p99 {many['gap_p99_ms']:.2f} ms, max {many['gap_max_ms']:.2f} ms",
            f"   target >= {TARGET_COMPLETIONS_PER_S:,} completions/s:"
            f" {'MET' if met else 'NOT MET'}"
            f" ({many['completions_per_s'] / TARGET_COMPLETIONS_PER_S:.0%} of it)",
        ]

    if 2 in todo:
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            short = bounded(
                f"workload 2 (1 x {short_chain} steps, 3 runs)",
                30,
                bench_chains(new_db(tmp), short_chain, 3),
            )
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            long = bounded(
                f"workload 2 (1 x {long_chain} steps)",
                60,
                bench_chains(new_db(tmp), long_chain, 1),
            )
        t_short, t_long = short["wall_s"], long["wall_s"]
        growth = t_long / t_short
        met = growth <= TARGET_GROWTH
        figures.update(
            {
                f"t_{short_chain}_seq_s": round(t_short, 3),
                f"t_{long_chain}_seq_s": round(t_long, 3),
                "growth_ratio_10x": round(growth, 2),
                "target_growth_met": met,
                "long_chain_ms_per_step_by_tenth": [
                    round(x, 3) for x in long["ms_per_step_by_tenth"]
                ],
            }
        )
        lines += [
            "2. one orchestration of sequential steps",
            f"   1 x {short_chain:>6,} steps: {t_short:8.3f} s"
            f" ({short_chain / t_short:,.0f} steps/s; median of 3)",
            f"   1 x {long_chain:>6,} steps: {t_long:8.3f} s ({long_chain / t_long:,.0f} steps/s)",
            f"   growth t(10x)/t(1x): {growth:8.2f} (target <= {TARGET_GROWTH:g}):"
            f" {'MET' if met else 'NOT MET'}",
            f"   ms/step in each tenth of the {long_chain:,}: "
            + " ".join(f"{x:.2f}" for x in long["ms_per_step_by_tenth"]),
        ]

    if 3 in todo:
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            t_fan = bounded(
                f"workload 3 (fan-out of {fan_out})",
                20,
                bench_one(new_db(tmp), defs.sq_fanout, fan_out),
            )
        figures.update(
            fan_out=fan_out,
            fan_out_s=round(t_fan, 3),
            fan_out_activities_per_s=round(fan_out / t_fan),
        )
        lines.append(
            f"3. fan-out of {fan_out:,} (when_all): {t_fan:.3f} s"
            f" ({fan_out / t_fan:,.0f} activities/s)"
        )

    if 4 in todo:
        with tempfile.TemporaryDirectory(prefix="durable-bench-") as tmp:
            work = bench_recovery(new_db(tmp), 100, 20, RECOVERY_LEASE_S, 30)
            recovery = bounded("workload 4 (recovery)", 30, work)
        figures["recovery"] = {k: round(v, 3) for k, v in recovery.items()}
        lines += [
            f"4. recovery: {recovery['instances']} x {recovery['steps']} steps of"
            f" {defs.SLOW_SECONDS * 1000:.0f} ms; the worker process was SIGKILLed after"
            f" {recovery['killed_after_activities']:,} activities"
            f" ({recovery['finished_at_kill']} instances finished by then)",
            f"   leases of {RECOVERY_LEASE_S:g} s (not waited for: the restart ends the dead"
            f" process's); restart to all {recovery['completed_after_restart']} completed:"
            f" {recovery['recovery_s']:.3f} s",
        ]

    print("\n".join(lines))
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
