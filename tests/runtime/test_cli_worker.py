"""`durable worker module[:attr]`: a worker process for a registry in user code, stopped by
SIGTERM; and the timeline's description of every history event kind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import durable
from durable import _timeline
from durable.core.history import History

TASKS = textwrap.dedent(
    """
    import durable

    def double(ctx, n):
        return n * 2

    def chain(ctx, n):
        a = yield ctx.call_activity(double, input=n)
        b = yield ctx.call_activity("double", input=a)
        return b

    orchestrators = [chain]
    activities = [double]
    registry = {"orchestrators": [chain], "activities": [double]}

    def make(store):
        return durable.Worker(store, orchestrators=[chain], activities=[double])
    """
)


def worker(tmp_path: Path, target: str, db: Path) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "DURABLE_STORE": f"sqlite:///{db}"}
    return subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", target],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("target", ["tasks:registry", "tasks", "tasks:make"])
def test_a_worker_process_runs_the_registry_and_stops_on_sigterm(
    tmp_path: Path, target: str
) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    db = tmp_path / "app.db"
    proc = worker(tmp_path, target, db)
    try:
        assert proc.stderr is not None
        assert "running on" in proc.stderr.readline()
        with durable.SyncClient(durable.SqliteStore(db)) as client:
            iid = client.schedule_new_orchestration("chain", input=5)
            assert client.wait_for_orchestration_completion(iid, timeout=30).get_output() == 20
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tasks:chain", "is not a registry"),
        ("tasks:double", "is not a registry"),
        ("tasks:orchestrators", "is not a registry"),
        ("no_such_module:x", "No module named 'no_such_module'"),
        ("tasks:missing", "has no attribute 'missing'"),
    ],
)
def test_a_bad_target_is_a_usage_error(tmp_path: Path, target: str, message: str) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    proc = worker(tmp_path, target, tmp_path / "app.db")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert message in err


HISTORIES = Path(__file__).resolve().parents[1] / "core" / "histories"


def test_every_event_of_the_golden_histories_gets_a_line_and_spans_end_after_they_start() -> None:
    kinds: set[str] = set()
    for file in sorted(HISTORIES.glob("*.json")):
        history = History.from_json(json.dumps(json.loads(file.read_text())["history"]))
        lines = _timeline.lines(history)
        assert [line.number for line in lines] == list(range(len(history)))
        assert all(line.text and "\n" not in line.text for line in lines)
        kinds |= {line.kind for line in lines}
        for span in _timeline.spans(history):
            assert span.end is None or span.end >= span.start
        failed = [line for line in lines if line.failed]
        assert all(
            line.kind.endswith("Failed") or line.kind == "ExecutionCompleted" for line in failed
        )
    assert len(kinds) == 26  # every kind of HistoryEvent


def test_long_payloads_are_cut_to_one_line() -> None:
    assert _timeline.cut(None) == "-"
    assert _timeline.cut('{"a":\n 1}') == '{"a": 1}'
    long = json.dumps("x" * 500)
    assert len(_timeline.cut(long)) == _timeline.PAYLOAD_CHARS
    assert _timeline.cut(long).endswith("...")
