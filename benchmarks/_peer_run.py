"""One system's run of one workload, in a process of its own: prints one JSON line.

`python benchmarks/_peer_run.py SYSTEM WORKLOAD DIR N [STEPS]`, SYSTEM one of `durable`,
`dbos`, `langgraph`; each system keeps its state in a SQLite file in DIR, with its defaults:

- durable: `SqliteStore` (synchronous=FULL, the default) and one `Worker` with its
  defaults; each step is an activity, the workflow an orchestration;
- DBOS: `@DBOS.step()` functions called from a `@DBOS.workflow()`, started with
  `DBOS.start_workflow` (its thread pool), system database on SQLite;
- LangGraph: a `StateGraph` compiled with `AsyncSqliteSaver`, one thread id per run.

Workloads (each step adds one to a number):

- `chain N STEPS`: N workflows of STEPS sequential steps, all started at once. Figures:
  steps/s from the first start to the last result, and the step interval (from one step's
  end to the next one's end in the same workflow: what a step costs the workflow, its wait
  for the engine included), p50 and p99. LangGraph: a graph of STEPS nodes in a line.
- `sequential N`: one workflow of N sequential steps; its time. LangGraph: one node that
  loops back to itself N times.
- `fanout N`: one workflow that runs N steps at once and sums them; its time. durable:
  `when_all`; DBOS: an async workflow gathering async steps; LangGraph: `Send` to one node
  N times.
- `recovery-start N STEPS`: N workflows of STEPS steps of 20 ms each; once a third of all
  steps are done, the process SIGKILLs itself.
- `recovery-finish N STEPS`: the same system restarted on the same directory; the time
  from the restart (the parent's launch of this process, in $PEER_LAUNCHED) until all N
  workflows have their results. durable and DBOS recover by themselves; LangGraph is
  asked to resume each thread (`ainvoke(None, ...)`), as its docs say.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import durable
from durable import task

ENDS: dict[tuple[Any, int], float] = {}
# When the parent launched this process (its `time.time()`): recovery is timed from then.
LAUNCHED = float(os.environ.get("PEER_LAUNCHED", time.time()))
SLOW_S = 0.02  # a recovery step: long enough that workflows are in flight at the kill
_done_steps = 0
_kill_at: int | None = None  # recovery-start: SIGKILL self after this many steps,
_started = False  # and once every workflow was started


def all_started() -> None:
    global _started  # noqa: PLW0603
    _started = True


def step_done(key: tuple[Any, int]) -> None:
    global _done_steps  # noqa: PLW0603 - one counter per process
    ENDS[key] = time.perf_counter()
    _done_steps += 1
    if _kill_at is not None and _done_steps >= _kill_at and _started:
        os.kill(os.getpid(), signal.SIGKILL)  # no shutdown: what a crash leaves


def chain_figures(ids: list[Any], steps: int, wall: float) -> dict[str, float]:
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


# -- durable ------------------------------------------------------------------------------


async def d_step(ctx: task.ActivityContext, x: int) -> int:
    step_done((ctx.orchestration_id, x))
    return x + 1


async def d_slow_step(ctx: task.ActivityContext, x: int) -> int:
    await asyncio.sleep(SLOW_S)
    step_done((ctx.orchestration_id, x))
    return x + 1


def d_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(d_step, input=x)
    return x


def d_slow_chain(ctx: task.OrchestrationContext, n: int) -> Any:
    x = 0
    for _ in range(n):
        x = yield ctx.call_activity(d_slow_step, input=x)
    return x


def d_fanout(ctx: task.OrchestrationContext, n: int) -> Any:
    results = yield task.when_all([ctx.call_activity(d_step, input=i) for i in range(n)])
    return sum(results)


def run_durable(workload: str, folder: Path, n: int, steps: int) -> dict[str, float]:

    async def main() -> dict[str, float]:
        async with (
            durable.SqliteStore(folder / "durable.db") as store,
            durable.Worker(
                store,
                orchestrators=[d_chain, d_slow_chain, d_fanout],
                activities=[d_step, d_slow_step],
            ),
        ):
            client = durable.Client(store)
            if workload == "recovery-finish":
                ids = [f"w{i}" for i in range(n)]
                for iid in ids:
                    state = await client.wait_for_orchestration_completion(iid, timeout=600)
                    assert state is not None and state.get_output() == steps, state
                return {"recovery_s": time.time() - LAUNCHED}
            start = time.perf_counter()
            if workload == "fanout":
                iid = await client.schedule_new_orchestration(d_fanout, input=n)
                state = await client.wait_for_orchestration_completion(iid, timeout=600)
                assert state is not None and state.get_output() == n * (n + 1) // 2, state
                return {"wall_s": time.perf_counter() - start}
            fn = d_slow_chain if workload == "recovery-start" else d_chain
            ids = await asyncio.gather(
                *(
                    client.schedule_new_orchestration(fn, input=steps, instance_id=f"w{i}")
                    for i in range(n)
                )
            )
            all_started()
            for iid in ids:
                state = await client.wait_for_orchestration_completion(iid, timeout=600)
                assert state is not None and state.get_output() == steps, state
            return chain_figures(ids, steps, time.perf_counter() - start)

    return asyncio.run(main())


# -- DBOS ---------------------------------------------------------------------------------


def run_dbos(workload: str, folder: Path, n: int, steps: int) -> dict[str, float]:
    from dbos import DBOS, DBOSConfig, SetWorkflowID  # noqa: PLC0415 - a peer: optional

    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": f"sqlite:///{folder / 'dbos.sqlite'}",
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def step(wid: int, x: int) -> int:
        if workload.startswith("recovery"):
            time.sleep(SLOW_S)
        return x + 1

    @DBOS.workflow()
    def chain(wid: int, n: int) -> int:
        x = 0
        for k in range(n):
            x = step(wid, x)
            step_done((wid, k))
        return x

    @DBOS.step()
    async def fan_step(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    async def fanout(n: int) -> int:
        return sum(await asyncio.gather(*(fan_step(i) for i in range(n))))

    DBOS.launch()
    try:
        if workload == "recovery-finish":  # launch() resumed them
            for i in range(n):
                assert DBOS.retrieve_workflow(f"w{i}").get_result() == steps
            return {"recovery_s": time.time() - LAUNCHED}
        start = time.perf_counter()
        if workload == "fanout":

            async def fan() -> int:
                handle = await DBOS.start_workflow_async(fanout, n)
                return await handle.get_result()

            assert asyncio.run(fan()) == n * (n + 1) // 2
            return {"wall_s": time.perf_counter() - start}
        handles = []
        for i in range(n):
            with SetWorkflowID(f"w{i}"):
                handles.append(DBOS.start_workflow(chain, i, steps))
        all_started()
        assert [h.get_result() for h in handles] == [steps] * n
        return chain_figures(list(range(n)), steps, time.perf_counter() - start)
    finally:
        DBOS.destroy()


# -- LangGraph ----------------------------------------------------------------------------


class State(TypedDict):
    wid: int
    x: int


class Fan(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]


def run_langgraph(workload: str, folder: Path, n: int, steps: int) -> dict[str, float]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver  # noqa: PLC0415 - a peer
    from langgraph.graph import END, START, StateGraph  # noqa: PLC0415
    from langgraph.types import Send  # noqa: PLC0415

    def node(k: int) -> Callable[[State], Any]:
        async def add_one(state: State) -> dict[str, int]:
            if workload.startswith("recovery"):
                await asyncio.sleep(SLOW_S)
            step_done((state["wid"], k))
            return {"x": state["x"] + 1}

        return add_one

    if workload == "fanout":
        fan = StateGraph(Fan)

        def work(arg: dict[str, int]) -> dict[str, list[int]]:
            return {"results": [arg["i"] + 1]}

        fan.add_node("work", work)  # type: ignore[call-overload]
        fan.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in range(s["n"])])
        fan.add_edge("work", END)
        graph: Any = fan
    elif workload == "sequential":
        loop = StateGraph(State)
        loop.add_node("step", node(0))  # type: ignore[call-overload]
        loop.add_edge(START, "step")
        loop.add_conditional_edges("step", lambda s: "step" if s["x"] < steps else END)
        graph = loop
    else:
        line = StateGraph(State)
        for k in range(steps):
            line.add_node(f"n{k}", node(k))  # type: ignore[call-overload]
        line.add_edge(START, "n0")
        for k in range(steps - 1):
            line.add_edge(f"n{k}", f"n{k + 1}")
        line.add_edge(f"n{steps - 1}", END)
        graph = line

    async def main() -> dict[str, float]:
        async with AsyncSqliteSaver.from_conn_string(str(folder / "langgraph.sqlite")) as saver:
            app = graph.compile(checkpointer=saver)
            start = time.perf_counter()
            if workload == "fanout":
                out = await app.ainvoke(
                    {"n": n, "results": []}, {"configurable": {"thread_id": "f"}}
                )
                assert sum(out["results"]) == n * (n + 1) // 2
                return {"wall_s": time.perf_counter() - start}
            if workload == "sequential":
                config = {"configurable": {"thread_id": "s"}, "recursion_limit": steps + 10}
                out = await app.ainvoke({"wid": 0, "x": 0}, config)
                assert out["x"] == steps
                return {"wall_s": time.perf_counter() - start}
            resume = workload == "recovery-finish"

            async def run(i: int) -> Any:
                config = {"configurable": {"thread_id": str(i)}}
                # Resumed from its last checkpoint; one the crash came before starts anew.
                fresh = not resume or not (await app.aget_state(config)).values
                return await app.ainvoke({"wid": i, "x": 0} if fresh else None, config)

            all_started()
            results = await asyncio.gather(*(run(i) for i in range(n)))
            assert all(r["x"] == steps for r in results)
            if resume:
                return {"recovery_s": time.time() - LAUNCHED}
            return chain_figures(list(range(n)), steps, time.perf_counter() - start)

    return asyncio.run(main())


SYSTEMS = {"durable": run_durable, "dbos": run_dbos, "langgraph": run_langgraph}


def main() -> None:
    global _kill_at  # noqa: PLW0603
    system, workload, folder, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    steps = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    if workload == "sequential":
        n, steps = 1, n  # one workflow of N steps (the chain's code, for durable and DBOS)
        if system != "langgraph":
            workload = "chain"
    if workload == "recovery-start":
        _kill_at = n * steps // 3
    result = SYSTEMS[system](workload, folder, n, steps)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
