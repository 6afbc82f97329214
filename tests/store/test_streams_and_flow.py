"""Store conformance for streams, flow control and deferred activities.

Each store test runs on every store (see conftest.py) through the `Store` protocol only;
time is the fake clock. The last test is a property of the pure rule
`durable.store.flow.wait_seconds` that every store applies.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import LEASE, FakeClock, S, new_instance, start

from durable.core.commands import ScheduleActivity
from durable.store.base import Store, StoredChunk, StreamRead
from durable.store.flow import FlowLimit, flow_holder, wait_seconds

# -- streams ---------------------------------------------------------------------------


def chunk(data: str, task_id: int = 1, attempt: int = 1) -> StoredChunk:
    """A chunk to append; its index is the store's to assign, so it is given a wrong one."""
    return StoredChunk(index=77, data=data, task_id=task_id, attempt=attempt)


async def append(store: Store, iid: str, name: str, *data: str, close: bool = False) -> None:
    for d in data:
        await store.append_stream(iid, name, chunk(d), False)
    if close:
        await store.append_stream(iid, name, None, True)


def view(read: StreamRead) -> tuple[list[tuple[int, str | None]], bool]:
    return [(c.index, c.data) for c in read.chunks], read.closed


async def test_stream_chunks_are_numbered_from_zero_in_write_order(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    await store.append_stream("a", "out", chunk('"x"', task_id=3, attempt=1), False)
    await store.append_stream("a", "out", chunk('"y"', task_id=3, attempt=2), False)
    await store.append_stream("a", "out", chunk("null", task_id=5, attempt=1), False)

    read = await store.read_stream("a", "out", -1)
    assert read.chunks == (
        StoredChunk(index=0, data='"x"', task_id=3, attempt=1),
        StoredChunk(index=1, data='"y"', task_id=3, attempt=2),
        StoredChunk(index=2, data="null", task_id=5, attempt=1),
    )
    assert read.closed is False


async def test_stream_read_after_and_limit_page_through_it(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    await append(store, "a", "out", *(f'"{n}"' for n in range(7)))

    assert view(await store.read_stream("a", "out", 3)) == (
        [(4, '"4"'), (5, '"5"'), (6, '"6"')],
        False,
    )
    assert view(await store.read_stream("a", "out", -1, limit=2)) == (
        [(0, '"0"'), (1, '"1"')],
        False,
    )
    assert view(await store.read_stream("a", "out", 6)) == ([], False)
    assert view(await store.read_stream("a", "out", 50)) == ([], False)

    pages, after = [], -1
    while read := (await store.read_stream("a", "out", after, limit=3)).chunks:
        pages.append([c.index for c in read])
        after = read[-1].index
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]


async def test_stream_is_closed_only_for_a_read_that_reaches_its_end(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    await append(store, "a", "out", '"a"', '"b"', '"c"', close=True)

    assert view(await store.read_stream("a", "out", -1, limit=2)) == (
        [(0, '"a"'), (1, '"b"')],
        False,
    )
    assert view(await store.read_stream("a", "out", 0)) == ([(1, '"b"'), (2, '"c"')], True)
    assert view(await store.read_stream("a", "out", -1)) == (
        [(0, '"a"'), (1, '"b"'), (2, '"c"')],
        True,
    )
    assert view(await store.read_stream("a", "out", 2)) == ([], True)


@pytest.mark.parametrize("after", [-2, -5])
async def test_reading_after_an_index_below_minus_one_reads_from_the_start(
    store: Store, after: int
) -> None:
    # "Chunks with index > after": every chunk, and nothing else (no close marker).
    await store.create_instance(new_instance("a"))
    await append(store, "a", "out", '"a"', '"b"', '"c"', close=True)
    assert view(await store.read_stream("a", "out", after)) == (
        [(0, '"a"'), (1, '"b"'), (2, '"c"')],
        True,
    )


async def test_writes_after_close_are_dropped(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    await append(store, "a", "out", '"a"')
    await store.append_stream("a", "out", chunk('"last"'), True)  # a chunk and the close at once
    await store.append_stream("a", "out", chunk('"late"'), False)
    await store.append_stream("a", "out", chunk('"later"'), True)
    await store.append_stream("a", "out", None, True)

    assert view(await store.read_stream("a", "out", -1)) == ([(0, '"a"'), (1, '"last"')], True)


async def test_a_stream_closed_empty_or_never_written(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    assert view(await store.read_stream("a", "never", -1)) == ([], False)
    await store.append_stream("a", "empty", None, True)
    assert view(await store.read_stream("a", "empty", -1)) == ([], True)


async def test_writes_to_a_missing_instance_are_dropped(store: Store) -> None:
    await store.append_stream("ghost", "out", chunk('"lost"'), False)
    await store.append_stream("ghost", "out", None, True)
    assert view(await store.read_stream("ghost", "out", -1)) == ([], False)

    # The instance created afterwards starts with nothing in the stream, and open.
    await store.create_instance(new_instance("ghost"))
    assert view(await store.read_stream("ghost", "out", -1)) == ([], False)
    await append(store, "ghost", "out", '"mine"')
    assert view(await store.read_stream("ghost", "out", -1)) == ([(0, '"mine"')], False)


async def test_a_write_notifies_stream_readers(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    seen = store.stream_writes.version
    await append(store, "a", "out", '"x"')
    assert store.stream_writes.version != seen
    assert await store.stream_writes.wait(0, since=seen) is True


async def test_two_streams_of_an_instance_are_independent(store: Store) -> None:
    await store.create_instance(new_instance("a"))
    await store.create_instance(new_instance("b"))
    await append(store, "a", "out", '"o0"')
    await append(store, "a", "log", '"l0"', '"l1"')
    await append(store, "a", "out", '"o1"')
    await append(store, "b", "out", '"b0"')
    await append(store, "a", "log", close=True)

    assert view(await store.read_stream("a", "out", -1)) == ([(0, '"o0"'), (1, '"o1"')], False)
    assert view(await store.read_stream("a", "log", -1)) == ([(0, '"l0"'), (1, '"l1"')], True)
    assert view(await store.read_stream("b", "out", -1)) == ([(0, '"b0"')], False)
    await append(store, "a", "out", '"o2"')  # closing "log" left "out" open
    assert view(await store.read_stream("a", "out", 1)) == ([(2, '"o2"')], False)


async def test_purge_deletes_the_instance_streams(store: Store) -> None:
    await start(store, "a", status=S.COMPLETED)
    await start(store, "keep", status=S.COMPLETED)
    await append(store, "a", "out", '"x"', '"y"', close=True)
    await append(store, "keep", "out", '"k"')

    assert await store.purge(["a"]) == 1
    assert view(await store.read_stream("a", "out", -1)) == ([], False)
    assert view(await store.read_stream("keep", "out", -1)) == ([(0, '"k"')], False)


async def test_a_new_instance_with_the_same_id_starts_with_no_streams(store: Store) -> None:
    await start(store, "a", status=S.COMPLETED)
    await append(store, "a", "out", '"old0"', '"old1"', close=True)
    await append(store, "a", "open", '"old"')

    await store.create_instance(new_instance("a", execution_id="e2"))
    assert view(await store.read_stream("a", "out", -1)) == ([], False)
    assert view(await store.read_stream("a", "open", -1)) == ([], False)
    await append(store, "a", "out", '"new"')  # open again, numbered from zero
    assert view(await store.read_stream("a", "out", -1)) == ([(0, '"new"')], False)


# -- flow control ----------------------------------------------------------------------


async def holders(store: Store, n: int, owner: str = "w1", iid: str = "flow") -> list[str]:
    """Schedule and claim `n` activities; the names they hold flow slots under."""
    work = tuple(ScheduleActivity(task_id=t, name="llm") for t in range(1, n + 1))
    await start(store, iid, activities=work)
    items = sorted(await store.claim_activities(owner, n, LEASE), key=lambda a: a.task_id)
    assert len(items) == n
    return [flow_holder(a.id, owner) for a in items]


def activity_id(holder: str) -> int:
    return int(holder.split(":", maxsplit=1)[0])


async def test_concurrency_slots_are_granted_up_to_the_limit(store: Store) -> None:
    limit = FlowLimit(max_concurrent=2)
    h1, h2, h3, h4 = await holders(store, 4)
    assert await store.acquire_flow("llm", h1, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h2, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) > 0
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) > 0  # a refusal takes nothing
    assert await store.acquire_flow("other", h3, limit, 0, LEASE) == 0.0  # keys are apart

    await store.release_flow("llm", "999:w1", None)  # not a holder: frees nothing
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) > 0
    await store.release_flow("llm", h1, None)
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) > 0
    await store.release_flow("llm", h2, 5)
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == 0.0


async def test_a_slot_whose_lease_lapses_is_freed(store: Store, clock: FakeClock) -> None:
    limit = FlowLimit(max_concurrent=2)
    h1, h2, h3, h4, h5 = await holders(store, 5)
    assert await store.acquire_flow("llm", h1, limit, 0, 10) == 0.0
    assert await store.acquire_flow("llm", h2, limit, 0, 10) == 0.0
    clock.advance(9)
    assert await store.acquire_flow("llm", h3, limit, 0, 10) > 0
    clock.advance(2)  # both holders died without a release
    assert await store.acquire_flow("llm", h3, limit, 0, 10) == 0.0
    assert await store.acquire_flow("llm", h4, limit, 0, 10) == 0.0
    assert await store.acquire_flow("llm", h5, limit, 0, 10) > 0


async def test_renewing_the_activity_lease_keeps_its_slot(store: Store, clock: FakeClock) -> None:
    limit = FlowLimit(max_concurrent=2)
    h1, h2, h3, h4 = await holders(store, 4, owner="w1")
    assert await store.acquire_flow("llm", h1, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h2, limit, 0, LEASE) == 0.0
    clock.advance(LEASE - 5)
    await store.renew_leases("w1", [], [activity_id(h1)], LEASE)
    clock.advance(10)  # h2's slot lapsed; h1's was renewed
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) > 0
    await store.release_flow("llm", h1, None)
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == 0.0


async def test_a_stale_holders_late_release_keeps_its_successors_slot(
    store: Store, clock: FakeClock
) -> None:
    # w1's lease lapses; w2 claims the same activity and takes the only slot. w1 wakes up
    # and releases: the slot w2 holds must stay taken, and w1's renewal must not extend it.
    limit = FlowLimit(max_concurrent=1)
    [stale] = await holders(store, 1, owner="w1")
    assert await store.acquire_flow("llm", stale, limit, 0, 10) == 0.0
    clock.advance(LEASE + 1)  # both the lease and the slot lapsed
    [item] = await store.claim_activities("w2", 1, 10)
    fresh = flow_holder(item.id, "w2")
    assert await store.acquire_flow("llm", fresh, limit, 0, 10) == 0.0

    await store.release_flow("llm", stale, None)
    await store.renew_leases("w1", [], [item.id], 10)
    [other] = await holders(store, 1, owner="w3", iid="other")
    assert await store.acquire_flow("llm", other, limit, 0, 10) > 0
    await store.renew_leases("w2", [], [item.id], 10)
    clock.advance(9)
    assert await store.acquire_flow("llm", other, limit, 0, 10) > 0  # w2 renewed its slot
    await store.release_flow("llm", fresh, None)
    assert await store.acquire_flow("llm", other, limit, 0, 10) == 0.0


async def test_request_window_waits_until_the_oldest_start_leaves(
    store: Store, clock: FakeClock
) -> None:
    limit = FlowLimit(max_requests=3, window_seconds=10)
    h1, h2, h3, h4, h5 = await holders(store, 5)
    assert await store.acquire_flow("llm", h1, limit, 0, LEASE) == 0.0  # t=0
    clock.advance(2)
    assert await store.acquire_flow("llm", h2, limit, 0, LEASE) == 0.0  # t=2
    clock.advance(3)
    assert await store.acquire_flow("llm", h3, limit, 0, LEASE) == 0.0  # t=5
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == pytest.approx(5, abs=1e-3)
    await store.release_flow("llm", h1, None)  # a finished run still counts as a start
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == pytest.approx(5, abs=1e-3)

    clock.advance(4.9)  # asking again does not push the wait back
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == pytest.approx(0.1, abs=1e-3)
    clock.advance(0.1)  # t=10: the start at t=0 has left the window
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == 0.0
    assert await store.acquire_flow("llm", h5, limit, 0, LEASE) == pytest.approx(2, abs=1e-3)
    clock.advance(2)
    assert await store.acquire_flow("llm", h5, limit, 0, LEASE) == 0.0


async def test_token_window_counts_estimates_until_released_with_usage(
    store: Store, clock: FakeClock
) -> None:
    limit = FlowLimit(max_tokens=100, window_seconds=10)
    h1, h2, h3, h4 = await holders(store, 4)
    assert await store.acquire_flow("llm", h1, limit, 60, LEASE) == 0.0  # t=0
    clock.advance(1)
    assert await store.acquire_flow("llm", h2, limit, 50, LEASE) == pytest.approx(9, abs=1e-3)
    await store.release_flow("llm", h1, 30)  # it used 30, not the 60 estimated
    assert await store.acquire_flow("llm", h2, limit, 50, LEASE) == 0.0  # 30 + 50
    assert await store.acquire_flow("llm", h3, limit, 30, LEASE) == pytest.approx(9, abs=1e-3)
    await store.release_flow("llm", h2, None)  # no usage: the estimate stands
    assert await store.acquire_flow("llm", h3, limit, 30, LEASE) == pytest.approx(9, abs=1e-3)
    await store.release_flow("llm", h2, 10)
    assert await store.acquire_flow("llm", h3, limit, 30, LEASE) == 0.0  # 30 + 10 + 30
    await store.release_flow("llm", h3, 70)  # more than estimated: 30 + 10 + 70
    assert await store.acquire_flow("llm", h4, limit, 0, LEASE) == pytest.approx(9, abs=1e-3)
    clock.advance(9)  # h1 left the window: 10 + 70
    assert await store.acquire_flow("llm", h4, limit, 20, LEASE) == 0.0


async def test_an_oversize_start_goes_alone_in_an_empty_window(
    store: Store, clock: FakeClock
) -> None:
    limit = FlowLimit(max_tokens=100, window_seconds=10)
    h1, h2, h3, h4 = await holders(store, 4)
    assert await store.acquire_flow("llm", h1, limit, 10, LEASE) == 0.0  # t=0
    clock.advance(4)
    assert await store.acquire_flow("llm", h2, limit, 10, LEASE) == 0.0  # t=4
    clock.advance(2)  # t=6: waits for the newest start (t=4) to leave, at t=14
    assert await store.acquire_flow("llm", h3, limit, 500, LEASE) == pytest.approx(8, abs=1e-3)
    clock.advance(7)
    assert await store.acquire_flow("llm", h3, limit, 500, LEASE) == pytest.approx(1, abs=1e-3)
    clock.advance(1)  # t=14: empty
    assert await store.acquire_flow("llm", h3, limit, 500, LEASE) == 0.0
    assert await store.acquire_flow("llm", h4, limit, 1, LEASE) == pytest.approx(10, abs=1e-3)
    clock.advance(10)
    assert await store.acquire_flow("llm", h4, limit, 1, LEASE) == 0.0


# -- deferred activities ---------------------------------------------------------------


async def test_abandon_with_retry_after_defers_the_activity(store: Store, clock: FakeClock) -> None:
    await start(
        store,
        "a",
        activities=(
            ScheduleActivity(task_id=1, name="later", input='"in"', attempt=2),
            ScheduleActivity(task_id=2, name="now"),
        ),
    )
    later, now = sorted(await store.claim_activities("w1", 10, LEASE), key=lambda a: a.task_id)
    await store.abandon_activities([later], retry_after=5)
    await store.abandon_activities([now], retry_after=0)
    assert [a.id for a in await store.claim_activities("w2", 10, LEASE)] == [now.id]
    clock.advance(4.9)
    assert await store.claim_activities("w2", 10, LEASE) == []
    clock.advance(0.1)
    [again] = await store.claim_activities("w3", 10, LEASE)
    assert (again.id, again.name, again.input, again.attempt, again.lease_owner) == (
        later.id,
        "later",
        '"in"',
        2,
        "w3",
    )


async def test_a_deferral_longer_than_the_lease_still_holds(store: Store, clock: FakeClock) -> None:
    await start(store, "a", activities=(ScheduleActivity(task_id=1, name="act"),))
    [item] = await store.claim_activities("w1", 10, LEASE)
    await store.abandon_activities([item], retry_after=3 * LEASE)
    clock.advance(2 * LEASE)
    assert await store.claim_activities("w2", 10, LEASE) == []
    clock.advance(LEASE)
    assert [a.id for a in await store.claim_activities("w2", 10, LEASE)] == [item.id]


# -- the rule every store applies ------------------------------------------------------

_QUARTER = 0.25  # times are multiples of a quarter second: float sums stay exact


@settings(max_examples=300, deadline=None)
@given(
    max_requests=st.none() | st.integers(1, 4),
    max_tokens=st.none() | st.integers(1, 100),
    window=st.integers(1, 8),
    attempts=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 150)), max_size=40),
)
def test_property_wait_seconds_keeps_the_window_within_budget(
    max_requests: int | None,
    max_tokens: int | None,
    window: int,
    attempts: list[tuple[int, int]],
) -> None:
    """Attempts at increasing times, each granted (recorded) or told to wait: no window
    ever holds more than max_requests starts or max_tokens tokens (but for a lone
    oversize start), and a wait is exact: the same attempt is refused just before
    now + wait and granted at now + wait if nothing started meanwhile."""
    if max_requests is None and max_tokens is None:
        max_tokens = 50
    limit = FlowLimit(max_requests=max_requests, max_tokens=max_tokens, window_seconds=window)
    starts: list[tuple[float, int]] = []

    def wait_at(now: float, tokens: int) -> float:
        inside = [s for s in starts if s[0] > now - window]  # what a store keeps
        return wait_seconds(limit, now, 0, inside, tokens)

    now = 0.0
    for quarters, tokens in attempts:
        now += quarters * _QUARTER
        wait = wait_at(now, tokens)
        assert wait >= 0
        if wait == 0:
            starts.append((now, tokens))
            continue
        assert wait % _QUARTER == 0, wait  # the moment a start leaves the window
        assert wait_at(now + wait, tokens) == 0
        assert wait_at(now + wait - _QUARTER / 2, tokens) > 0

    for i, (first, _) in enumerate(starts):
        inside = [t for at, t in starts[i:] if at < first + window]
        if max_requests is not None:
            assert len(inside) <= max_requests, (starts, i)
        if max_tokens is not None and len(inside) > 1:
            assert sum(inside) <= max_tokens, (starts, i)


@settings(max_examples=100, deadline=None)
@given(max_concurrent=st.integers(1, 5), running=st.integers(0, 8))
def test_property_wait_seconds_for_concurrency(max_concurrent: int, running: int) -> None:
    wait = wait_seconds(FlowLimit(max_concurrent=max_concurrent), 0.0, running, [], 0)
    assert (wait > 0) == (running >= max_concurrent)
