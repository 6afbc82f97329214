"""The golden-history corpus (histories/): recorded histories the current code must replay.

Every file is checked four ways: its JSON round-trips; a full replay with the orchestrators
of golden_orchestrators.py raises nothing and decides nothing new; replaying any prefix cut
at a batch boundary and stepping the rest batch by batch records exactly what the file
holds; and the script that wrote it writes the same bytes today. Together the files cover
every kind of history event.

A failure here after a change to `durable/` means instances already running would replay
differently: fix the change. After a deliberate change to golden_orchestrators.py or to
the scenarios, run `python tests/core/make_golden_histories.py` and review the diff.
"""

from __future__ import annotations

import functools
import itertools
import json
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import golden_orchestrators as golden
import make_golden_histories as maker
import msgspec
import pytest

from durable.core.decision import EngineOptions
from durable.core.engine import Execution, replay
from durable.core.errors import NonDeterminismError
from durable.core.events import (
    ContinuedAsNew,
    EventRaised,
    ExecutionCompleted,
    ExecutionRewound,
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
    InboundEvent,
    OrchestratorStarted,
    TaskScheduled,
)
from durable.core.functions import FunctionSpec, orchestrator_spec
from durable.core.history import History, cancelled_events
from durable.core.payload import PayloadCodec
from durable.testing.replayer import load_history

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
NAMES = [f.stem for f in FILES]
EVENT_KINDS = frozenset(typing.get_args(HistoryEvent))
INBOUND = (OrchestratorStarted, *typing.get_args(InboundEvent))


class GoldenFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The layout of one file (histories/README.md)."""

    orchestrator: str
    description: str
    status: str
    history: list[HistoryEvent]
    engine_options: dict[str, int] | None = None
    max_payload_bytes: int | None = None
    incremental_from_batch: int = 0

    @property
    def options(self) -> EngineOptions:
        return EngineOptions(**(self.engine_options or {}))

    @property
    def codec(self) -> PayloadCodec:
        return PayloadCodec(self.max_payload_bytes) if self.max_payload_bytes else PayloadCodec()


@functools.cache
def load(name: str) -> GoldenFile:
    return msgspec.json.decode((HISTORIES / f"{name}.json").read_bytes(), type=GoldenFile)


def batches_of(history: Sequence[HistoryEvent]) -> list[list[HistoryEvent]]:
    """The history split into decisions: each opens with an OrchestratorStarted."""
    batches: list[list[HistoryEvent]] = []
    for event in history:
        if isinstance(event, OrchestratorStarted) or not batches:
            batches.append([])
        batches[-1].append(event)
    return batches


def inbound(batch: Sequence[HistoryEvent], before: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """The events a worker fed to the decision that recorded `batch`.

    They lead the batch (the decision's own events follow), except events that came in
    the same batch after a continue-as-new with save_events: those are recorded only as
    carried events, at the end of the carried list (after those buffered earlier, which
    are recorded as raised).
    """
    events = list(itertools.takewhile(lambda e: isinstance(e, INBOUND), batch))
    end = batch[-1]
    if isinstance(end, ContinuedAsNew) and end.carried_events:
        raised = Counter(e for e in (*before, *events) if isinstance(e, EventRaised))
        late = sum((Counter(end.carried_events) - raised).values())
        events += end.carried_events[len(end.carried_events) - late :]
    return events


def scrubbed(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    return [maker.scrub(e) for e in events]


# -- every file ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_json_round_trips(name: str) -> None:
    text = (HISTORIES / f"{name}.json").read_text(encoding="utf-8")
    raw = json.loads(text)["history"]
    history = History.from_json(json.dumps(raw))
    assert list(history) == load(name).history
    assert json.loads(history.to_json()) == raw  # nothing dropped, nothing added
    assert load_history(HISTORIES / f"{name}.json") == history  # as the Replayer reads it
    first = history[:2]
    assert isinstance(first[0], OrchestratorStarted)
    assert isinstance(first[1], ExecutionStarted)
    assert first[1].name == load(name).orchestrator


@pytest.mark.parametrize("name", NAMES)
def test_a_full_replay_decides_nothing_new(name: str) -> None:
    g = load(name)
    decision, execution = replay(
        golden.ORCHESTRATORS, g.history, [], codec=g.codec, options=g.options
    )
    assert decision.commands == ()
    assert decision.events == ()
    assert decision.status.value == g.status
    assert execution.is_finished == (g.status not in {"RUNNING", "SUSPENDED"})
    # Strictly too: the recorded inputs, timer times and targets are what the code passes.
    strict = Execution(golden.ORCHESTRATORS, g.codec, g.options)
    strict.strict = True
    strict.replay(g.history)
    assert strict.step([]) == decision


@pytest.mark.parametrize("name", NAMES)
def test_stepping_from_every_batch_boundary_records_the_same(name: str) -> None:
    g = load(name)
    batches = batches_of(g.history)
    offsets = [0, *itertools.accumulate(len(b) for b in batches)]
    assert g.incremental_from_batch < len(batches)
    for cut in range(g.incremental_from_batch, len(batches)):
        execution: Execution | None = None
        for j in range(cut, len(batches)):
            batch, before = batches[j], g.history[: offsets[j]]
            rewinding = any(isinstance(e, ExecutionRewound) for e in batch)
            if execution is None or rewinding:  # a worker replays afresh to rewind
                execution = Execution(golden.ORCHESTRATORS, g.codec, g.options)
                execution.replay(before, rewinding=rewinding)
            decision = execution.step(inbound(batch, before))
            assert scrubbed(decision.events) == batch, f"cut at batch {cut}, batch {j}"
        assert decision.status.value == g.status


# -- the corpus as a whole -----------------------------------------------------------------


def test_there_are_at_least_fifty_histories() -> None:
    assert len(FILES) >= 50


def test_every_kind_of_event_is_in_the_corpus() -> None:
    seen = {type(e) for name in NAMES for e in load(name).history}
    missing = sorted(k.__name__ for k in EVENT_KINDS - seen)
    assert not missing, f"no golden history has {missing}: add a scenario that records them"
    assert seen == EVENT_KINDS


def _anywhere(predicate: Callable[[HistoryEvent], bool]) -> bool:
    return any(predicate(e) for name in NAMES for e in load(name).history)


VARIANTS: dict[str, Callable[[HistoryEvent], bool]] = {
    "a child's start names its parent": lambda e: (
        isinstance(e, ExecutionStarted) and e.parent is not None
    ),
    "a scheduled start": lambda e: isinstance(e, ExecutionStarted) and bool(e.scheduled_start),
    "a retried attempt": lambda e: isinstance(e, TaskScheduled) and e.attempt > 1,
    "a recursive terminate": lambda e: isinstance(e, ExecutionTerminated) and e.recurse,
    "a terminate that leaves children": lambda e: (
        isinstance(e, ExecutionTerminated) and not e.recurse
    ),
    "carried events": lambda e: isinstance(e, ContinuedAsNew) and bool(e.carried_events),
    "a continue-as-new that carries nothing": lambda e: (
        isinstance(e, ContinuedAsNew) and not e.carried_events
    ),
    "a rewind that cancels": lambda e: isinstance(e, ExecutionRewound) and bool(e.cancels),
    "a failure with an inner cause": lambda e: (
        isinstance(e, ExecutionCompleted) and e.failure is not None and e.failure.inner is not None
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_corpus_has_every_variant(variant: str) -> None:
    assert _anywhere(VARIANTS[variant]), f"no golden history has {variant}"


def test_the_corpus_ends_in_every_status() -> None:
    statuses = {load(name).status for name in NAMES}
    assert statuses == {
        "COMPLETED",
        "FAILED",
        "TERMINATED",
        "CONTINUED_AS_NEW",
        "RUNNING",
        "SUSPENDED",
    }


def test_rewound_histories_skip_what_they_cancel() -> None:
    rewound = [n for n in NAMES if any(isinstance(e, ExecutionRewound) for e in load(n).history)]
    assert len(rewound) >= 5
    for name in rewound:
        history = load(name).history
        for index in cancelled_events(history):
            assert index < len(history)


def test_the_corpus_is_what_the_script_writes_now() -> None:
    files = maker.build_corpus()
    on_disk = {f.name: f.read_text(encoding="utf-8") for f in FILES}
    stale = sorted(on_disk.keys() - files.keys())
    missing = sorted(files.keys() - on_disk.keys())
    changed = sorted(n for n in files.keys() & on_disk.keys() if files[n] != on_disk[n])
    assert not (stale or missing or changed), (
        f"the corpus is out of date (stale {stale}, missing {missing}, changed {changed}): "
        "run python tests/core/make_golden_histories.py and review the diff"
    )


# -- changed code is caught ----------------------------------------------------------------


def chaining_with_another_second_step(ctx, topic: str):
    outline = yield ctx.call_activity("generate_outline", input=topic)
    draft = yield ctx.call_activity("write_outline_draft", input=outline)  # was write_draft
    final = yield ctx.call_activity("polish_draft", input=draft)
    return {"ok": True, "text": final}


def fulfil_with_another_child_id(ctx, order):
    payment = yield ctx.call_activity("charge", input=order["amount"])
    shipment = yield ctx.call_sub_orchestrator(
        "ship_order", input=order, instance_id=f"{ctx.instance_id}-shipping"
    )
    return {"payment": payment, "tracking": shipment["tracking"]}


def ping_another_instance(ctx, target: str):
    ctx.send_event(f"{target}-b", "ping", data={"from": ctx.instance_id, "n": 1})
    return (yield ctx.wait_for_external_event("pong"))


def timers_then_an_activity(ctx, _):
    yield ctx.create_timer(timedelta(minutes=30))
    yield ctx.call_activity("nap")  # was a second timer
    return []


@pytest.mark.parametrize(
    ("name", "changed", "sequence_number", "recorded"),
    [
        (
            "prompt_chaining_passes_gates",
            chaining_with_another_second_step,
            1,
            "call_activity('write_draft')",
        ),
        (
            "child_orchestrations_parent",
            fulfil_with_another_child_id,
            1,
            "call_sub_orchestrator('ship_order', instance_id='order-1-ship')",
        ),
        ("send_event_ping", ping_another_instance, 0, "send_event('ponger-1', 'ping')"),
        ("timers_absolute_and_relative", timers_then_an_activity, 1, "create_timer("),
    ],
)
def test_changed_code_fails_to_replay_its_golden_history(
    name: str, changed: Callable[..., object], sequence_number: int, recorded: str
) -> None:
    g = load(name)
    specs: dict[str, FunctionSpec] = {
        **golden.ORCHESTRATORS,
        g.orchestrator: orchestrator_spec(changed, name=g.orchestrator),
    }
    with pytest.raises(NonDeterminismError) as info:
        replay(specs, g.history, [], codec=g.codec, options=g.options)
    message = str(info.value)
    assert f"sequence number {sequence_number}" in message
    assert recorded in message
