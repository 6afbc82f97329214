"""DBOS 3.x on the Postgres server of benchmarks/postgres.py: the same chain, N processes.

Each run gets a fresh database on the server. N worker processes
(`_dbos_pg_worker.py`) serve queue `bench`; this process enqueues INSTANCES workflows of
STEPS steps with `DBOSClient`, then reads DBOS's own `workflow_status` table until all have
succeeded. Steps/s: INSTANCES x STEPS over the time from the first enqueue to the last
workflow's completion (DBOS's `updated_at`).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_dbos_pg_worker.py"


def installed() -> bool:
    return importlib.util.find_spec("dbos") is not None


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def one_run(url: str, workers: int, instances: int, steps: int, bound_s: float) -> float:
    """Steps/s of one run with `workers` DBOS processes on a fresh database."""
    from dbos import DBOSClient  # noqa: PLC0415 - a peer: optional, imported where run

    name = f"dbos_w{workers}_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")  # a name made here, never from input
    db = database_url(url, name)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), db, f"bench-{k}", str(bound_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for k in range(workers)
    ]
    client = None
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("benchmarks/postgres.py: a DBOS worker did not start")
        client = DBOSClient(system_database_url=db)
        began = time.time()
        options = {"queue_name": "bench", "workflow_name": "chain", "app_version": "bench-1"}
        for i in range(instances):
            client.enqueue(options, i, steps)  # type: ignore[arg-type]
        deadline = time.monotonic() + bound_s
        with psycopg.connect(db, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*), max(updated_at) FROM dbos.workflow_status"
                    " WHERE status = 'SUCCESS'"
                ).fetchone()
                assert row is not None
                if row[0] >= instances:
                    return instances * steps / (row[1] / 1000 - began)
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"benchmarks/postgres.py: ABORTED: DBOS with {workers} process(es)"
                        f" finished {row[0]} of {instances} workflows in {bound_s:g} s"
                    )
                time.sleep(0.05)
    finally:
        if client is not None:
            client.destroy()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
