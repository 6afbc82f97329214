"""Replayer and `durable replay`: recorded histories against changed code, before a deploy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import task
from durable.core.events import TaskCompleted
from durable.testing import Replayer, TestEnvironment

S = durable.OrchestrationStatus


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def shout(ctx: task.ActivityContext, text: str) -> str:
    return text.upper()


def agent(ctx: task.OrchestrationContext, name: str) -> Any:
    text = yield ctx.call_activity(greet, input=name)
    approved = yield ctx.wait_for_external_event("approve")
    return (yield ctx.call_activity(shout, input=text)) if approved else text


def agent_reordered(ctx: task.OrchestrationContext, name: str) -> Any:
    text = yield ctx.call_activity(shout, input=name)  # a different first call
    return text


def agent_patched(ctx: task.OrchestrationContext, name: str) -> Any:
    text = yield ctx.call_activity(greet, input=name)
    if ctx.is_patched("ask-twice"):
        yield ctx.wait_for_external_event("approve")
    approved = yield ctx.wait_for_external_event("approve")
    return (yield ctx.call_activity(shout, input=text)) if approved else text


def agent_extra_step(ctx: task.OrchestrationContext, name: str) -> Any:
    text = yield ctx.call_activity(greet, input=name)
    text = yield ctx.call_activity(shout, input=text)  # a new step before the wait
    approved = yield ctx.wait_for_external_event("approve")
    return text if approved else ""


async def record(*, approve: bool) -> durable.History:
    """A real history: finished (approve) or waiting for the event (not)."""
    async with TestEnvironment(orchestrators=[agent], activities=[greet, shout]) as env:
        iid = await env.client.schedule_new_orchestration(agent, input="ada")
        if approve:
            await env.client.raise_orchestration_event(iid, "approve", data=True)
            st = await env.client.wait_for_orchestration_completion(iid, timeout=5)
            assert st is not None and st.runtime_status is S.COMPLETED
        else:  # recorded while it waits for the event, after its first step
            for _ in range(500):
                history = await env.client.get_orchestration_history(iid)
                if any(isinstance(e, TaskCompleted) for e in history):
                    break
                await asyncio.sleep(0.01)
        return await env.client.get_orchestration_history(iid)


async def test_the_same_code_replays_its_histories() -> None:
    done = await record(approve=True)
    assert Replayer([agent]).replay(done) is S.COMPLETED
    assert Replayer([agent]).replay(done.to_json()) is S.COMPLETED


async def test_a_changed_call_is_caught_with_the_sequence_number() -> None:
    done = await record(approve=True)
    replayer = Replayer()
    replayer.add_orchestrator(agent_reordered, name="agent")
    with pytest.raises(durable.NonDeterminismError, match="sequence number 0"):
        replayer.replay(done)


async def test_a_new_step_at_the_end_of_a_running_history_is_caught() -> None:
    waiting = await record(approve=False)
    replayer = Replayer()
    replayer.add_orchestrator(agent_extra_step, name="agent")
    with pytest.raises(durable.NonDeterminismError, match=r"call_activity\('shout'\)"):
        replayer.replay(waiting)


async def test_a_change_guarded_by_is_patched_replays_old_histories() -> None:
    done = await record(approve=True)
    waiting = await record(approve=False)
    replayer = Replayer()
    replayer.add_orchestrator(agent_patched, name="agent")
    assert replayer.replay(done) is S.COMPLETED
    assert replayer.replay(waiting) is S.RUNNING


def test_what_is_not_a_history_is_a_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a history"}')
    with pytest.raises(ValueError, match="not a history"):
        Replayer([agent]).replay(bad)


async def test_the_cli_replays_a_folder_and_fails_on_a_broken_history(tmp_path: Path) -> None:
    done = await record(approve=True)
    folder = tmp_path / "histories"
    folder.mkdir()
    (folder / "done.json").write_text(done.to_json())
    (tmp_path / "app_v2.py").write_text(
        textwrap.dedent(
            """
            def agent(ctx, name):
                text = yield ctx.call_activity("shout", input=name)
                return text
            """
        )
    )
    (tmp_path / "app_v1.py").write_text(_v1_source())

    def run(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "durable", "replay", "--history", str(folder), target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    good = run("app_v1:agent")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok" in good.stdout and "1 of 1 histories replay" in good.stdout
    broken = run("app_v2:agent")
    assert broken.returncode == 1
    assert "FAIL" in broken.stdout and "NonDeterminismError" in broken.stdout
    missing = run("app_v3:agent")
    assert missing.returncode == 2 and "app_v3" in missing.stderr


def _v1_source() -> str:
    return textwrap.dedent(
        """
        def agent(ctx, name):
            text = yield ctx.call_activity("greet", input=name)
            approved = yield ctx.wait_for_external_event("approve")
            return (yield ctx.call_activity("shout", input=text)) if approved else text
        """
    )


def agent_other_input(ctx: task.OrchestrationContext, name: str) -> Any:
    text = yield ctx.call_activity(greet, input=name.upper())  # same call, other input
    approved = yield ctx.wait_for_external_event("approve")
    return (yield ctx.call_activity(shout, input=text)) if approved else text


async def test_strict_replay_also_compares_the_arguments() -> None:
    done = await record(approve=True)
    lenient, strict = Replayer(), Replayer(strict=True)
    lenient.add_orchestrator(agent_other_input, name="agent")
    strict.add_orchestrator(agent_other_input, name="agent")
    assert lenient.replay(done) is S.COMPLETED
    with pytest.raises(durable.NonDeterminismError, match='input="ada"'):
        strict.replay(done)
