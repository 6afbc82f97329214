"""The agent-session example's worker SIGKILLed while a session answers a message: the
conversation stays whole and each message is answered once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from crash_helpers import WorkerProcess, wait_for_file

import durable
from durable.ai.testing import Call, ScriptedGemini
from durable.entities import EntityInstanceId

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

import agent_session as example  # noqa: E402


async def test_a_worker_killed_during_an_answer_leaves_each_message_answered_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sessions.db"
    victim: dict[str, int] = {}
    killed = threading.Event()

    def script(call: Call) -> Any:
        # The first model call for the second message kills the worker making it.
        if call.prompt == example.MESSAGES[1] and not killed.is_set():
            killed.set()
            os.kill(victim["pid"], signal.SIGKILL)
        return example.script(call)

    def start(name: str) -> WorkerProcess:
        ready = tmp_path / f"{name}.ready"
        args = ["--worker", db, "--base-url", server.url, "--ready", ready]
        proc = WorkerProcess(name, args, tmp_path, script=EXAMPLES / "agent_session.py")
        procs.append((proc, ready))
        return proc

    procs: list[tuple[WorkerProcess, Path]] = []
    with ScriptedGemini(script) as server:
        try:
            first = start("first")
            await wait_for_file(procs[0][1], first)
            victim["pid"] = first.pid
            async with durable.SqliteStore(db) as store:
                client = durable.Client(store, poll_interval=0.05)
                plan = {"session": "ada", "messages": example.MESSAGES}
                iid = await client.schedule_new_orchestration(example.conversation, input=plan)
                assert await first.wait(timeout=60) == -signal.SIGKILL, first.tail()
                second = start("second")
                state = await client.wait_for_orchestration_completion(iid, timeout=60)
                assert state is not None, second.tail()
                state.raise_if_failed()
                meta = await client.get_entity(EntityInstanceId("ChatSession", "ada"))
            assert await second.stop() == 0, second.tail()
        finally:
            for proc, _ in procs:
                proc.kill()
        calls = list(server.calls)

    assert killed.is_set()
    assert meta is not None
    turns = meta.get_state(list)
    assert [t["role"] for t in turns] == ["user", "model"] * 3
    assert [t["text"] for t in turns if t["role"] == "user"] == example.MESSAGES
    replies = state.get_output()
    assert [t["text"] for t in turns if t["role"] == "model"] == replies
    assert "1.08" in replies[1]
    # The first message was answered before the kill and not asked again; the second
    # was asked again from the conversation as it stood before it.
    asked = [c.prompt for c in calls if not c.function_responses]
    assert asked.count(example.MESSAGES[0]) == 1
    assert asked.count(example.MESSAGES[1]) == 2
    assert asked.count(example.MESSAGES[2]) == 1
