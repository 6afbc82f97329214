"""The Postgres store's activity work items: claims, results, deferrals and lease renewals."""

from __future__ import annotations

from collections.abc import Sequence

from durable.store._postgres_sql import Tx, deliver
from durable.store.base import ActivityResult, ActivityWorkItem, Message, activity_from_row
from durable.store.flow import flow_holder


async def claim_activities(tx: Tx, owner: str, limit: int, lease: int) -> list[ActivityWorkItem]:
    cur = await tx.c.execute(
        # (the lease is not indexed, so that the claim rewrites the row in place: the
        # few leased rows of the ready index are passed over)
        "UPDATE activities AS a SET lease_owner = %(owner)s, lease_until = %(expires)s"
        " FROM (SELECT id FROM activities WHERE ready_at <= %(now)s"
        "       AND (lease_until IS NULL OR lease_until <= %(now)s)"
        "       ORDER BY ready_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS picked"
        " WHERE a.id = picked.id"
        " RETURNING a.id, instance_id, execution_id, task_id, name, input, attempt",
        {"owner": owner, "expires": tx.now + lease, "now": tx.now, "limit": limit},
    )
    rows = sorted(await cur.fetchall())
    return [activity_from_row(r, owner) for r in rows]


async def complete_activities(tx: Tx, results: Sequence[ActivityResult]) -> None:
    # One result per work item (the first), and instance rows locked before activity
    # rows, in the order every other transaction takes them.
    unique = list({r.item.id: r for r in reversed(results)}.values())[::-1]
    await tx.lock(r.item.instance_id for r in unique)
    cur = await tx.c.execute(
        "DELETE FROM activities WHERE id = ANY(%b) RETURNING id", ([r.item.id for r in unique],)
    )
    done = {r[0] for r in await cur.fetchall()}  # the rest: another worker completed them
    for result in unique:
        if result.item.id not in done:
            continue
        item = result.item
        await deliver(
            tx,
            Message(
                instance_id=item.instance_id, event=result.event, execution_id=item.execution_id
            ),
        )
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
