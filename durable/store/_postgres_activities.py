"""The Postgres store's activity work items: claims, results, deferrals and lease renewals."""

from __future__ import annotations

from collections.abc import Sequence

from durable.core.state import OrchestrationStatus
from durable.store._postgres_sql import Tx, commit_all, deliver, touched
from durable.store.base import (
    ActivityResult,
    ActivityTake,
    ActivityWorkItem,
    Message,
    OrchestrationCommit,
    activity_from_row,
    merge_outcomes,
    results_refused,
)
from durable.store.flow import flow_holder

_RUNNING = OrchestrationStatus.RUNNING.value


async def claim_activities(tx: Tx, owner: str, limit: int, lease: int) -> list[ActivityWorkItem]:
    cur = await tx.c.execute(
        # (the lease is not indexed, so that the claim rewrites the row in place: the
        # few leased rows of the ready index are passed over)
        "UPDATE activities AS a SET lease_owner = %(owner)s, lease_until = %(expires)s"
        " FROM (SELECT id FROM activities WHERE ready_at <= %(now)s"
        "       AND (lease_until IS NULL OR lease_until <= %(now)s)"
        "       ORDER BY ready_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS picked"
        " WHERE a.id = picked.id"
        " RETURNING a.id, instance_id, execution_id, task_id, name, input, attempt, trace",
        {"owner": owner, "expires": tx.now + lease, "now": tx.now, "limit": limit},
    )
    rows = sorted(await cur.fetchall())
    return [activity_from_row(r, owner, r[7]) for r in rows]


async def complete_activities(tx: Tx, results: Sequence[ActivityResult]) -> None:
    # One result per work item (the first), and instance rows locked before activity
    # rows, in the order every other transaction takes them.
    unique = list({r.item.id: r for r in reversed(results)}.values())[::-1]
    await tx.lock(r.item.instance_id for r in unique)
    cur = await tx.c.execute(
        "DELETE FROM activities WHERE id = ANY(%b) RETURNING id", ([r.item.id for r in unique],)
    )
    done = {r[0] for r in await cur.fetchall()}  # the rest: another worker completed them
    await _deliver_results(tx, [r for r in unique if r.item.id in done])
    await tx.flush()


async def abandon_activities(tx: Tx, items: Sequence[ActivityWorkItem], delay: int) -> None:
    ready_at = tx.now + max(delay, 0)
    tx.notes.add("a")
    async with tx.c.cursor() as many:
        await many.executemany(
            "UPDATE activities SET lease_owner = NULL, lease_until = NULL, ready_at = %s"
            " WHERE id = %s AND lease_owner = %s",
            [(ready_at, i.id, i.lease_owner) for i in items],
        )


async def renew(
    tx: Tx, owner: str, instance_ids: Sequence[str], activity_ids: Sequence[int], lease: int
) -> None:
    c, expires = tx.c, tx.now + lease
    if instance_ids:
        await c.execute(
            "UPDATE instances SET lease_expires = %s"
            " WHERE instance_id = ANY(%b) AND lease_owner = %s",
            (expires, list(instance_ids), owner),
        )
    if activity_ids:
        await c.execute(
            "UPDATE activities SET lease_until = %s WHERE id = ANY(%b) AND lease_owner = %s",
            (expires, list(activity_ids), owner),
        )
        await c.execute(
            "UPDATE flow_slots SET expires = %s WHERE holder = ANY(%b)",
            (expires, [flow_holder(i, owner) for i in activity_ids]),
        )


async def commit_with_results(
    tx: Tx, commits: Sequence[OrchestrationCommit], take: ActivityTake | None
) -> tuple[list[Exception | None], bool]:
    """`commit_all`, where some decisions were made on activity results directly (see
    `OrchestrationCommit.results`): those are written if their instance is idle and
    unchanged, and their results' work items are still there; the others' results are
    delivered as messages, and they get `LeaseLostError`."""
    await tx.lock(i for c in commits for i in touched(c))  # instances before activities
    direct = [c for c in commits if c.results]
    await tx.flush()
    cur = await tx.c.execute(
        "SELECT DISTINCT instance_id FROM messages WHERE instance_id = ANY(%b)",
        ([c.item.instance_id for c in direct],),
    )
    busy = {r[0] for r in await cur.fetchall()}
    cur = await tx.c.execute(
        "DELETE FROM activities WHERE id = ANY(%b) RETURNING id",
        ([r.item.id for c in direct for r in c.results],),
    )
    found = {r[0] for r in await cur.fetchall()}
    outcomes: list[Exception | None] = []
    for commit in commits:
        item, row = commit.item, tx.rows.get(commit.item.instance_id)
        current = (
            row is not None
            and (row.execution_id, row.length) == (item.execution_id, item.history_length)
            and all(r.item.id in found for r in commit.results)
        )
        idle = (
            row is not None
            and row.lease_owner is None
            and (row.lease_expires is None or row.lease_expires <= tx.now)
            and row.status == _RUNNING
            and item.instance_id not in busy
        )
        if not commit.results or (current and idle):
            outcomes.append(None)
            if commit.results:  # held by the decider for the rest of the transaction
                assert row is not None  # (locked: no claim can take it meanwhile)
                row.lease_owner, row.lease_expires = item.lease_owner, tx.now + 1
            continue
        outcomes.append(results_refused(item.instance_id, current))
        # (the results whose work items are gone were completed elsewhere)
        await _deliver_results(tx, [r for r in commit.results if r.item.id in found])
    kept = [c for c, o in zip(commits, outcomes, strict=True) if o is None]
    written, queued = await commit_all(tx, kept, take)
    return merge_outcomes(outcomes, written), queued


async def _deliver_results(tx: Tx, results: Sequence[ActivityResult]) -> None:
    """Deliver activity results (their work items removed) to their instances."""
    for result in results:
        done = result.item
        message = Message(
            instance_id=done.instance_id, event=result.event, execution_id=done.execution_id
        )
        await deliver(tx, message)
