"""The pure core imports no I/O, concurrency or database modules."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from durable import task
from durable.core import logger

CORE_MODULES = [
    "durable.core",
    "durable.core.commands",
    "durable.core.context",
    "durable.core.decision",
    "durable.core.engine",
    "durable.core.entity",
    "durable.core.errors",
    "durable.core.events",
    "durable.core.functions",
    "durable.core.history",
    "durable.core.payload",
    "durable.core.state",
    "durable.core.tasks",
    "durable.core.waiting",
]
# `logging` loads `threading`; the replay-safe logger lives apart and loads on first use.
LOADS_LOGGING = {"durable.core.logger"}
FORBIDDEN = ["asyncio", "socket", "threading", "sqlite3", "aiosqlite", "subprocess"]
ROOT = Path(__file__).resolve().parents[2]


# `durable/__init__.py` loads the whole runtime (worker, stores); the core must not need it,
# so the package is stood in for by an empty one and only the core's own imports count.
CHECK = """
import importlib, json, sys, types
package = types.ModuleType("durable")
package.__path__ = [{package_dir!r}]
sys.modules["durable"] = package
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps([m for m in {forbidden!r} if m in sys.modules]))
"""


def imported_after(modules: list[str]) -> list[str]:
    code = CHECK.format(package_dir=str(ROOT / "durable"), modules=modules, forbidden=FORBIDDEN)
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def test_the_core_imports_nothing_impure():
    assert imported_after(CORE_MODULES) == []


def test_the_replay_safe_logger_is_exported_by_the_task_module():
    assert task.ReplaySafeLogger is logger.ReplaySafeLogger
    assert issubclass(task.ReplaySafeLogger, logging.LoggerAdapter)


def test_the_check_itself_sees_forbidden_imports():
    assert imported_after(["durable.core.engine", "sqlite3"]) == ["sqlite3"]


def test_every_core_module_is_checked():
    on_disk = {
        "durable.core" + ("" if p.stem == "__init__" else f".{p.stem}")
        for p in (ROOT / "durable" / "core").glob("*.py")
    }
    assert on_disk == set(CORE_MODULES) | LOADS_LOGGING
