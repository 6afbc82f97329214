"""durable beside DBOS and LangGraph on the same workloads, in one run: a table and JSON.

Each system runs each workload in a fresh process and a fresh temporary directory
(benchmarks/_peer_chain.py), one after the other, so that none shares a warm cache or a
core with another. Workloads:

  1. the 10-step chain: INSTANCES workflows (orchestrations, graphs) of 10 sequential
     steps, all started at once, on SQLite (each system's own SQLite store or
     checkpointer, with its defaults): steps/s, and the step interval p50/p99.

Targets (issue 7): durable's steps/s at least 20x DBOS's; its p50 step interval below
DBOS's. The peers come from the `bench` dependency group (`nox -s bench` installs it);
a peer that is not installed is reported as missing, not skipped silently.

Run: `nox -s bench` or `python benchmarks/peers.py [--quick] [--instances N]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SYSTEMS = ("durable", "dbos", "langgraph")
MODULES = {"durable": "durable", "dbos": "dbos", "langgraph": "langgraph.checkpoint.sqlite"}
DISTRIBUTIONS = {"durable": "durable-sdk", "dbos": "dbos", "langgraph": "langgraph"}
STEPS = 10
RUN_BOUND_S = 600
TARGET_THROUGHPUT_VS_DBOS = 20.0


def version(system: str) -> str | None:
    if importlib.util.find_spec(MODULES[system]) is None:
        return None
    try:
        return metadata.version(DISTRIBUTIONS[system])
    except metadata.PackageNotFoundError:
        return "unknown"


def run_chain(system: str, instances: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"durable-peers-{system}-") as tmp:
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "_peer_chain.py"),
                    system,
                    str(instances),
                    str(STEPS),
                    tmp,
                ],
                capture_output=True,
                text=True,
                timeout=RUN_BOUND_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"benchmarks/peers.py: ABORTED: {system}'s chain ran over {RUN_BOUND_S} s"
            ) from None
    if done.returncode != 0:
        raise SystemExit(f"benchmarks/peers.py: {system}'s chain failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 instances, not 1,000")
    parser.add_argument("--instances", type=int, default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "peers.json"))
    args = parser.parse_args()
    instances = args.instances or (200 if args.quick else 1000)

    versions = {s: version(s) for s in SYSTEMS}
    chain: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        if versions[system] is None:
            print(f"{system}: not installed (pip install --group bench, or nox -s bench)")
            continue
        chain[system] = run_chain(system, instances)
        r = chain[system]
        print(
            f"  {system:<10} {r['steps_per_s']:>9,.0f} steps/s   step p50"
            f" {r['step_p50_ms']:.1f} ms, p99 {r['step_p99_ms']:.1f} ms",
            flush=True,
        )

    lines = [
        "",
        f"10-step chain: {instances:,} workflows started at once, on SQLite, one process"
        f" ({platform.machine()}, {platform.python_version()})",
        f"{'system':<12}{'version':<10}{'steps/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'durable/peer':>14}",
    ]
    ours = chain.get("durable")
    for system, r in chain.items():
        ratio = "" if ours is None else f"{ours['steps_per_s'] / r['steps_per_s']:.1f}x"
        lines.append(
            f"{system:<12}{versions[system]:<10}{r['steps_per_s']:>10,.0f}"
            f"{r['step_p50_ms']:>9.1f}{r['step_p99_ms']:>9.1f}{ratio:>14}"
        )
    targets: dict[str, bool] = {}
    dbos = chain.get("dbos")
    if ours is not None and dbos is not None:
        speedup = ours["steps_per_s"] / dbos["steps_per_s"]
        targets["throughput_20x_dbos"] = speedup >= TARGET_THROUGHPUT_VS_DBOS
        targets["p50_below_dbos"] = ours["step_p50_ms"] < dbos["step_p50_ms"]
        lines.append(
            f"target steps/s >= {TARGET_THROUGHPUT_VS_DBOS:g}x DBOS: "
            f"{'MET' if targets['throughput_20x_dbos'] else 'NOT MET'} ({speedup:.1f}x)"
        )
        lines.append(
            "target p50 step interval below DBOS's: "
            f"{'MET' if targets['p50_below_dbos'] else 'NOT MET'}"
            f" ({ours['step_p50_ms']:.1f} ms vs {dbos['step_p50_ms']:.1f} ms)"
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
                "chain": {"instances": instances, "steps": STEPS, "by_system": chain},
                "targets": targets,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
