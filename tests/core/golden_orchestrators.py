"""The orchestrators whose recorded histories make up the golden corpus (histories/).

Deterministic code only. Activities (and most children) are called by name, so no
activity code is needed to replay the histories. `ORCHESTRATORS` is the code as it is
now, which every history must replay against; `EARLIER` holds older versions of some of
them, registered under the same names, that recorded the first steps of a few histories
(an instance started before a patch, a bug fixed before a rewind).

Changing an orchestrator here changes what its histories record: regenerate the corpus
with `python tests/core/make_golden_histories.py` and review the diff. A change that the
diff shows altering recorded steps is exactly what would break running instances.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import msgspec

from durable.core.entity import EntityInstanceId
from durable.core.errors import InvalidTaskError, TaskFailedError
from durable.core.functions import FunctionSpec, orchestrator_spec
from durable.core.tasks import RetryPolicy, when_all, when_any

# -- the seed patterns -------------------------------------------------------------------


def prompt_chaining(ctx, topic: str):
    """Outline -> gate -> draft -> gate -> polish."""
    outline = yield ctx.call_activity("generate_outline", input=topic)
    if len(outline) < 3:  # gate 1: a usable outline has at least three sections
        return {"ok": False, "failed_gate": "outline", "outline": outline}
    draft = yield ctx.call_activity("write_draft", input=outline)
    if draft.count(" / ") != len(outline) - 1:  # gate 2: every section made it in
        return {"ok": False, "failed_gate": "draft"}
    final = yield ctx.call_activity("polish_draft", input=draft)
    return {"ok": True, "text": final}


def route_query(ctx, query: str):
    """Classify, then hand the query to one handler."""
    route = yield ctx.call_activity("classify", input=query)
    answer = yield ctx.call_activity(f"handle_{route}", input=query)
    return {"route": route, "answer": answer}


def review(ctx, text: str):
    """Sectioning: three checks in parallel, results in input order."""
    sections = ["check_safety", "check_grammar", "check_facts"]
    results = yield when_all([ctx.call_activity(s, input=text) for s in sections])
    return {"checks": results, "approved": all(r["ok"] for r in results)}


def majority_vote(ctx, question: str):
    """Voting: five parallel ballots, the majority wins."""
    ballots = [{"voter": i, "question": question} for i in range(5)]
    votes = yield when_all([ctx.call_activity("cast_vote", input=b) for b in ballots])
    winner, n = Counter(votes).most_common(1)[0]
    return {"votes": votes, "winner": winner if n > len(votes) // 2 else None}


def subtask_worker(ctx, subtask: str):
    """The child of `orchestrator_workers`."""
    result = yield ctx.call_activity("do_subtask", input=subtask)
    return {"subtask": subtask, "result": result, "parent": ctx.parent_instance_id}


def orchestrator_workers(ctx, goal: str):
    """Plan, fan out to child orchestrations (default ids), synthesize."""
    subtasks = yield ctx.call_activity("plan_subtasks", input=goal)
    results = yield when_all([ctx.call_sub_orchestrator(subtask_worker, input=s) for s in subtasks])
    summary = yield ctx.call_activity("synthesize", input=[r["result"] for r in results])
    return {"subtasks": len(results), "summary": summary}


def evaluator_optimizer(ctx, job: dict[str, Any]):
    """Generate, evaluate, revise with the feedback, up to max_rounds."""
    feedback = ""
    answer = ""
    for round_no in range(1, job["max_rounds"] + 1):
        answer = yield ctx.call_activity(
            "generate_answer",
            input={"task": job["task"], "round": round_no, "feedback": feedback},
        )
        verdict = yield ctx.call_activity("evaluate_answer", input=answer)
        if verdict["accepted"]:
            return {"answer": answer, "accepted": True, "rounds": round_no}
        feedback = verdict["feedback"]
    return {"answer": answer, "accepted": False, "rounds": job["max_rounds"]}


NEEDS_APPROVAL = frozenset({"send_email"})


def agent_loop(ctx, state: dict[str, Any]):
    """A tool-calling agent: tools needing approval wait for a human (or time out);
    every few turns it continues as new, carrying events not consumed yet."""
    for _ in range(state["turns_per_execution"]):
        reply = yield ctx.call_activity("call_model", input=state)
        if "final" in reply:
            ctx.set_custom_status({"turn": state["turn"], "phase": "done"})
            return {"answer": reply["final"], "turns": state["turn"] + 1}
        calls = reply["tool_calls"]
        approved = True
        if any(c["tool"] in NEEDS_APPROVAL for c in calls):
            ctx.set_custom_status({"turn": state["turn"], "phase": "awaiting_approval"})
            approval = ctx.wait_for_external_event("approval")
            timeout = ctx.create_timer(timedelta(seconds=state["approval_timeout"]))
            winner = yield when_any([approval, timeout])
            if winner is approval:
                timeout.cancel()
                approved = approval.get_result()["approved"]
            else:
                approval.cancel()
                approved = False
        ctx.set_custom_status({"turn": state["turn"], "phase": "tools"})
        runs = [
            ctx.call_activity(c["tool"], input=c["args"])
            for c in calls
            if approved or c["tool"] not in NEEDS_APPROVAL
        ]
        results = yield when_all(runs)
        if not approved:
            results.append("email denied: no approval")
        state["results"].extend(results)
        state["turn"] += 1
    ctx.continue_as_new(state, save_events=True)


# -- fan-out, races, timers ----------------------------------------------------------------


def fan_out_fan_in(ctx, items: list[str]):
    """One activity per item in parallel, then one that aggregates."""
    results = yield when_all([ctx.call_activity("process", input=i) for i in items])
    ctx.set_custom_status({"processed": len(results)})
    total = yield ctx.call_activity("aggregate", input=results)
    return {"results": results, "total": total}


def tolerant_fan_out(ctx, items: list[str]):
    """A fan-out that keeps going when some items fail (a caught when_all failure)."""
    tasks = [ctx.call_activity("process", input=i) for i in items]
    try:
        yield when_all(tasks)
    except TaskFailedError as e:
        ctx.set_custom_status({"first_failure": e.details.error_type})
    outcome = [
        {"error": t.get_exception().details.message} if t.is_failed else t.get_result()
        for t in tasks
    ]
    failed = [i for i, t in zip(items, tasks, strict=True) if t.is_failed]
    if failed:
        yield ctx.call_activity("report_failures", input=failed)
    return outcome


def approval_race(ctx, timeout_seconds: int):
    """An external event raced with a timer; the loser is cancelled."""
    wait = ctx.wait_for_external_event("Approve")
    timer = ctx.create_timer(timedelta(seconds=timeout_seconds))
    winner = yield when_any([wait, timer])
    if winner is wait:
        timer.cancel()
        return {"approved_by": wait.get_result(), "timer_cancelled": timer.is_cancelled}
    cancelled = wait.cancel()
    return {"timed_out": True, "wait_cancelled": cancelled}


def activity_with_timeout(ctx, seconds: int):
    """An activity raced with a timer: a result that comes after the timeout is ignored."""
    work = ctx.call_activity("slow_report", input=seconds)
    timer = ctx.create_timer(timedelta(seconds=seconds))
    winner = yield when_any([work, timer])
    if winner is timer:
        fallback = yield ctx.call_activity("cached_report")
        return {"source": "cache", "report": fallback}
    timer.cancel()
    return {"source": "live", "report": work.get_result()}


def timers(ctx, _):
    """A timer at an absolute (naive, so UTC) time, then one after a delay."""
    yield ctx.create_timer(datetime(2026, 1, 1, 9, 30))
    first = ctx.current_utc_datetime.isoformat()
    yield ctx.create_timer(timedelta(hours=1, minutes=15))
    return [first, ctx.current_utc_datetime.isoformat()]


def long_sleep(ctx, days: int):
    """One durable timer of many days (no chunking)."""
    yield ctx.create_timer(timedelta(days=days))
    return ctx.current_utc_datetime.isoformat()


# -- retries and failures ----------------------------------------------------------------

RETRY_POLICIES = {
    "standard": RetryPolicy(timedelta(seconds=5), 3),
    "backoff": RetryPolicy(
        timedelta(seconds=1), 5, backoff_coefficient=2.0, max_retry_interval=timedelta(seconds=3)
    ),
    "non_retryable": RetryPolicy(
        timedelta(seconds=5), 3, non_retryable_error_types=["app.errors.CardDeclined"]
    ),
    "timeout": RetryPolicy(timedelta(minutes=1), 10, retry_timeout=timedelta(minutes=2)),
}


def retrying_charge(ctx, plan: dict[str, Any]):
    """An activity retried by a RetryPolicy; failures are caught only if plan["catch"]."""
    policy = RETRY_POLICIES[plan["policy"]]
    try:
        receipt = yield ctx.call_activity("charge_card", input=plan["amount"], retry_policy=policy)
    except TaskFailedError as e:
        if not plan["catch"]:
            raise
        return {"charged": False, "error": e.details.error_type, "message": e.details.message}
    return {"charged": True, "receipt": receipt}


def with_fallback(ctx, city: str):
    """A caught activity failure: the fallback runs and the orchestration goes on."""
    try:
        forecast = yield ctx.call_activity("primary_forecast", input=city)
    except TaskFailedError as e:
        if not e.details.is_caused_by("TimeoutError"):
            raise
        forecast = yield ctx.call_activity("backup_forecast", input=city)
    summary = yield ctx.call_activity("summarize", input=forecast)
    return summary


def validating(ctx, order_id: str):
    """The orchestrator's own error (not a task's) fails it."""
    order = yield ctx.call_activity("load_order", input=order_id)
    if order["qty"] <= 0:
        raise ValueError(f"order {order_id} has no items")
    return order


# -- children ------------------------------------------------------------------------------


def ship_order(ctx, order: dict[str, Any]):
    """A child: pack and dispatch."""
    parcel = yield ctx.call_activity("pack", input=order)
    tracking = yield ctx.call_activity("dispatch", input=parcel)
    return {"tracking": tracking, "parent": ctx.parent_instance_id}


def notify_customer(ctx, message: str):
    """A child whose failure its parent catches."""
    yield ctx.call_activity("send_sms", input=message)
    return "notified"


def fulfil_order(ctx, order: dict[str, Any]):
    """Charge, then a child with an explicit id, then one with the default id."""
    payment = yield ctx.call_activity("charge", input=order["amount"])
    shipment = yield ctx.call_sub_orchestrator(
        ship_order, input=order, instance_id=f"{ctx.instance_id}-ship"
    )
    try:
        notified = yield ctx.call_sub_orchestrator(
            "notify_customer", input=f"shipped: {shipment['tracking']}"
        )
    except TaskFailedError as e:
        notified = f"not notified: {e.details.message}"
    return {"payment": payment, "tracking": shipment["tracking"], "notified": notified}


def child_with_retry(ctx, order: dict[str, Any]):
    """A child orchestration retried by a RetryPolicy (each attempt has its own id)."""
    policy = RetryPolicy(timedelta(seconds=30), 2)
    return (yield ctx.call_sub_orchestrator("ship_order", input=order, retry_policy=policy))


# -- external events -----------------------------------------------------------------------


def confirm_after_lookup(ctx, user: str):
    """An activity, then a wait for an event that may have arrived (buffered) already."""
    profile = yield ctx.call_activity("load_profile", input=user)
    confirmation = yield ctx.wait_for_external_event("Confirm")
    return {"profile": profile, "confirmation": confirmation}


def collect_events(ctx, n: int):
    """After a minute, takes `n` events named "item" (any case), first in first out."""
    yield ctx.create_timer(timedelta(minutes=1))
    items = []
    for _ in range(n):
        items.append((yield ctx.wait_for_external_event("item")))
    return items


def ping(ctx, target: str):
    """Sends an event to another instance and waits for its reply."""
    ctx.send_event(target, "ping", data={"from": ctx.instance_id, "n": 1})
    reply = yield ctx.wait_for_external_event("pong")
    return reply


def pong(ctx, _):
    """Waits for a ping and answers the instance it came from."""
    message = yield ctx.wait_for_external_event("ping")
    ctx.send_event(message["from"], "pong", data={"n": message["n"] + 1})
    return message


def entity_counter(ctx, key: str):
    """Signals an entity, calls it, and catches a failed call (a durable entity)."""
    counter = EntityInstanceId("counter", key)
    ctx.signal_entity(counter, "add", 5)
    total = yield ctx.call_entity(counter, "get")
    try:
        yield ctx.call_entity(counter, "reset_to", -1)
    except TaskFailedError as e:
        return {"total": total, "refused": e.details.inner.message if e.details.inner else None}
    return {"total": total}


def entity_transfer(ctx, amount: int):
    """A critical section over two entities (named out of order): a read, two writes."""
    source, target = EntityInstanceId("account", "b"), EntityInstanceId("account", "a")
    with (yield ctx.lock_entities([source, target])):
        balance = yield ctx.call_entity(source, "balance")
        yield ctx.call_entity(source, "deposit", -amount)
        yield ctx.call_entity(target, "deposit", amount)
    return balance


# -- continue-as-new -----------------------------------------------------------------------


def counter(ctx, total: int):
    """One "add" event per execution; unconsumed events are dropped at continue-as-new."""
    amount = yield ctx.wait_for_external_event("add")
    total += amount
    if total >= 10:
        return total
    ctx.continue_as_new(total)


def batch_collector(ctx, state: dict[str, Any]):
    """Works on one "job" event per execution and carries the others over."""
    job = yield ctx.wait_for_external_event("job")
    result = yield ctx.call_activity("run_job", input=job)
    done = [*state["done"], result]
    if job == "last":
        return done
    ctx.continue_as_new({"done": done}, save_events=True)


def poller(ctx, state: dict[str, Any]):
    """Polls until the history is long enough, then continues as new."""
    while not ctx.is_continue_as_new_suggested:
        state["polls"] += 1
        status = yield ctx.call_activity("poll", input=state["polls"])
        if status == "ready":
            return {"polls": state["polls"], "history_length": ctx.history_length}
    ctx.continue_as_new(state)


def unbounded_loop(ctx, n: int):
    """Too many steps for the configured history cap."""
    total = 0
    for i in range(n):
        total += yield ctx.call_activity("step", input=i)
    return total


# -- versioning ------------------------------------------------------------------------------


def patched_flow(ctx, order_id: str):
    """A fraud check added later, guarded by is_patched."""
    order = yield ctx.call_activity("validate", input=order_id)
    if ctx.is_patched("fraud-check"):
        order = yield ctx.call_activity("fraud_check", input=order)
    ctx.deprecate_patch("old-pricing")
    receipt = yield ctx.call_activity("charge", input=order)
    return receipt


def patched_flow_v1(ctx, order_id: str):
    """`patched_flow` before the fraud check existed."""
    order = yield ctx.call_activity("validate", input=order_id)
    receipt = yield ctx.call_activity("charge", input=order)
    return receipt


def buggy_pipeline_v1(ctx, n: int):
    """`pipeline` with a bug that fails it after its first step."""
    a = yield ctx.call_activity("extract", input=n)
    ratio = a / (n - n)  # the bug
    return ratio


def pipeline(ctx, n: int):
    """Extract, transform, load (the fixed `buggy_pipeline_v1`)."""
    a = yield ctx.call_activity("extract", input=n)
    b = yield ctx.call_activity("transform", input=a)
    c = yield ctx.call_activity("load", input=b)
    return [a, b, c]


# -- bad yields and payloads -----------------------------------------------------------------


def yields_non_task(ctx, mode: str):
    """Yields something that is not a task: fails, recovers, or never learns."""
    if mode == "fail":
        yield "not a task"
    elif mode == "recover":
        with contextlib.suppress(InvalidTaskError):
            yield 42
    else:
        while True:
            try:
                yield None
            except InvalidTaskError:
                continue
    value = yield ctx.call_activity("after", input=mode)
    return value


class Order(msgspec.Struct, frozen=True):
    sku: str
    qty: int


class Quote(msgspec.Struct, frozen=True):
    sku: str
    unit_price: int
    total: int


def typed_order(ctx, order: Order):
    """Typed payloads: a Struct input, Struct results, a typed event."""
    quote = yield ctx.call_activity("price", input=order, return_type=Quote)
    ok = yield ctx.wait_for_external_event("accept", data_type=bool)
    return {"quote": quote, "accepted": ok}


def tolerant_pricing(ctx, sku: str):
    """A result that does not decode into the declared type fails the task; it is caught."""
    try:
        price = yield ctx.call_activity("price_of", input=sku, return_type=int)
    except TaskFailedError as e:
        price = yield ctx.call_activity("default_price", input=e.details.error_type)
    return price


class Unencodable:
    """Has no JSON form."""


def sends_unencodable(ctx, _):
    """Passes a value with no JSON form to an activity: the orchestration fails."""
    first = yield ctx.call_activity("first")
    yield ctx.call_activity("second", input={"data": first, "handle": Unencodable()})
    return "unreachable"


def big_input(ctx, size: int):
    """Sends an input larger than the payload cap: the orchestration fails."""
    small = yield ctx.call_activity("fetch", input=size)
    yield ctx.call_activity("upload", input="x" * size)
    return small


# -- small ones ------------------------------------------------------------------------------


def plain_function(ctx, x: int):
    """Not a generator: completes in its first step."""
    return {"double": x * 2, "instance": ctx.instance_id}


def deterministic_values(ctx, _):
    """ctx.new_uuid(), ctx.random() and history time give the same values on replay."""
    first = ctx.new_uuid()
    draw = ctx.random().randint(1, 1_000_000)
    yield ctx.call_activity(
        "record", input={"id": first, "draw": draw, "at": ctx.current_utc_datetime.isoformat()}
    )
    second = ctx.new_uuid()
    yield ctx.create_timer(timedelta(minutes=5))
    return {
        "ids": [first, second],
        "draw": draw,
        "at": ctx.current_utc_datetime.isoformat(),
        "replaying": ctx.is_replaying,
    }


ALL = [
    prompt_chaining,
    route_query,
    review,
    majority_vote,
    subtask_worker,
    orchestrator_workers,
    evaluator_optimizer,
    agent_loop,
    entity_counter,
    entity_transfer,
    fan_out_fan_in,
    tolerant_fan_out,
    approval_race,
    activity_with_timeout,
    timers,
    long_sleep,
    retrying_charge,
    with_fallback,
    validating,
    ship_order,
    notify_customer,
    fulfil_order,
    child_with_retry,
    confirm_after_lookup,
    collect_events,
    ping,
    pong,
    counter,
    batch_collector,
    poller,
    unbounded_loop,
    patched_flow,
    pipeline,
    yields_non_task,
    typed_order,
    tolerant_pricing,
    sends_unencodable,
    big_input,
    plain_function,
    deterministic_values,
]

ORCHESTRATORS: dict[str, FunctionSpec] = {
    spec.name: spec for spec in (orchestrator_spec(fn) for fn in ALL)
}
"""The current code, by name: every history in the corpus replays against it."""

EARLIER: dict[str, FunctionSpec] = {
    "patched_flow_v1": orchestrator_spec(patched_flow_v1, name="patched_flow"),
    "buggy_pipeline_v1": orchestrator_spec(buggy_pipeline_v1, name="pipeline"),
}
"""Older versions, each under the name of the orchestrator it became."""
