"""durable beside DBOS and LangGraph on the same workloads, in one run: a table and JSON.

Each system runs each workload in a fresh process and a fresh temporary directory
(benchmarks/_peer_run.py), one after the other, so that none shares a warm cache or a
core with another. Every system keeps its state in SQLite, with its own defaults.
Workloads:

  1. the 10-step chain: INSTANCES workflows (orchestrations, graphs) of 10 sequential
     steps, all started at once: steps/s, and the step interval p50/p99; and again with
     10 workflows, a light load;
  2. one workflow of 1,000 and one of 10,000 sequential steps: their times (the best of
     3 runs each) and the growth ratio t(10,000) / t(1,000) (10 if linear);
  3. a fan-out of 1,000 steps at once in one workflow: its time;
  4. recovery: 100 workflows of 10 steps of 20 ms; the process SIGKILLs itself once a
     third of the steps are done; the time from the restart until all are done.

Targets (issue 7): durable's chain steps/s at least 20x DBOS's; its p50 step interval
below DBOS's; its growth ratio at most 11. The peers come from the `bench` dependency
group (`nox -s bench` installs it); a peer that is not installed is reported as missing,
not skipped silently. The Postgres rows (durable and DBOS with 1, 2 and 4 worker
processes) are benchmarks/postgres.py's.

Run: `nox -s bench` or `python benchmarks/peers.py [--quick] [--instances N]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SYSTEMS = ("durable", "dbos", "langgraph")
MODULES = {"durable": "durable", "dbos": "dbos", "langgraph": "langgraph.checkpoint.sqlite"}
DISTRIBUTIONS = {"durable": "durable-sdk", "dbos": "dbos", "langgraph": "langgraph"}
STEPS = 10
FEW = 10  # the chain again with this many workflows: a light load
SHORT = 1000  # the one-workflow run to compare the long one with
FANOUT = 1000
RECOVERY = 100
RUN_BOUND_S = 600
TARGET_THROUGHPUT_VS_DBOS = 20.0
TARGET_GROWTH = 11.0


def version(system: str) -> str | None:
    if importlib.util.find_spec(MODULES[system]) is None:
        return None
    try:
        return metadata.version(DISTRIBUTIONS[system])
    except metadata.PackageNotFoundError:
        return "unknown"


def run(system: str, workload: str, *args: int, folder: str | None = None) -> dict[str, Any]:
    """One run of `_peer_run.py` in a fresh process (and directory, unless given)."""
    with tempfile.TemporaryDirectory(prefix=f"durable-peers-{system}-") as tmp:
        command = [sys.executable, str(HERE / "_peer_run.py"), system, workload, folder or tmp]
        env = {**os.environ, "PEER_LAUNCHED": repr(time.time())}
        try:
            done = subprocess.run(
                [*command, *map(str, args)],
                capture_output=True,
                text=True,
                timeout=RUN_BOUND_S,
                check=False,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"benchmarks/peers.py: ABORTED: {system}'s {workload} ran over {RUN_BOUND_S} s"
            ) from None
    if workload == "recovery-start":
        if done.returncode != -signal.SIGKILL:
            raise SystemExit(f"benchmarks/peers.py: {system} did not crash:\n{done.stderr[-3000:]}")
        return {}
    if done.returncode != 0:
        raise SystemExit(
            f"benchmarks/peers.py: {system}'s {workload} failed:\n{done.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_all(system: str, instances: int, quick: bool) -> dict[str, Any]:
    long = 2000 if quick else 10_000
    figures: dict[str, Any] = {
        "chain": run(system, "chain", instances, STEPS),
        "chain_few": run(system, "chain", FEW, STEPS),
    }
    # The best of a few runs: a busy moment of the machine only ever adds time.
    short_s = min(run(system, "sequential", SHORT)["wall_s"] for _ in range(3))
    long_s = min(run(system, "sequential", long)["wall_s"] for _ in range(3))
    figures["sequential"] = {
        "short_steps": SHORT,
        "short_s": short_s,
        "long_steps": long,
        "long_s": long_s,
        "growth": long_s / short_s * SHORT / long * 10,
    }
    figures["fanout"] = {"steps": FANOUT, "wall_s": run(system, "fanout", FANOUT)["wall_s"]}
    with tempfile.TemporaryDirectory(prefix=f"durable-peers-{system}-recovery-") as tmp:
        run(system, "recovery-start", RECOVERY, STEPS, folder=tmp)
        figures["recovery"] = run(system, "recovery-finish", RECOVERY, STEPS, folder=tmp)
    return figures


ROWS: list[tuple[str, Callable[[dict[str, Any]], float], str, bool]] = [
    # (label, figure, format, higher is better)
    ("chain steps/s", lambda f: f["chain"]["steps_per_s"], "{:,.0f}", True),
    ("chain step p50 ms", lambda f: f["chain"]["step_p50_ms"], "{:.1f}", False),
    ("chain step p99 ms", lambda f: f["chain"]["step_p99_ms"], "{:.1f}", False),
    (f"chain({FEW}) steps/s", lambda f: f["chain_few"]["steps_per_s"], "{:,.0f}", True),
    (f"chain({FEW}) p50 ms", lambda f: f["chain_few"]["step_p50_ms"], "{:.1f}", False),
    (f"chain({FEW}) p99 ms", lambda f: f["chain_few"]["step_p99_ms"], "{:.1f}", False),
    ("1 x 1,000 steps s", lambda f: f["sequential"]["short_s"], "{:.2f}", False),
    ("1 x long steps s", lambda f: f["sequential"]["long_s"], "{:.2f}", False),
    ("growth (10 = linear)", lambda f: f["sequential"]["growth"], "{:.1f}", False),
    ("fan-out 1,000 s", lambda f: f["fanout"]["wall_s"], "{:.2f}", False),
    ("recovery s", lambda f: f["recovery"]["recovery_s"], "{:.2f}", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--instances", type=int, default=None, help="chain: 1,000 (quick 200)")
    parser.add_argument("--out", default=str(HERE / "results" / "peers.json"))
    args = parser.parse_args()
    instances = args.instances or (200 if args.quick else 1000)

    versions = {s: version(s) for s in SYSTEMS}
    results: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        if versions[system] is None:
            print(f"{system}: not installed (pip install --group bench, or nox -s bench)")
            continue
        began = time.perf_counter()
        results[system] = run_all(system, instances, args.quick)
        print(f"  {system}: done in {time.perf_counter() - began:.0f} s", flush=True)

    names = list(results)
    long = results[names[0]]["sequential"]["long_steps"] if names else 0
    lines = [
        "",
        f"On SQLite, one process each ({platform.machine()}, Python"
        f" {platform.python_version()}); chain: {instances:,} x {STEPS} steps at once;"
        f" long: {long:,} steps; recovery: {RECOVERY} x {STEPS} steps of 20 ms",
        f"{'workload':<22}"
        + "".join(f"{f'{n} {versions[n]}':>18}" for n in names)
        + "".join(f"{f'durable/{n}':>20}" for n in names if n != "durable"),
    ]
    ours = results.get("durable")
    for label, figure, fmt, higher in ROWS:
        row = f"{label.replace('long', f'{long:,}'):<22}"
        row += "".join(f"{fmt.format(figure(results[n])):>18}" for n in names)
        if ours is not None:
            for n in names:
                if n != "durable":
                    a, b = figure(ours), figure(results[n])
                    gain = a / b if higher else b / a  # > 1: durable is better
                    row += f"{f'{gain:.1f}x':>20}"
        lines.append(row)
    lines.append("(ratios: how many times better durable is; above 1, durable is ahead)")
    targets: dict[str, bool] = {}
    dbos = results.get("dbos")
    if ours is not None:
        growth = ours["sequential"]["growth"]
        targets["growth_at_most_11"] = growth <= TARGET_GROWTH
        lines.append(
            f"target growth t({long:,})/t({SHORT:,}) scaled to 10x steps <= {TARGET_GROWTH:g}:"
            f" {'MET' if growth <= TARGET_GROWTH else 'NOT MET'} ({growth:.1f})"
        )
    if ours is not None and dbos is not None:
        speedup = ours["chain"]["steps_per_s"] / dbos["chain"]["steps_per_s"]
        targets["throughput_20x_dbos"] = speedup >= TARGET_THROUGHPUT_VS_DBOS
        targets["p50_below_dbos"] = ours["chain"]["step_p50_ms"] < dbos["chain"]["step_p50_ms"]
        light = ours["chain_few"]["step_p50_ms"], dbos["chain_few"]["step_p50_ms"]
        targets["p50_below_dbos_light_load"] = light[0] < light[1]
        lines.append(
            f"target chain steps/s >= {TARGET_THROUGHPUT_VS_DBOS:g}x DBOS: "
            f"{'MET' if targets['throughput_20x_dbos'] else 'NOT MET'} ({speedup:.1f}x)"
        )
        lines.append(
            "target p50 step interval below DBOS's: "
            f"{'MET' if targets['p50_below_dbos'] else 'NOT MET'}"
            f" ({ours['chain']['step_p50_ms']:.1f} ms vs {dbos['chain']['step_p50_ms']:.1f} ms;"
            f" with {FEW} workflows:"
            f" {'MET' if targets['p50_below_dbos_light_load'] else 'NOT MET'},"
            f" {light[0]:.1f} ms vs {light[1]:.1f} ms)"
        )
    print("\n".join(lines))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "versions": versions,
                "quick": args.quick,
                "chain_instances": instances,
                "by_system": results,
                "targets": targets,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
