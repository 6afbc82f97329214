"""OpenTelemetry: one orchestration run, its children and its activity attempts (retries
included) are one trace, on every store, and a replay after a worker restart adds no span
for the steps already taken."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import durable
from durable import task, tracing
from durable.core.events import ExecutionStarted

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()  # (not the global one: other tests record no trace at all)
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests")
ATTEMPTS: dict[str, int] = {}


def fetch(ctx: task.ActivityContext, what: str) -> str:
    with TRACER.start_as_current_span("inside fetch"):  # nests under the activity's span
        return f"got {what}"


def flaky(ctx: task.ActivityContext, key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise ConnectionError("the first call fails")
    return "ok"


def sub(ctx: task.OrchestrationContext, what: str) -> Any:
    got = yield ctx.call_activity(fetch, input=what)
    return got


def agent(ctx: task.OrchestrationContext, key: str) -> Any:
    a = yield ctx.call_activity(fetch, input="notes")
    b = yield ctx.call_sub_orchestrator(sub, input="sources")
    retry = task.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=10), max_number_of_attempts=3
    )
    c = yield ctx.call_activity(flaky, input=key, retry_policy=retry)
    ctx.set_custom_status("waiting")
    go = yield ctx.wait_for_external_event("go")
    return [a, b, c, go]


@pytest.fixture(autouse=True)
def _record(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """durable's spans go to this test's provider, as they would to a global one."""
    monkeypatch.setattr(tracing, "_TRACER", PROVIDER.get_tracer("durable"))
    EXPORTER.clear()
    ATTEMPTS.clear()
    yield
    EXPORTER.clear()


def worker(store: durable.Store) -> durable.Worker:
    return durable.Worker(
        store, orchestrators=[agent, sub], activities=[fetch, flaky], poll_interval=0.05
    )


async def wait_for_status(client: durable.Client, iid: str, text: str) -> None:
    for _ in range(400):
        state = await client.get_orchestration_state(iid)
        if state is not None and state.serialized_custom_status == f'"{text}"':
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{iid} never said {text!r}")


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_one_run_is_one_trace_across_children_retries_and_a_restart(
    store: durable.Store,
) -> None:
    client = durable.Client(store)
    async with worker(store):  # (started outside the request: it follows the work's trace)
        with TRACER.start_as_current_span("request") as request:
            iid = await client.schedule_new_orchestration(agent, input="k")
        await wait_for_status(client, iid, "waiting")
    # A new worker: it replays the history, and only the event's decision is new.
    async with worker(store):
        await client.raise_orchestration_event(iid, "go", data=True)
        state = await client.wait_for_orchestration_completion(iid, timeout=20)
    assert state.get_output() == ["got notes", "got sources", "ok", True]

    spans = list(EXPORTER.get_finished_spans())
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}
    by_id = {s.context.span_id: s for s in spans}

    [schedule] = named(spans, "schedule agent")
    assert schedule.kind is SpanKind.PRODUCER
    assert schedule.parent is not None
    assert schedule.parent.span_id == request.get_span_context().span_id

    decisions = named(spans, "orchestration agent")
    assert len(decisions) >= 4  # start, each result, the event
    assert {d.parent.span_id for d in decisions if d.parent} == {schedule.context.span_id}
    assert all(d.attributes and d.attributes["durable.instance_id"] == iid for d in decisions)

    # each activity ran once per attempt: the restart's replay ran nothing again
    fetches = named(spans, "activity fetch")
    assert len(fetches) == 2
    attempts = sorted(named(spans, "activity flaky"), key=lambda s: s.start_time or 0)
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert [a.attributes["durable.attempt"] for a in attempts if a.attributes] == [1, 2]
    assert attempts[0].events[0].name == "exception"
    assert all(a.kind is SpanKind.CONSUMER for a in [*fetches, *attempts])

    # the child's decisions hang under the parent's decision that started it, and the
    # activities under the decisions that scheduled them
    child_decisions = named(spans, "orchestration sub")
    assert child_decisions
    for d in child_decisions:
        assert d.parent is not None
        assert (
            by_id[d.parent.span_id].name == "schedule agent"
            or by_id[d.parent.span_id].name == "orchestration agent"
        )
    assert {by_id[d.parent.span_id].name for d in child_decisions if d.parent} == {
        "orchestration agent"
    }
    for span in [*fetches, *attempts]:
        assert span.parent is not None
        assert by_id[span.parent.span_id].name in ("orchestration agent", "orchestration sub")
    inner = named(spans, "inside fetch")
    assert {by_id[s.parent.span_id].name for s in inner if s.parent} == {"activity fetch"}


async def test_without_a_span_around_it_a_run_still_is_one_trace(store: durable.Store) -> None:
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(sub, input="x")
        await client.wait_for_orchestration_completion(iid, timeout=20)
    spans = list(EXPORTER.get_finished_spans())
    [schedule] = named(spans, "schedule sub")
    assert schedule.parent is None  # the root
    assert {s.context.trace_id for s in spans} == {schedule.context.trace_id}
    assert len(named(spans, "activity fetch")) == 1


async def test_with_no_tracer_provider_nothing_is_recorded_in_history(
    store: durable.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "_TRACER", None)  # (no global provider in the tests)
    client = durable.Client(store)
    async with worker(store):
        iid = await client.schedule_new_orchestration(sub, input="x")
        await client.wait_for_orchestration_completion(iid, timeout=20)
    history = await client.get_orchestration_history(iid)
    assert [e.trace for e in history if isinstance(e, ExecutionStarted)] == [None]
    # only the activity's own span, made by the test's tracer: none of durable's
    assert [s.name for s in EXPORTER.get_finished_spans()] == ["inside fetch"]
