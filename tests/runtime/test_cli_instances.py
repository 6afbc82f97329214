"""`durable list|show|history|watch|raise-event|terminate|suspend|resume|restart|rewind|fork|
purge` against a real SQLite file (and one Postgres server), with a worker running."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pg_helpers import new_hub

import durable
from durable import task
from durable.cli import main
from durable.core.history import History
from durable.testing import Replayer

S = durable.OrchestrationStatus
FAIL = threading.Event()
FLAKY_CALLS: list[str] = []


def shout(ctx: task.ActivityContext, text: str) -> str:
    return text.upper()


def flaky(ctx: task.ActivityContext, text: str) -> str:
    FLAKY_CALLS.append(text)
    if FAIL.is_set():
        raise RuntimeError("quota exceeded")
    return text


def child(ctx: task.OrchestrationContext, text: str) -> Any:
    loud = yield ctx.call_activity(shout, input=text)
    return loud


def flow(ctx: task.OrchestrationContext, text: str) -> Any:
    a = yield ctx.call_activity(shout, input=text)
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=10))
    b = yield ctx.call_sub_orchestrator(child, input=a + "!", instance_id=f"{ctx.instance_id}-c")
    ok = yield ctx.wait_for_external_event("approve")
    ctx.set_custom_status({"approved": ok})
    return [a, b, ok]


def waiter(ctx: task.OrchestrationContext, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return value


def failing(ctx: task.OrchestrationContext, text: str) -> Any:
    value = yield ctx.call_activity(flaky, input=text)
    return value


def quick(ctx: task.OrchestrationContext, n: int) -> int:
    return n
    yield  # a generator


ORCHESTRATORS = [flow, child, waiter, failing, quick]
ACTIVITIES = [shout, flaky]


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    FAIL.clear()
    FLAKY_CALLS.clear()
    yield
    FAIL.clear()


class Env:
    """A worker (in a thread) and a client on one store; `cli(...)` runs the command."""

    def __init__(self, url: str, store: durable.Store, capsys: pytest.CaptureFixture[str]):
        self.url = url
        self.store = store
        self.capsys = capsys
        self.client = durable.SyncClient(store)

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([args[0], "--store", self.url, *args[1:]])
        out, err = self.capsys.readouterr()
        return code, out, err

    def start(self, fn: Callable[..., Any], value: Any = None, iid: str | None = None) -> str:
        return self.client.schedule_new_orchestration(fn, input=value, instance_id=iid)

    def wait(self, iid: str) -> durable.OrchestrationState:
        return self.client.wait_for_orchestration_completion(iid, timeout=20)

    def status(self, iid: str) -> S | None:
        state = self.client.get_orchestration_state(iid)
        return None if state is None else state.runtime_status

    def until(self, iid: str, status: S) -> None:
        deadline = time.monotonic() + 20
        while self.status(iid) is not status:
            assert time.monotonic() < deadline, f"{iid} never became {status}"
            time.sleep(0.02)


@pytest.fixture
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Env]:
    db = tmp_path / "cli.db"
    store = durable.SqliteStore(db)
    worker = durable.Worker(
        store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES, poll_interval=0.05
    )
    worker.start_in_thread()
    e = Env(f"sqlite:///{db}", store, capsys)
    try:
        yield e
    finally:
        worker.stop()
        e.client.close()


def test_list_show_and_history_of_a_finished_orchestration(env: Env, tmp_path: Path) -> None:
    iid = env.start(flow, "hi", "order-1")
    assert env.cli("raise-event", iid, "approve", "--data", "true")[:2] == (
        0,
        "sent 'approve' to order-1\n",
    )
    assert env.wait(iid).get_output() == ["HI", "HI!", True]

    code, out, _ = env.cli("list")
    assert code == 0
    rows = [line.split("  ") for line in out.splitlines()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("order-1", "flow", "COMPLETED"),
        ("order-1-c", "child", "COMPLETED"),
    ]

    code, out, _ = env.cli("show", iid)
    assert code == 0
    assert "status        COMPLETED" in out
    assert 'custom status {"approved":true}' in out
    assert 'output        ["HI","HI!",true]' in out
    assert "children      1\n  order-1-c  child  COMPLETED" in out
    code, out, _ = env.cli("show", iid, "--json")
    shown = json.loads(out)
    assert shown["output"] == ["HI", "HI!", True]
    assert shown["custom_status"] == {"approved": True}
    assert shown["children"] == [
        {"instance_id": "order-1-c", "name": "child", "status": "COMPLETED"}
    ]

    code, out, _ = env.cli("history", iid)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(env.client.get_orchestration_history(iid))
    texts = [line[31:] for line in lines]  # (mark, number, offset, category, text)
    categories = {line[21:29].strip() for line in lines}
    assert categories == {"run", "activity", "timer", "child", "event"}
    assert 'activity shout#0 scheduled with input "hi"' in texts
    assert "child child#2 started as 'order-1-c' with input \"HI!\"" in texts
    assert "event 'approve' received: true" in texts
    assert 'COMPLETED with output ["HI","HI!",true]' in texts
    assert not any(line.startswith("!") for line in lines)

    # --json is the exact history, which `durable replay` and Replayer take
    code, out, _ = env.cli("history", iid, "--json")
    assert History.from_json(out) == env.client.get_orchestration_history(iid)
    exported = tmp_path / "order-1.json"
    exported.write_text(out)
    replayer = Replayer()
    replayer.add_orchestrator(flow)
    assert replayer.replay(exported) is S.COMPLETED


def test_suspend_resume_raise_and_terminate(env: Env) -> None:
    iid = env.start(waiter, None, "hold-1")
    env.until(iid, S.RUNNING)
    assert env.cli("suspend", iid, "--reason", "lunch")[:2] == (0, "suspending hold-1\n")
    env.until(iid, S.SUSPENDED)
    code, _, err = env.cli("suspend", iid)
    assert code == 1
    assert err == "durable suspend: 'hold-1' is SUSPENDED: nothing to suspend\n"

    code, _, err = env.cli("raise-event", iid, "go", "--data", "{")
    assert code == 2
    assert "--data is not JSON" in err
    assert env.cli("raise-event", iid, "go", "--data", '{"n": 1}')[0] == 0
    time.sleep(0.2)
    assert env.status(iid) is S.SUSPENDED  # kept, not acted on
    assert env.cli("resume", iid)[0] == 0
    assert env.wait(iid).get_output() == {"n": 1}  # the bad --data sent nothing
    code, _, err = env.cli("resume", iid)
    assert (code, err) == (1, "durable resume: 'hold-1' is COMPLETED, not SUSPENDED\n")
    code, _, err = env.cli("raise-event", iid, "go")
    assert (code, err) == (1, "durable raise-event: 'hold-1' is COMPLETED: it takes no events\n")

    other = env.start(waiter, None, "hold-2")
    env.until(other, S.RUNNING)
    assert env.cli("terminate", other, "--output", '"enough"')[0] == 0
    state = env.wait(other)
    assert (state.runtime_status, state.get_output()) == (S.TERMINATED, "enough")
    assert env.cli("terminate", other)[0] == 1
    history = env.cli("history", other)[1]
    assert 'terminated with output "enough"' in history
    assert "suspended: lunch" in env.cli("history", iid)[1]


def test_rewind_fork_and_restart(env: Env) -> None:
    FAIL.set()
    iid = env.start(failing, "job", "job-1")
    assert env.wait(iid).runtime_status is S.FAILED
    code, out, _ = env.cli("show", iid)
    assert code == 0
    failure = next(line for line in out.splitlines() if line.startswith("failure"))
    assert "quota exceeded" in failure
    code, out, _ = env.cli("history", iid)
    assert [line for line in out.splitlines() if line.startswith("!")]  # failures marked
    assert env.cli("restart", "nobody")[:3] == (
        1,
        "",
        "durable restart: no orchestration has id 'nobody'\n",
    )

    FAIL.clear()
    assert env.cli("rewind", iid, "--reason", "quota raised")[0] == 0
    assert env.wait(iid).get_output() == "job"
    assert FLAKY_CALLS == ["job", "job"]
    assert env.cli("rewind", iid)[0] == 1  # only failed ones

    code, out, _ = env.cli("fork", iid, "--at", "1", "--new-id", "job-1b")
    assert (code, out) == (0, "job-1b\n")
    assert env.wait("job-1b").get_output() == "job"
    code, _, err = env.cli("fork", iid, "--at", "999")
    assert code == 2
    assert "fork" in err

    assert env.cli("restart", iid)[:2] == (0, "restarted job-1\n")
    env.until(iid, S.COMPLETED)
    assert FLAKY_CALLS == ["job", "job", "job", "job"]


def test_list_pages_filters_and_purge(env: Env) -> None:
    for i in range(5):
        env.start(quick, i, f"q-{i}")
    for i in range(5):
        env.wait(f"q-{i}")
    code, out, err = env.cli("list", "--limit", "2", "--json")
    assert [json.loads(line)["instance_id"] for line in out.splitlines()] == ["q-0", "q-1"]
    token = err.split("--page-token ")[1].rstrip(")\n")
    code, out, err = env.cli("list", "--limit", "2", "--page-token", token)
    assert [line.split()[0] for line in out.splitlines()] == ["q-2", "q-3"]
    assert env.cli("list", "--name", "quick", "--status", "completed")[1].count("\n") == 5
    assert env.cli("list", "--since", "1h")[1].count("\n") == 5
    assert env.cli("list", "--since", "2099-01-01")[1] == ""
    assert env.cli("list", "--status", "RUNNING")[1] == ""
    with pytest.raises(SystemExit) as bad:
        env.cli("list", "--since", "yesterday")
    assert bad.value.code == 2

    code, _, err = env.cli("purge", "q-0")  # no terminal to confirm on
    assert code == 2
    assert "add --yes" in err
    assert env.status("q-0") is S.COMPLETED
    assert env.cli("purge", "q-0", "--yes")[:2] == (0, "purged 1 instance(s)\n")
    assert env.status("q-0") is None
    assert env.cli("purge", "--status", "RUNNING", "--yes")[0] == 2
    assert env.cli("purge", "--yes")[0] == 2  # neither ids nor filters
    running = env.start(waiter, None, "w-1")
    env.until(running, S.RUNNING)
    code, _, err = env.cli("purge", running, "--yes")
    assert (code, err) == (1, "durable purge: 'w-1' is RUNNING: only finished ones\n")
    assert env.cli("purge", "--name", "quick", "--yes")[:2] == (0, "purged 4 instance(s)\n")
    assert [s.instance_id for s in env.client.list_orchestrations()] == ["w-1"]
    assert env.cli("purge", "--name", "quick", "--yes")[1] == "nothing to purge\n"


def test_watch_shows_progress_until_done(env: Env) -> None:
    iid = env.start(flow, "go", "watched")
    env.until(iid, S.RUNNING)
    deadline = time.monotonic() + 20
    while "child #2 returned" not in env.cli("history", iid)[1]:  # it waits for approval
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, out, _ = env.cli("watch", "--once")
    assert code == 0
    head, *rows = out.splitlines()
    assert head.startswith("durable watch ")
    assert "running" in head
    watched = next(r for r in rows if r.split()[0] == "watched")
    assert "[" in watched and "steps" in watched
    env.client.raise_orchestration_event(iid, "approve", data=False)
    code, out, _ = env.cli("watch", "--until-done", "--interval", "0.05", "--name", "flow")
    assert code == 0
    assert out.rstrip().splitlines()[-1].startswith("durable watch ")
    assert "completed 1" in out.rstrip().splitlines()[-1]


def test_bad_input_gets_clear_errors_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.db"
    assert main(["list", "--store", f"sqlite:///{missing}"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists()  # reading makes no empty database
    assert main(["show", "x", "--store", "mysql://somewhere"]) == 2
    assert "unsupported store URL" in capsys.readouterr().err
    db = tmp_path / "empty.db"
    with durable.SyncClient(durable.SqliteStore(db)) as client:
        assert client.get_orchestration_state("nobody") is None  # (makes the file)
    assert main(["show", "nobody", "--store", f"sqlite:///{db}"]) == 1
    assert capsys.readouterr().err == "durable show: no orchestration has id 'nobody'\n"
    assert main(["history", "nobody", "--store", f"sqlite:///{db}"]) == 1


def test_the_commands_work_on_postgres(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}durable_hub={new_hub()}"
    store = durable.open_store(url)
    worker = durable.Worker(store, orchestrators=ORCHESTRATORS, activities=ACTIVITIES)
    worker.start_in_thread()
    e = Env(url, store, capsys)
    try:
        iid = e.start(flow, "pg", "pg-1")
        assert e.cli("raise-event", iid, "approve", "--data", "false")[0] == 0
        assert e.wait(iid).get_output() == ["PG", "PG!", False]
        assert e.cli("list", "--status", "COMPLETED")[1].splitlines()[0].startswith("pg-1  flow")
        assert "children      1" in e.cli("show", iid)[1]
        out = e.cli("history", iid, "--json")[1]
        assert History.from_json(out) == e.client.get_orchestration_history(iid)
    finally:
        worker.stop()
        e.client.close()
