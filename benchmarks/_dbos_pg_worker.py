"""A DBOS 3.x worker process for the Postgres rows of benchmarks/postgres.py.

`python benchmarks/_dbos_pg_worker.py URL EXECUTOR_ID MAX_SECONDS`

It launches DBOS on the system database URL (Postgres) with executor id EXECUTOR_ID,
serving queue `bench`, whose workflow `chain(wid, n)` runs n sequential steps that each
add one. It prints `ready` once launched and exits when stdin closes or MAX_SECONDS pass
(it never outlives a benchmark that died). Workflows are enqueued by the benchmark with
`DBOSClient`; every process that serves the queue takes its share.

The queue is tuned in DBOS's favour. With its defaults (no concurrency limit, a poll every
second) one process ran this chain at about 200 steps/s and exhausted its 20-connection
pool, and two processes split the work 113:887. A limit of 16 workflows per process and a
poll every 0.1 s gave the most steps/s of the settings tried (about 270 with one process
and 440 with two, 2026-11-30).
"""

from __future__ import annotations

import sys
import threading

from dbos import DBOS, DBOSConfig

APP_VERSION = "bench-1"
WORKER_CONCURRENCY = 16  # below its connection pool (20), which it otherwise exhausts
POLLING_S = 0.1


@DBOS.step()
def step(wid: int, x: int) -> int:
    return x + 1


@DBOS.workflow()
def chain(wid: int, n: int) -> int:
    x = 0
    for _ in range(n):
        x = step(wid, x)
    return x


def main() -> None:
    url, executor_id, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "executor_id": executor_id,
        "application_version": APP_VERSION,
    }
    DBOS(config=config)

    DBOS.launch()
    DBOS.register_queue(
        "bench", worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=POLLING_S
    )
    print("ready", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(max_seconds)
    DBOS.destroy(workflow_completion_timeout_sec=0)


if __name__ == "__main__":
    main()
