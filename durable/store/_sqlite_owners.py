"""Which lease owners of a SQLite file are alive: a lock file per owner, held while it lives.

Every worker that claims work from a `SqliteStore` holds an exclusive `flock` on a file of
its own in the directory `<database>-owners/` (the file names the owner). The operating
system drops the lock when the process ends, however it ends: a SIGKILL, a crash, an out
of memory kill. When a store opens the database, a lock it can take belongs to an owner
that is gone: its leases are ended at once, so that a restarted worker goes on where the
dead one stopped instead of waiting for the leases to run out.

This only hastens what the leases guarantee anyway: a worker that is alive always holds its
lock (a stopped process too), so no live lease is ever cut short. Where locks do not work
(no `fcntl`, a file system without `flock`) nothing is reaped and leases run out as usual.
SQLite in WAL mode is for processes on one machine, so one machine's locks are enough.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: leases alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("durable.store.sqlite")


class OwnerLocks:
    """The lock files of one store: those it holds, and finding those nobody holds."""

    def __init__(self, database: Path) -> None:
        self.folder = database.with_name(database.name + "-owners")
        self._held: dict[str, int] = {}
        self._broken = fcntl is None

    def _file(self, owner: str) -> Path:
        # Owner names are any text: the file name is their digest, the owner its content.
        return self.folder / hashlib.sha256(owner.encode()).hexdigest()[:32]

    def hold(self, owner: str) -> None:
        """Take `owner`'s lock (once per owner), before its first lease is written."""
        if owner in self._held or self._broken:
            return
        assert fcntl is not None
        target = self._file(owner)
        temp = target.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.folder.mkdir(exist_ok=True)
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, owner.encode())
                # Renamed only once locked: a reaper never sees the file unlocked.
                os.replace(temp, target)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    temp.unlink()
                raise
        except OSError as e:
            log.warning("%s: no owner locks (%s); a dead worker's leases run out", self.folder, e)
            self._broken = True
            return
        self._held[owner] = fd

    def reap(self) -> list[tuple[str, Path, int]]:
        """The owners whose lock nobody holds: (owner, file, fd holding its lock now).

        The caller ends their leases, then passes the list to `forget`.
        """
        if self._broken or not self.folder.is_dir():
            return []
        assert fcntl is not None
        dead: list[tuple[str, Path, int]] = []
        for path in self.folder.iterdir():
            if path.suffix == ".tmp":
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue  # gone meanwhile: its owner stopped cleanly, or another reaped it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                owner = os.read(fd, 4096).decode()
            except (OSError, UnicodeDecodeError):
                os.close(fd)  # held: the owner is alive
                continue
            if owner in self._held or path != self._file(owner):
                os.close(fd)
                continue
            dead.append((owner, path, fd))
        return dead

    def forget(self, dead: list[tuple[str, Path, int]], unlink: bool = True) -> None:
        """Let go of what `reap` returned; with `unlink`, the owners are reaped for good."""
        for _, path, fd in dead:
            if unlink:
                with contextlib.suppress(OSError):
                    path.unlink()
            os.close(fd)

    def release(self) -> None:
        """Drop every lock this store holds (a clean close: the leases end their own way)."""
        held, self._held = self._held, {}
        for owner, fd in held.items():
            with contextlib.suppress(OSError):
                self._file(owner).unlink()
            os.close(fd)


def end_leases(raw: Any, owners: list[str], now: int) -> int:
    """End every lease of `owners` (gone for good) at `now`; the number of leases ended."""
    ended = 0
    for owner in owners:
        ended += raw.execute(
            "UPDATE instances SET lease_expires = ? WHERE lease_owner = ? AND lease_expires > ?",
            (now, owner, now),
        ).rowcount
        ended += raw.execute(
            "UPDATE activities SET ready_at = ? WHERE lease_owner = ? AND ready_at > ?",
            (now, owner, now),
        ).rowcount
        raw.execute(  # the flow slots its running activities held (holder: "id:owner")
            "UPDATE flow_slots SET expires = ?"
            " WHERE substr(holder, instr(holder, ':') + 1) = ? AND expires > ?",
            (now, owner, now),
        )
    return ended
