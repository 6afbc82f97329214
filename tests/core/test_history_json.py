"""History JSON: exact round-trips for every event kind, and a stable text form."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable.core import events as ev
from durable.core.history import History, decode_event, encode_event

EVENT_KINDS = typing.get_args(ev.HistoryEvent)

moments = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)
texts = st.text(max_size=20)
payloads = st.none() | st.builds(
    lambda v: msgspec.json.encode(v).decode(),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
        max_leaves=6,
    ),
)
task_ids = st.integers(0, 2**31)


def failures(depth: int = 2):
    inner = st.none() if depth == 0 else st.none() | st.deferred(lambda: failures(depth - 1))
    return st.builds(
        ev.FailureDetails,
        message=texts,
        error_type=st.sampled_from(["builtins.ValueError", "app.errors.QuotaError"]),
        stack_trace=st.none() | texts,
        base_types=st.lists(texts, max_size=3).map(tuple),
        inner=inner,
    )


def event_of(kind: type, **fields):
    return st.builds(kind, timestamp=moments, **fields)


raised = event_of(ev.EventRaised, name=texts, input=payloads)

EVENTS = {
    ev.ExecutionStarted: event_of(
        ev.ExecutionStarted,
        name=texts,
        instance_id=texts,
        execution_id=texts,
        input=payloads,
        parent=st.none()
        | st.builds(ev.ParentInstance, instance_id=texts, execution_id=texts, task_id=task_ids),
        scheduled_start=st.none() | moments,
    ),
    ev.OrchestratorStarted: event_of(ev.OrchestratorStarted),
    ev.TaskScheduled: event_of(
        ev.TaskScheduled, task_id=task_ids, name=texts, input=payloads, attempt=st.integers(1, 9)
    ),
    ev.TaskCompleted: event_of(ev.TaskCompleted, task_id=task_ids, result=payloads),
    ev.TaskFailed: event_of(ev.TaskFailed, task_id=task_ids, failure=failures()),
    ev.TimerCreated: event_of(ev.TimerCreated, task_id=task_ids, fire_at=moments),
    ev.TimerFired: event_of(ev.TimerFired, task_id=task_ids, fire_at=moments),
    ev.ChildOrchestrationCreated: event_of(
        ev.ChildOrchestrationCreated,
        task_id=task_ids,
        name=texts,
        instance_id=texts,
        input=payloads,
    ),
    ev.ChildOrchestrationCompleted: event_of(
        ev.ChildOrchestrationCompleted, task_id=task_ids, result=payloads
    ),
    ev.ChildOrchestrationFailed: event_of(
        ev.ChildOrchestrationFailed, task_id=task_ids, failure=failures()
    ),
    ev.EventRaised: raised,
    ev.EventSent: event_of(
        ev.EventSent, task_id=task_ids, instance_id=texts, name=texts, input=payloads
    ),
    ev.EntityOperationCalled: event_of(
        ev.EntityOperationCalled, task_id=task_ids, entity=texts, operation=texts, input=payloads
    ),
    ev.EntityOperationSignaled: event_of(
        ev.EntityOperationSignaled,
        task_id=task_ids,
        entity=texts,
        operation=texts,
        input=payloads,
        signal_time=st.none() | moments,
    ),
    ev.EntityOperationCompleted: event_of(
        ev.EntityOperationCompleted, task_id=task_ids, result=payloads
    ),
    ev.EntityOperationFailed: event_of(
        ev.EntityOperationFailed, task_id=task_ids, failure=failures()
    ),
    ev.EntityLockRequested: event_of(
        ev.EntityLockRequested, task_id=task_ids, entities=st.lists(texts).map(tuple)
    ),
    ev.EntityLockGranted: event_of(ev.EntityLockGranted, task_id=task_ids),
    ev.EntityUnlockSent: event_of(
        ev.EntityUnlockSent, task_id=task_ids, entities=st.lists(texts).map(tuple)
    ),
    ev.ExecutionSuspended: event_of(ev.ExecutionSuspended, reason=st.none() | texts),
    ev.ExecutionResumed: event_of(ev.ExecutionResumed, reason=st.none() | texts),
    ev.ExecutionRewound: event_of(
        ev.ExecutionRewound,
        reason=st.none() | texts,
        cancels=st.lists(st.integers(0, 99)).map(tuple),
    ),
    ev.ExecutionTerminated: event_of(
        ev.ExecutionTerminated, output=payloads, recurse=st.booleans()
    ),
    ev.PatchApplied: event_of(ev.PatchApplied, patch_id=texts),
    ev.ContinuedAsNew: event_of(
        ev.ContinuedAsNew, input=payloads, carried_events=st.lists(raised, max_size=3).map(tuple)
    ),
    ev.ExecutionCompleted: event_of(
        ev.ExecutionCompleted,
        status=st.sampled_from(["COMPLETED", "FAILED", "TERMINATED"]),
        result=payloads,
        failure=st.none() | failures(),
    ),
}
any_event = st.one_of(*EVENTS.values())


def test_every_event_kind_has_a_strategy():
    assert set(EVENTS) == set(EVENT_KINDS)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_event, max_size=12))
def test_history_round_trips_through_json(events):
    history = History(events)
    text = history.to_json()
    again = History.from_json(text)
    assert again == history
    assert [type(e) for e in again] == [type(e) for e in history]
    assert again.to_json() == text  # the text form is stable
    assert History.from_json(text.encode()) == history
    assert [e["kind"] for e in json.loads(text)] == [type(e).__name__ for e in events]


@settings(max_examples=100, deadline=None)
@given(any_event)
def test_single_events_round_trip(event):
    assert decode_event(encode_event(event)) == event
    assert encode_event(decode_event(encode_event(event))) == encode_event(event)


@pytest.mark.parametrize("kind", EVENT_KINDS, ids=lambda k: k.__name__)
def test_each_kind_round_trips(kind):
    event = _filled(kind)  # every optional field filled
    assert History.from_json(History([event]).to_json())[0] == event


def _filled(kind: type) -> ev.HistoryEvent:
    t = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
    failure = ev.FailureDetails(
        message="m",
        error_type="builtins.KeyError",
        stack_trace="tb",
        base_types=("builtins.LookupError",),
        inner=ev.FailureDetails(message="i", error_type="builtins.ValueError"),
    )
    values = {
        "name": "n",
        "instance_id": "i",
        "execution_id": "e",
        "input": '{"a":[1,2]}',
        "parent": ev.ParentInstance(instance_id="p", execution_id="pe", task_id=3),
        "scheduled_start": t,
        "task_id": 7,
        "attempt": 2,
        "result": '"r"',
        "failure": failure,
        "fire_at": t + timedelta(days=90),
        "reason": "why",
        "output": "1",
        "recurse": False,
        "patch_id": "p",
        "carried_events": (ev.EventRaised(timestamp=t, name="x", input="1"),),
        "status": "FAILED",
        "cancels": (4, 5),
        "entity": "@counter@k",
        "operation": "add",
        "signal_time": t + timedelta(hours=1),
        "entities": ("@account@a", "@account@b"),
        "trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    fields = {f: values[f] for f in kind.__struct_fields__ if f != "timestamp"}
    return kind(timestamp=t, **fields)


def test_history_is_an_immutable_sequence():
    events = [_filled(k) for k in EVENT_KINDS]
    history = History(events)
    assert len(history) == len(EVENT_KINDS)
    assert list(history) == events
    assert isinstance(history[1:3], History) and list(history[1:3]) == events[1:3]
    assert history[0] == events[0]
    assert hash(history) == hash(History(events))
    assert history != History(events[:-1])
    assert repr(history) == f"History({len(EVENT_KINDS)} events)"


def test_invalid_json_is_rejected_with_a_validation_error():
    with pytest.raises(msgspec.ValidationError):
        History.from_json('[{"kind": "NoSuchEvent", "timestamp": "2026-01-01T00:00:00Z"}]')
    with pytest.raises(msgspec.ValidationError):
        History.from_json('[{"kind": "TaskCompleted", "timestamp": "2026-01-01T00:00:00Z"}]')


def test_the_json_form_is_tagged_and_compact():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    text = History([ev.TaskCompleted(timestamp=t, task_id=1, result="2")]).to_json()
    # Exported histories are stored beside tests: this text must not change by accident.
    assert text == (
        '[{"kind":"TaskCompleted","task_id":1,"result":"2","timestamp":"2026-01-01T00:00:00Z"}]'
    )
