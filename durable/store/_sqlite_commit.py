"""SqliteStore's commit of decisions: runs in the writer's transaction (see _sqlite_sql).

Most decisions only touch their own instance: they append to its history, consume its
messages, schedule activities and set its status. Those of one batch are written
together, a few statements for all of them. A decision that also starts children,
continues as new or sends messages to other instances is written on its own, after them:
each decision only depends on its own instance's row (its fencing), so the order of the
decisions within the transaction is any order.
"""

from __future__ import annotations

from collections.abc import Sequence

from durable.core.errors import LeaseLostError, OrchestrationAlreadyExistsError
from durable.core.events import ChildOrchestrationFailed, ExecutionStarted, FailureDetails
from durable.core.history import encode_events
from durable.core.state import OrchestrationStatus
from durable.store._sqlite_sql import (
    _FAILURE_ENCODER,
    _INSTANCE_KINDS,
    _RUNNING,
    _TERMINAL,
    Conn,
    _batches,
    _deliver,
    _insert_message,
    _refresh_wake,
    _waking,
    create,
    deliver_results,
    remove_activities,
)
from durable.store.base import (
    ActivityResult,
    ActivityTake,
    Message,
    NewInstance,
    OrchestrationCommit,
    activity_from_row,
    dt,
    merge_outcomes,
    results_refused,
)


def commit_all(
    raw: Conn, commits: Sequence[OrchestrationCommit], now: int, take: ActivityTake | None
) -> tuple[list[Exception | None], bool, bool]:
    """Commit each decision; returns the outcomes, whether activities were queued for any
    worker to claim (those not leased to `take.owner`, see `ActivityTake`), and whether
    instances may have orchestration work now.

    A decision on results alone, written while its instance was idle, leaves none: the
    instance had no message waiting, and it sends none. Any other may (messages may
    have come for a claimed instance while it was leased)."""
    outcomes: list[Exception | None] = [None] * len(commits)
    if take is not None:
        take.items.clear()  # (what an attempt that was rolled back leased is not leased)
    if any(c.results for c in commits):
        adopted, busy = _adopt(raw, [c for c in commits if c.results], now)
        for k, c in enumerate(commits):
            iid = c.item.instance_id
            if c.results and iid not in adopted:
                outcomes[k] = results_refused(iid, current=iid in busy)
        work = any(o is not None for o in outcomes)  # (their results wait as messages)
        commits = [c for k, c in enumerate(commits) if outcomes[k] is None]
        work |= any(not c.results or _reaches_out(c) for c in commits)
        written, queued = _commit_held(raw, commits, now, take, adopted)
        return merge_outcomes(outcomes, written), queued, work
    return (*_commit_held(raw, commits, now, take, set()), True)


def _adopt(
    raw: Conn, commits: Sequence[OrchestrationCommit], now: int
) -> tuple[set[str], set[str]]:
    """Of decisions made on activity results directly, the instances that are idle and
    unchanged, and whose results' work items are all there. Their work items are
    removed; the other decisions' results are delivered as messages, as
    `complete_activities` does."""
    rows = _instance_rows(raw, commits, ", status, wake_at")
    found = remove_activities(raw, [r.item.id for c in commits for r in c.results])
    adopted: set[str] = set()
    busy: set[str] = set()
    left: list[ActivityResult] = []
    for c in commits:
        row, item = rows.get(c.item.instance_id), c.item
        current = (
            row is not None
            and row[2:4] == (item.execution_id, item.history_length)
            and all(r.item.id in found for r in c.results)
        )
        if (
            current
            and (
                (row[0] is None or row[1] is None or row[1] <= now)  # type: ignore[index, operator]
                and row[4:] == (_RUNNING, None)  # type: ignore[index]
            )
        ):
            adopted.add(item.instance_id)
            continue
        if current:
            busy.add(item.instance_id)
        left += [r for r in c.results if r.item.id in found]  # (the others: done elsewhere)
    # Decisions written on their own check the lease again (the others are held).
    raw.executemany(
        "UPDATE instances SET lease_owner = ?, lease_expires = ? WHERE instance_id = ?",
        [
            (c.item.lease_owner, now + 1, c.item.instance_id)
            for c in commits
            if c.item.instance_id in adopted and _reaches_out(c)
        ],
    )
    deliver_results(raw, left, now)
    return adopted, busy


def _commit_held(
    raw: Conn,
    commits: Sequence[OrchestrationCommit],
    now: int,
    take: ActivityTake | None,
    adopted: set[str],
) -> tuple[list[Exception | None], bool]:
    """Commit each decision whose lease holds (or that `_adopt` adopted)."""
    outcomes: list[Exception | None] = [None] * len(commits)
    plain = {k for k, c in enumerate(commits) if not _reaches_out(c)}
    fenced = [commits[k] for k in sorted(plain) if commits[k].item.instance_id not in adopted]
    held = _fence(raw, fenced, now) | adopted
    accepted = []
    for k in sorted(plain):
        if commits[k].item.instance_id in held:
            accepted.append(commits[k])
        else:
            outcomes[k] = _lost(commits[k].item.instance_id)
    queued = _write_plain(raw, accepted, now, take)
    for k, commit in enumerate(commits):
        if k not in plain:
            try:
                queued |= _commit(raw, commit, now, take)
            except LeaseLostError as e:
                outcomes[k] = e
    return outcomes, queued


def _reaches_out(commit: OrchestrationCommit) -> bool:
    """Whether the decision writes to other instances, or replaces its execution."""
    return bool(commit.children or commit.messages) or commit.new_execution is not None


def _lost(iid: str) -> LeaseLostError:
    return LeaseLostError(f"the lease on {iid!r} was lost; the decision was not written")


def _holds(row: Sequence[object] | None, commit: OrchestrationCommit, now: int) -> bool:
    """Whether the decision's lease still holds, on the instance's row as it is now."""
    item = commit.item
    return not (
        row is None
        or row[0] != item.lease_owner
        or row[1] is None
        or row[1] <= now  # type: ignore[operator]
        or row[2] != item.execution_id
        or row[3] != item.history_length
    )


def _fence(raw: Conn, commits: Sequence[OrchestrationCommit], now: int) -> set[str]:
    """The instances of `commits` whose decision may be written (their lease holds)."""
    rows = _instance_rows(raw, commits)
    return {c.item.instance_id for c in commits if _holds(rows.get(c.item.instance_id), c, now)}


def _instance_rows(
    raw: Conn, commits: Sequence[OrchestrationCommit], more: str = ""
) -> dict[str, tuple[object, ...]]:
    """By instance id: lease owner, lease end, execution id, history length, and the
    columns `more` names (a constant) of the commits' instances."""
    rows: dict[str, tuple[object, ...]] = {}
    for batch in _batches([c.item.instance_id for c in commits]):
        marks = ", ".join("?" * len(batch))
        for iid, *row in raw.execute(
            "SELECT instance_id, lease_owner, lease_expires, execution_id, history_length"  # noqa: S608
            f"{more} FROM instances WHERE instance_id IN ({marks})",
            batch,
        ):
            rows[iid] = tuple(row)
    return rows


def _write_plain(
    raw: Conn, commits: Sequence[OrchestrationCommit], now: int, take: ActivityTake | None
) -> bool:
    """Write decisions that only touch their own instance (their leases hold), a few
    statements for all; whether activities were queued for any worker to claim."""
    if not commits:
        return False
    raw.executemany(
        "DELETE FROM messages WHERE id = ?", [(i,) for c in commits for i in c.item.message_ids]
    )
    raw.executemany(
        "INSERT INTO history (instance_id, seq, events) VALUES (?, ?, ?)",
        [
            (c.item.instance_id, c.item.history_length, encode_events(c.events))
            for c in commits
            if c.events
        ],
    )
    # Outcomes, grouped by the condition on which messages wake the instance next.
    updates: dict[str, list[tuple[object, ...]]] = {}
    for c in commits:
        iid, status = c.item.instance_id, c.status.value
        length = c.item.history_length + len(c.events)
        failure = _FAILURE_ENCODER.encode(c.failure) if c.failure is not None else None
        which, args = _waking(status, length)
        row = (status, c.custom_status, c.output, failure, now, length, iid, *args, iid)
        updates.setdefault(which, []).append(row)
    for which, rows in updates.items():
        raw.executemany(
            "UPDATE instances SET status = ?, custom_status = ?, output = ?, failure = ?,"  # noqa: S608 - `which` is a constant
            " updated_at = ?, history_length = ?, lease_owner = NULL, lease_expires = NULL,"
            " wake_at = (SELECT MIN(COALESCE(visible_at, 0)) FROM messages"
            f" WHERE instance_id = ? AND {which}) WHERE instance_id = ?",
            rows,
        )
    raw.executemany(
        "DELETE FROM messages WHERE instance_id = ?",  # no message wakes a finished instance
        [(c.item.instance_id,) for c in commits if c.status.value in _TERMINAL and not _failed(c)],
    )
    return _add_activities(raw, commits, now, take)


def _failed(commit: OrchestrationCommit) -> bool:
    return commit.status is OrchestrationStatus.FAILED  # (what it keeps waits for a rewind)


def _add_activities(
    raw: Conn, commits: Sequence[OrchestrationCommit], now: int, take: ActivityTake | None
) -> bool:
    """Insert the activities the decisions schedule, with ids chosen here (the transaction
    holds the write lock), leasing to `take` as many as it has room for."""
    wanted = [(c, a) for c in commits for a in c.activities]
    if not wanted:
        return False
    last = raw.execute(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'activities'), 0),"
        " COALESCE((SELECT MAX(id) FROM activities), 0))"
    ).fetchone()[0]
    rows = []
    for n, (c, a) in enumerate(wanted):
        # Leased at once to the worker that offers (its lease end is when others may
        # claim it), or claimable by any worker from now.
        owner = None
        ready = now
        if take is not None and n < take.limit - len(take.items):
            owner, ready = take.owner, now + round(take.lease_seconds * 1e6)
        item = c.item
        rows.append((last + 1 + n, item.instance_id, item.execution_id, a.task_id, a.name,
                     a.attempt, ready, owner))  # fmt: skip
    added = raw.executemany(
        "INSERT OR IGNORE INTO activities (id, instance_id, execution_id, task_id, name,"
        " attempt, ready_at, lease_owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    kept: Sequence[int] = range(len(rows))
    if added.rowcount != len(rows):  # some were waiting already (a rewind asks again)
        present: set[int] = set()
        for batch in _batches([r[0] for r in rows]):
            marks = ", ".join("?" * len(batch))
            query = f"SELECT id FROM activities WHERE id IN ({marks})"  # noqa: S608 - marks only
            present |= {r[0] for r in raw.execute(query, batch)}
        kept = [n for n, r in enumerate(rows) if r[0] in present]
    raw.executemany(
        "INSERT INTO activity_inputs (id, input, trace) VALUES (?, ?, ?)",
        [(rows[n][0], wanted[n][1].input, wanted[n][0].trace) for n in kept],
    )
    queued = False
    for n in kept:
        (aid, iid, execution_id, task_id, name, attempt, _, owner) = rows[n]
        if take is not None and owner is not None:
            row = (aid, iid, execution_id, task_id, name, wanted[n][1].input, attempt)
            take.items.append(activity_from_row(row, owner, wanted[n][0].trace))
        else:
            queued = True
    return queued


def _commit(raw: Conn, commit: OrchestrationCommit, now: int, take: ActivityTake | None) -> bool:
    item = commit.item
    iid = item.instance_id
    row = raw.execute(
        "SELECT lease_owner, lease_expires, execution_id, history_length FROM instances"
        " WHERE instance_id = ?",
        (iid,),
    ).fetchone()
    if (
        row is None
        or row[0] != item.lease_owner
        or row[1] is None
        or row[1] <= now
        or row[2] != item.execution_id
        or row[3] != item.history_length
    ):
        raise _lost(iid)
    raw.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in item.message_ids])
    length = item.history_length
    if commit.events:
        raw.execute(
            "INSERT INTO history (instance_id, seq, events) VALUES (?, ?, ?)",
            (iid, length, encode_events(commit.events)),
        )
    failure = _FAILURE_ENCODER.encode(commit.failure) if commit.failure is not None else None
    status, new_length = commit.status.value, length + len(commit.events)
    # When it next has work, from the messages left (what this commit sends it, and a
    # new execution, are seen to below).
    which, args = _waking(status, new_length)
    raw.execute(
        "UPDATE instances SET status = ?, custom_status = ?, output = ?, failure = ?,"  # noqa: S608 - `which` is a constant
        " updated_at = ?, history_length = ?, lease_owner = NULL, lease_expires = NULL,"
        " wake_at = (SELECT MIN(COALESCE(visible_at, 0)) FROM messages"
        f" WHERE instance_id = ? AND {which}) WHERE instance_id = ?",
        (status, commit.custom_status, commit.output, failure, now, new_length, iid, *args, iid),
    )
    queued = False
    for a in commit.activities:
        # Leased at once to the worker that offers (its lease end is when others may
        # claim it), or claimable by any worker from now.
        taken = take is not None and len(take.items) < take.limit
        owner = take.owner if take is not None and taken else None
        ready = now + round(take.lease_seconds * 1e6) if take is not None and taken else now
        added = raw.execute(
            "INSERT OR IGNORE INTO activities (instance_id, execution_id, task_id, name, attempt,"
            " ready_at, lease_owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iid, item.execution_id, a.task_id, a.name, a.attempt, ready, owner),
        )
        if added.rowcount == 1:  # not already waiting (a rewind asks again for running work)
            raw.execute(
                "INSERT INTO activity_inputs (id, input, trace) VALUES (?, ?, ?)",
                (added.lastrowid, a.input, commit.trace),
            )
            if take is not None and owner is not None:
                row = (added.lastrowid, iid, item.execution_id, a.task_id, a.name, a.input)
                take.items.append(activity_from_row((*row, a.attempt), owner, commit.trace))
            else:
                queued = True
    for child in commit.children:
        _start_child(raw, child, now)
    if commit.new_execution is not None:
        _continue_as_new(raw, iid, commit.new_execution, commit.carried)
    elif commit.status.value in _TERMINAL and commit.status is not OrchestrationStatus.FAILED:
        raw.execute("DELETE FROM messages WHERE instance_id = ?", (iid,))  # (none wakes it)
    for message in commit.messages:
        _deliver(raw, message, now)  # (lowers the wake time of those it gives work)
    if commit.new_execution is not None:
        _refresh_wake(raw, iid)
    return queued


def _continue_as_new(
    raw: Conn, iid: str, start: ExecutionStarted, carried: Sequence[Message]
) -> None:
    # The next execution begins with its start, then the carried events, then what came
    # for the instance (external events, suspend/resume/terminate) in arrival order.
    kinds = ", ".join("?" * len(_INSTANCE_KINDS))
    kept = raw.execute(
        "SELECT kind, visible_at, event FROM messages"  # noqa: S608
        f" WHERE instance_id = ? AND kind IN ({kinds})"
        " ORDER BY id",
        (iid, *_INSTANCE_KINDS),
    ).fetchall()
    raw.execute("DELETE FROM messages WHERE instance_id = ?", (iid,))
    raw.execute("DELETE FROM history WHERE instance_id = ?", (iid,))
    raw.execute(
        "UPDATE instances SET execution_id = ?, status = ?, history_length = 0, output = NULL,"
        " failure = NULL WHERE instance_id = ?",
        (start.execution_id, OrchestrationStatus.PENDING.value, iid),
    )
    raw.execute("UPDATE inputs SET input = ? WHERE instance_id = ?", (start.input, iid))
    _insert_message(raw, iid, start, None)
    for m in carried:
        _insert_message(raw, iid, m.event, None)
    raw.executemany(
        "INSERT INTO messages (instance_id, kind, visible_at, event) VALUES (?, ?, ?, ?)",
        [(iid, k, v, e) for k, v, e in kept],
    )


def _start_child(raw: Conn, child: NewInstance, now: int) -> None:
    try:
        create(raw, child, now)  # raises before it writes anything
    except OrchestrationAlreadyExistsError as e:
        parent = child.start.parent
        if parent is None:
            return
        failure = ChildOrchestrationFailed(
            timestamp=dt(now), task_id=parent.task_id, failure=FailureDetails.from_exception(e)
        )
        _deliver(
            raw,
            Message(
                instance_id=parent.instance_id, event=failure, execution_id=parent.execution_id
            ),
            now,
        )
