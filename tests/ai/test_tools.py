"""Tools: declarations from signatures and docstrings, argument checking, and tool calls
in a real agent run (sync and async, failures, unknown names, parallel calls).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import msgspec
import pytest

from durable import ai
from durable.ai.testing import Call, call_tools, reply
from durable.core.events import TaskScheduled
from durable.task import ActivityContext, RetryPolicy

# -- declarations ----------------------------------------------------------------------


class Address(msgspec.Struct):
    street: str
    city: str = "Oslo"


@dataclass
class Window:
    start: int
    end: int


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []


class Opaque:
    pass


@ai.tool
def book_room(
    ctx: ActivityContext,
    city: str,
    nights: int,
    budget: float,
    tags: list[str],
    tier: Literal["basic", "suite"],
    address: Address,
    window: Window,
    pets: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    """Book a hotel room.

    Checks availability first.

    Args:
        city: where to stay.
        nights (int): how many nights,
            at least one.
        budget: the most to pay.
        tags: wishes.
        tier: the room's class.
        address: where to send the bill.
        window: check-in hours.
        pets: bringing animals.
        ghost: not a parameter.

    Returns:
        the booking.
    """
    hours = window.end - window.start
    return {"by": ctx.orchestration_id, "street": address.street, "hours": hours, "note": note}


def test_declaration_from_signature_and_docstring() -> None:
    d = book_room.declaration
    assert d.name == "book_room"
    assert d.description == "Book a hotel room.\n\nChecks availability first."
    props = d.parameters["properties"]
    assert d.parameters["type"] == "object"
    order = ["city", "nights", "budget", "tags", "tier", "address", "window", "pets", "note"]
    assert list(props) == order  # ctx is not the model's to fill in
    assert d.parameters["required"] == order[:7]  # the defaulted ones are optional
    assert props["city"] == {"type": "string", "description": "where to stay."}
    assert props["nights"] == {"type": "integer", "description": "how many nights, at least one."}
    assert props["budget"]["type"] == "number"
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["tier"]["enum"] == ["basic", "suite"]
    assert props["pets"]["type"] == "boolean" and props["pets"]["default"] is False
    note_types = props["note"]["anyOf"]
    assert {"type": "string"} in note_types and {"type": "null"} in note_types
    assert "description" not in props["note"]  # not in the docstring
    assert "ghost" not in props
    # Struct and dataclass arguments are inlined: providers do not follow $ref.
    assert props["address"]["type"] == "object"
    assert props["address"]["required"] == ["street"]
    assert set(props["address"]["properties"]) == {"street", "city"}
    assert props["address"]["description"] == "where to send the bill."
    assert props["window"]["properties"] == {
        "start": {"type": "integer"},
        "end": {"type": "integer"},
    }
    text = json.dumps(d.parameters)
    assert "$ref" not in text and "$defs" not in text and "title" not in text


def test_nested_struct_in_a_list_is_inlined() -> None:
    def route(stops: list[Address]) -> int:
        """Plan a route."""
        return len(stops)

    params = ai.tool(route).parameters
    assert params["properties"]["stops"]["items"]["properties"]["street"] == {"type": "string"}
    assert "$ref" not in json.dumps(params)
    assert ai.tool(route).description == "Plan a route."


def test_name_and_description_can_be_given() -> None:
    @ai.tool(name="lookup.v2", description="Find a thing.")
    def lookup(q: str) -> str:
        """Ignored summary."""
        return q

    assert isinstance(lookup, ai.Tool)
    assert lookup.declaration.name == "lookup.v2"
    assert lookup.declaration.description == "Find a thing."
    assert lookup.activity_name == "durable.ai.tool.lookup.v2"
    assert lookup.activity.__name__ == "durable.ai.tool.lookup.v2"


def test_context_parameter_by_annotation_is_excluded() -> None:
    def audit(context: ActivityContext, what: str) -> str:
        return what

    assert ai.tool(audit).parameters["properties"] == {"what": {"type": "string"}}


@pytest.mark.parametrize("name", ["1abc", "a b", "x" * 65, "wéird", "a/b"])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid tool name"):
        ai.Tool(lambda: None, name=name)


def test_valid_names_are_accepted() -> None:
    for name in ["x" * 64, "ns.tool:v-1", "_private"]:
        assert ai.Tool(lambda: None, name=name).name == name
    with pytest.raises(ValueError, match="<lambda>"):
        ai.tool(lambda: None)  # a lambda has no usable name


def _star_args(*items: str) -> None: ...
def _star_kwargs(**options: str) -> None: ...
def _positional_only(x: int, /) -> None: ...


@pytest.mark.parametrize("fn", [_star_args, _star_kwargs, _positional_only])
def test_unusual_parameters_are_rejected(fn: Any) -> None:
    with pytest.raises(TypeError, match="must be an ordinary named parameter"):
        ai.tool(fn)


def test_arguments_without_a_json_schema_are_rejected() -> None:
    def keep(o: Opaque) -> None: ...
    def walk(tree: Node) -> None: ...

    with pytest.raises(TypeError, match="no JSON schema"):
        ai.tool(keep)
    with pytest.raises(TypeError, match="recursive"):
        ai.tool(walk)


def test_not_a_function_is_rejected() -> None:
    with pytest.raises(TypeError, match="must be a function"):
        ai.Tool("book_room")  # type: ignore[arg-type]


# -- the activity, called directly ----------------------------------------------------

GOOD = {
    "city": "Oslo",
    "nights": 2,
    "budget": 99.5,
    "tags": ["quiet"],
    "tier": "suite",
    "address": {"street": "Main St 1"},
    "window": {"start": 14, "end": 18},
}


def test_activity_converts_arguments_and_passes_the_context() -> None:
    out = book_room.activity(ActivityContext("order-7", 3), GOOD)
    assert out == {"by": "order-7", "street": "Main St 1", "hours": 4, "note": None}


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({**GOOD, "nights": "two"}, "Expected `int`, got `str`"),
        ({k: v for k, v in GOOD.items() if k != "city"}, "missing required field `city`"),
        ({**GOOD, "tier": "penthouse"}, "Invalid enum value 'penthouse'"),
        ({**GOOD, "address": {"city": "Bergen"}}, "`street`"),
        ({**GOOD, "extra": 1}, "unknown field `extra`"),
    ],
)
def test_bad_arguments_raise_tool_arguments_error(args: dict[str, Any], why: str) -> None:
    with pytest.raises(ai.ToolArgumentsError, match="bad arguments for tool 'book_room'") as info:
        book_room.activity(ActivityContext("o", 1), args)
    assert why in str(info.value)


async def test_async_tool_activity_checks_arguments_when_awaited() -> None:
    @ai.tool
    async def double(n: int) -> int:
        return n * 2

    assert await double.activity(ActivityContext("o", 1), {"n": 21}) == 42
    with pytest.raises(ai.ToolArgumentsError):
        await double.activity(ActivityContext("o", 1), {"n": [1]})


# -- tools in a real agent run ---------------------------------------------------------


def tools_then(*calls: tuple[str, dict[str, Any]], answer: str = "done") -> Any:
    """A script: ask for `calls` on the first turn, then answer `answer`."""

    def script(call: Call) -> ai.ModelResponse:
        return reply(answer) if call.function_responses else call_tools(*calls)

    return script


def responses(call: Call) -> list[tuple[str, dict[str, Any]]]:
    return [(r.name, r.response) for r in call.function_responses]


@ai.tool
def whoami(ctx: ActivityContext, label: str) -> dict[str, Any]:
    """Say which orchestration and activity this is."""
    return {"instance": ctx.orchestration_id, "activity": ctx.name, "label": label}


@ai.tool
async def shout(text: str) -> str:
    """Upper-case the text."""
    await asyncio.sleep(0)
    return text.upper()


async def test_sync_and_async_tools_run_as_activities(run_agent, gemini) -> None:
    gemini.script = tools_then(("whoami", {"label": "x"}), ("shout", {"text": "hi"}), answer="ok")
    agent = ai.Agent("toolbox", tools=[whoami, shout])
    run = await run_agent(agent, "go", instance_id="toolbox-1")
    assert run.result.text == "ok" and run.result.turns == 2
    assert gemini.calls[0].tool_names == ["whoami", "shout"]
    assert responses(gemini.calls[-1]) == [
        ("whoami", {"instance": "toolbox-1", "activity": "durable.ai.tool.whoami", "label": "x"}),
        ("shout", {"result": "HI"}),
    ]


async def test_declaration_reaches_the_model_unchanged(run_agent, gemini) -> None:
    gemini.script = tools_then(("book_room", {**GOOD, "note": "late"}))
    run = await run_agent(ai.Agent("booker", tools=[book_room]), "book", instance_id="b-1")
    assert run.result.text == "done"
    (sent,) = gemini.calls[0].request.tools
    assert sent.name == "book_room"
    assert sent.description == book_room.description
    assert sent.parameters == book_room.parameters
    ((_, booked),) = responses(gemini.calls[-1])
    assert booked == {"by": "b-1", "street": "Main St 1", "hours": 4, "note": "late"}


@ai.tool
def lookup(city: str) -> str:
    """Look a city up."""
    raise ValueError(f"no such city: {city}")


async def test_a_failing_tool_tells_the_model_and_the_agent_goes_on(run_agent, gemini) -> None:
    gemini.script = tools_then(("lookup", {"city": "Atlantis"}), answer="sorry")
    run = await run_agent(ai.Agent("geo", tools=[lookup]), "where?")
    assert run.result.text == "sorry" and run.result.stopped == "done"
    assert len(gemini.calls) == 2
    assert responses(gemini.calls[-1]) == [
        ("lookup", {"error": "ValueError: no such city: Atlantis"})
    ]


def _add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def test_bad_arguments_from_the_model_are_an_error_answer(run_agent, gemini) -> None:
    gemini.script = tools_then(("add", {"a": 1, "b": "two"}))
    run = await run_agent(ai.Agent("calc", tools=[ai.tool(name="add")(_add)]), "1+2?")
    assert run.result.text == "done"
    ((name, answer),) = responses(gemini.calls[-1])
    assert name == "add"
    assert answer["error"].startswith("ToolArgumentsError: bad arguments for tool 'add'")
    assert "Expected `int`, got `str` - at `$.b`" in answer["error"]


async def test_bad_arguments_are_not_retried(run_agent, gemini) -> None:
    # ToolArgumentsError is documented as "not retried": the same arguments fail again.
    retry = RetryPolicy(timedelta(milliseconds=10), max_number_of_attempts=3)
    add = ai.tool(name="add", retry_policy=retry)(_add)
    gemini.script = tools_then(("add", {"a": 1, "b": "two"}))
    run = await run_agent(ai.Agent("calc", tools=[add]), "1+2?")
    assert run.result.text == "done"
    history = await run.client.get_orchestration_history(run.instance_id)
    attempts = [
        e.attempt for e in history if isinstance(e, TaskScheduled) and e.name == add.activity_name
    ]
    assert attempts == [1]


async def test_a_retried_tool_answers_with_its_later_success(run_agent, gemini) -> None:
    @ai.tool(retry_policy=RetryPolicy(timedelta(milliseconds=10), max_number_of_attempts=3))
    def flaky(ctx: ActivityContext) -> str:
        """Work on the second try."""
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return f"ok on attempt {ctx.attempt}"

    gemini.script = tools_then(("flaky", {}))
    await run_agent(ai.Agent("retrier", tools=[flaky]), "go")
    assert responses(gemini.calls[-1]) == [("flaky", {"result": "ok on attempt 2"})]


async def test_an_unknown_tool_gets_an_error_naming_the_known_ones(run_agent, gemini) -> None:
    gemini.script = tools_then(("teleport", {"to": "Mars"}), ("shout", {"text": "a"}))
    run = await run_agent(ai.Agent("limited", tools=[whoami, shout]), "go")
    assert run.result.text == "done"
    assert responses(gemini.calls[-1]) == [
        ("teleport", {"error": "there is no tool named 'teleport' (tools: whoami, shout)"}),
        ("shout", {"result": "A"}),
    ]


ARRIVED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


@pytest.fixture(autouse=True)
def _fresh_events() -> None:
    ARRIVED.clear()


@ai.tool
async def meet(name: str, partner: str, linger: float = 0.0) -> dict[str, str]:
    """Arrive, then wait for the partner (deadlocks unless both run at once)."""
    ARRIVED[name].set()
    await asyncio.wait_for(ARRIVED[partner].wait(), timeout=3)
    await asyncio.sleep(linger)
    return {"met": f"{name}+{partner}"}


async def test_calls_of_one_turn_run_in_parallel_and_answer_in_order(run_agent, gemini) -> None:
    gemini.script = tools_then(
        # The first call finishes last: answers still come in the order of the calls.
        ("meet", {"name": "a", "partner": "b", "linger": 0.1}),
        ("meet", {"name": "b", "partner": "c"}),
        ("meet", {"name": "c", "partner": "a"}),
    )
    run = await run_agent(ai.Agent("party", tools=[meet]), "meet up")
    assert run.result.text == "done"
    assert responses(gemini.calls[-1]) == [
        ("meet", {"met": "a+b"}),
        ("meet", {"met": "b+c"}),
        ("meet", {"met": "c+a"}),
    ]


def test_one_argument_type_used_twice_gets_each_description() -> None:
    def ship(sender: Address, receiver: Address) -> None:
        """Ship a parcel.

        Args:
            sender: who sends it.
            receiver: who gets it.
        """

    props = ai.tool(ship).parameters["properties"]
    assert props["sender"]["description"] == "who sends it."
    assert props["receiver"]["description"] == "who gets it."
    assert props["sender"]["properties"] == props["receiver"]["properties"]
