"""Entities in the pure core: ids, and running a batch of operations on one entity."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable.core.entity import (
    DurableEntity,
    EntityContext,
    EntityInstanceId,
    EntityOperationFailedException,
    Operation,
    SignalOut,
    StartOut,
    entity_name,
    is_entity_id,
    run_operations,
)
from durable.core.events import FailureDetails
from durable.core.payload import PayloadCodec

CODEC = PayloadCodec()
COUNTER = EntityInstanceId("Counter", "k1")


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"new-{next(counter)}"


def run(entity: Any, state: str | None, *ops: tuple[str, Any]) -> Any:
    operations = [
        Operation(operation=name, input=CODEC.encode(value), tag=str(n))
        for n, (name, value) in enumerate(ops)
    ]
    return run_operations(entity, COUNTER, state, operations, CODEC, ids())


class Counter(DurableEntity):
    def add(self, amount: int) -> int:
        total = self.get_state(int, 0) + amount
        self.set_state(total)
        return total

    def get(self) -> int:
        return self.get_state(int, 0)

    def add_then_fail(self, amount: int) -> None:
        self.set_state(self.get_state(int, 0) + amount)
        self.signal_entity(EntityInstanceId("audit", "x"), "record", amount)
        self.schedule_new_orchestration("notify", input=amount)
        raise ValueError("no")

    def tell(self, to: str) -> str:
        self.signal_entity(EntityInstanceId("audit", to), "record", self.get_state(int, 0))
        return self.schedule_new_orchestration("notify", input=to, instance_id=f"n-{to}")

    def _hidden(self) -> None:
        raise AssertionError("private methods are not operations")


# -- ids ---------------------------------------------------------------------------------

parts = st.text(st.characters(exclude_characters="@", exclude_categories=["Cs"]), min_size=1)


@given(parts, parts)
def test_an_entity_id_round_trips_through_its_string_form(name: str, key: str) -> None:
    eid = EntityInstanceId(name, key)
    assert str(eid) == f"@{name.lower()}@{key}"
    assert EntityInstanceId.parse(str(eid)) == eid
    assert hash(EntityInstanceId.parse(str(eid))) == hash(eid)
    assert is_entity_id(str(eid))


def test_entity_names_are_case_insensitive_and_keys_are_not() -> None:
    assert EntityInstanceId("Counter", "K") == EntityInstanceId("counter", "K")
    assert EntityInstanceId("counter", "K") != EntityInstanceId("counter", "k")
    assert sorted([EntityInstanceId("b", "1"), EntityInstanceId("a", "2")])[0].entity == "a"


@pytest.mark.parametrize("text", ["", "@", "@@", "@name@", "name@key", "@a@b@c", "@@key"])
def test_a_malformed_entity_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="entity"):
        EntityInstanceId.parse(text)


@pytest.mark.parametrize(("name", "key"), [("", "k"), ("n", ""), ("a@b", "k"), ("n", "a@b")])
def test_an_entity_id_needs_a_plain_name_and_key(name: str, key: str) -> None:
    with pytest.raises(ValueError, match="entity"):
        EntityInstanceId(name, key)


def test_an_entity_is_registered_under_its_lowercased_name() -> None:
    def shopping_cart(ctx: EntityContext, _: Any) -> None: ...

    assert entity_name(Counter) == "counter"
    assert entity_name(shopping_cart) == "shopping_cart"
    assert entity_name(shopping_cart, "Cart") == "cart"
    with pytest.raises(ValueError, match="lambda"):
        entity_name(lambda ctx, x: x)
    with pytest.raises(ValueError, match="@"):
        entity_name(Counter, "a@b")


# -- operations --------------------------------------------------------------------------


def test_operations_run_in_order_each_from_the_state_the_last_one_left() -> None:
    out = run(Counter, None, ("add", 5), ("add", 2), ("get", None))
    assert [r.result for r in out.results] == ["5", "7", "7"]
    assert [r.tag for r in out.results] == ["0", "1", "2"]
    assert out.state == "7"


def test_a_failing_operation_leaves_the_state_and_its_sends_as_they_were() -> None:
    out = run(Counter, "10", ("add", 1), ("add_then_fail", 100), ("get", None))
    assert out.state == "11"
    failed = out.results[1]
    assert failed.result is None and failed.failure is not None
    assert (failed.failure.error_type, failed.failure.message) == ("builtins.ValueError", "no")
    assert out.results[2].result == "11"
    assert out.signals == () and out.starts == ()


def test_sends_of_operations_that_succeed_go_out_in_order() -> None:
    out = run(Counter, "3", ("tell", "a"), ("add_then_fail", 1), ("tell", "b"))
    assert out.signals == (
        SignalOut(entity="@audit@a", operation="record", input="3"),
        SignalOut(entity="@audit@b", operation="record", input="3"),
    )
    assert out.starts == (
        StartOut(name="notify", instance_id="n-a", input='"a"'),
        StartOut(name="notify", instance_id="n-b", input='"b"'),
    )
    assert [r.result for r in out.results] == ['"n-a"', None, '"n-b"']


def test_delete_removes_the_state() -> None:
    out = run(Counter, "4", ("delete", None), ("get", None))
    assert out.state is None
    assert out.results[1].result == "0"


@pytest.mark.parametrize("operation", ["nope", "_hidden", "__init__"])
def test_an_unknown_operation_fails_alone(operation: str) -> None:
    out = run(Counter, "1", (operation, None), ("add", 1))
    failure = out.results[0].failure
    assert failure is not None and failure.error_type == "builtins.AttributeError"
    assert operation in failure.message
    assert out.state == "2"


def test_an_input_that_does_not_fit_the_declared_type_fails_the_operation() -> None:
    out = run(Counter, "1", ("add", "not a number"))
    failure = out.results[0].failure
    assert failure is not None and "PayloadDecodeError" in failure.error_type
    assert out.state == "1"


def test_a_state_with_no_json_form_fails_the_operation() -> None:
    def keep(ctx: EntityContext, _: Any) -> None:
        ctx.set_state(object())

    out = run(keep, '"old"', ("keep", None))
    assert out.results[0].failure is not None and out.state == '"old"'


@dataclass
class Cart:
    items: list[str]


def cart(ctx: EntityContext, item: str | None) -> int:
    state = ctx.get_state(Cart, Cart(items=[]))
    if ctx.operation == "add" and item is not None:
        state.items.append(item)
        ctx.set_state(state)
    assert ctx.orchestration_id == "@counter@k1" and ctx.entity_id == COUNTER
    return len(state.items)


def test_a_function_entity_gets_the_context_and_its_typed_input() -> None:
    out = run(cart, None, ("add", "apple"), ("add", "pear"), ("count", None))
    assert [r.result for r in out.results] == ["1", "2", "2"]
    assert out.state == '{"items":["apple","pear"]}'


def test_get_state_returns_a_copy() -> None:
    def touch(ctx: EntityContext, _: Any) -> int:
        ctx.get_state(list)[0] = 99  # changes the copy only
        return len(ctx.get_state(list))

    out = run(touch, "[1,2]", ("touch", None))
    assert out.state == "[1,2]" and out.results[0].result == "2"


def test_a_signal_can_be_delayed_and_an_orchestration_gets_a_fresh_id() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)

    def later(ctx: EntityContext, _: Any) -> str:
        ctx.signal_entity(EntityInstanceId("timer", "t"), "ring", signal_time=when)
        return ctx.schedule_new_orchestration("follow_up")

    out = run(later, None, ("later", None))
    assert out.signals == (SignalOut(entity="@timer@t", operation="ring", signal_time=when),)
    assert out.starts == (StartOut(name="follow_up", instance_id="new-0"),)
    assert out.results[0].result == '"new-0"'


def test_the_failure_a_caller_sees_names_the_entity_and_the_operation() -> None:
    failure = FailureDetails(message="bad", error_type="builtins.ValueError")
    error = EntityOperationFailedException(COUNTER, "boom", failure)
    assert str(error) == "Operation 'boom' on entity '@counter@k1' failed with error: bad"
    assert error.failure_details is failure and error.operation_name == "boom"


def test_a_naive_signal_time_is_taken_as_utc() -> None:
    def later(ctx: EntityContext, _: Any) -> None:
        ctx.signal_entity(EntityInstanceId("timer", "t"), "ring", signal_time=datetime(2026, 1, 1))

    out = run(later, None, ("later", None))
    assert out.signals[0].signal_time == datetime(2026, 1, 1, tzinfo=UTC)
