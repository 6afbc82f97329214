"""`durable demo`, the main job, run as a user runs it: a command in a fresh directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_survives_the_kill_of_its_worker_and_runs_no_completed_step_twice(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durable", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "killed worker" in out and "with SIGKILL" in out
    assert "result: published 4 sections on 'durable execution'" in out
    assert "no step completed before the kill ran again" in out
    assert (tmp_path / "durable-demo.db").exists()
    # Each step is listed with how often it ran; those done before the kill ran once.
    before = [line for line in out.splitlines() if "(completed before the kill)" in line]
    assert before and all("ran 1x" in line for line in before)


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "draft from outline of replay"
    assert (tmp_path / "app.db").exists()
