"""One system's run of the 10-step chain, in a process of its own: prints one JSON line.

`python benchmarks/_peer_chain.py SYSTEM INSTANCES STEPS DIR`, SYSTEM one of `durable`,
`dbos`, `langgraph`. Each system runs INSTANCES workflows of STEPS sequential steps at once
on a SQLite file in DIR, each step adding one to a number, and records when each step ended:

- durable: `SqliteStore` (synchronous=FULL, the default) and one `Worker` with its
  defaults; each step is an activity, the workflow an orchestration;
- DBOS: `@DBOS.step()` functions called from a `@DBOS.workflow()`, the workflows started
  with `DBOS.start_workflow` (its thread pool), system database on SQLite;
- LangGraph: a graph of STEPS nodes in a line, compiled with `AsyncSqliteSaver`, the
  runs gathered with `ainvoke` (one thread id each).

Figures: steps/s from the first start to the last result, and the step interval (from
one step's end to the next one's end in the same workflow: what a step costs the
workflow, its wait for the engine included), p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import durable
from durable import task

ENDS: dict[tuple[Any, int], float] = {}


def figures(ids: list[Any], steps: int, wall: float) -> dict[str, float]:
    intervals = [ENDS[i, k + 1] - ENDS[i, k] for i in ids for k in range(steps - 1)]
    cuts = statistics.quantiles(intervals, n=100)
    return {
        "instances": len(ids),
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": len(ids) * steps / wall,
        "step_p50_ms": cuts[49] * 1000,
        "step_p99_ms": cuts[98] * 1000,
    }


def run_durable(instances: int, steps: int, folder: Path) -> dict[str, float]:
    async def step(ctx: task.ActivityContext, x: int) -> int:
        ENDS[ctx.orchestration_id, x] = time.perf_counter()
        return x + 1

    def chain(ctx: task.OrchestrationContext, n: int) -> Any:
        x = 0
        for _ in range(n):
            x = yield ctx.call_activity(step, input=x)
        return x

    async def main() -> dict[str, float]:
        async with (
            durable.SqliteStore(folder / "durable.db") as store,
            durable.Worker(store, orchestrators=[chain], activities=[step]),
        ):
            client = durable.Client(store)
            began = time.perf_counter()
            ids = await asyncio.gather(
                *(client.schedule_new_orchestration(chain, input=steps) for _ in range(instances))
            )
            for iid in ids:
                state = await client.wait_for_orchestration_completion(iid, timeout=600)
                assert state is not None and state.get_output() == steps, state
            return figures(ids, steps, time.perf_counter() - began)

    return asyncio.run(main())


def run_dbos(instances: int, steps: int, folder: Path) -> dict[str, float]:
    from dbos import DBOS, DBOSConfig  # noqa: PLC0415 - a peer: optional, imported where run

    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{folder / 'dbos.sqlite'}",
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def step(wid: int, x: int) -> int:
        return x + 1

    @DBOS.workflow()
    def chain(wid: int, n: int) -> int:
        x = 0
        for k in range(n):
            x = step(wid, x)
            ENDS[wid, k] = time.perf_counter()
        return x

    DBOS.launch()
    try:
        began = time.perf_counter()
        handles = [DBOS.start_workflow(chain, i, steps) for i in range(instances)]
        assert [h.get_result() for h in handles] == [steps] * instances
        return figures(list(range(instances)), steps, time.perf_counter() - began)
    finally:
        DBOS.destroy()


def run_langgraph(instances: int, steps: int, folder: Path) -> dict[str, float]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: PLC0415 - a peer
    from langgraph.graph import END, START, StateGraph  # noqa: PLC0415

    class State(TypedDict):
        wid: int
        x: int

    def node(k: int) -> Callable[[State], dict[str, int]]:
        def add_one(state: State) -> dict[str, int]:
            ENDS[state["wid"], k] = time.perf_counter()
            return {"x": state["x"] + 1}

        return add_one

    graph = StateGraph(State)
    for k in range(steps):
        graph.add_node(f"n{k}", node(k))  # type: ignore[call-overload]
    graph.add_edge(START, "n0")
    for k in range(steps - 1):
        graph.add_edge(f"n{k}", f"n{k + 1}")
    graph.add_edge(f"n{steps - 1}", END)

    async def main() -> dict[str, float]:
        async with AsyncSqliteSaver.from_conn_string(str(folder / "langgraph.sqlite")) as saver:
            app = graph.compile(checkpointer=saver)
            began = time.perf_counter()
            results = await asyncio.gather(
                *(
                    app.ainvoke({"wid": i, "x": 0}, {"configurable": {"thread_id": str(i)}})
                    for i in range(instances)
                )
            )
            assert all(r["x"] == steps for r in results)
            return figures(list(range(instances)), steps, time.perf_counter() - began)

    return asyncio.run(main())


SYSTEMS = {"durable": run_durable, "dbos": run_dbos, "langgraph": run_langgraph}


def main() -> None:
    system, instances, steps, folder = sys.argv[1:5]
    result = SYSTEMS[system](int(instances), int(steps), Path(folder))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
