"""Claims: one process at a time works on a run, and a process that dies leaves no claim behind.

Several people and hosts drive one database (the field notes' production.db: "the database is
first locked, the info is read, and then the database is updated"). prepare, exec, poll,
revert and retire each claim a run before working on it. One model on every backend:

- the claim is a lock the process holds for as long as it works on the run, and that goes
  away with the process: on SQLite an exclusive ``flock`` on a lock file per run beside the
  database file (the kernel drops it); on PostgreSQL a session-level advisory lock
  (``pg_try_advisory_lock``) on a connection of the claim's own (the server drops it with the
  connection); on MariaDB / MySQL a named lock (``GET_LOCK(name, 0)``), session-level as well,
  on a connection of the claim's own (gone with the connection), its name carrying the
  database's (named locks are server-wide). Another process skips a claimed run at once.
- the state is read again once the claim is held, and every write is its own short
  transaction (``claim.session()``, BEGIN IMMEDIATE on SQLite) that re-reads the run's state
  before changing it (compare-and-set, ``db.runs.get_run(..., lock=True)``). So a step's writes
  commit at the same moments on every backend, and no transaction stays open while exec pushes
  files for minutes; each step is idempotent, so a process killed between two writes leaves a
  run the next one finishes.

A throttle that counts runs per site (max_in_flight, max_prepared) must count and add under one
lock, or two processes both see room for one more: ``site_lock`` names a per-site lock taken
before the run is claimed and held as long as the claim (SQLite: a flock on a per-site lock
file; PostgreSQL: a session-level advisory lock on the claim's connection; MariaDB: a named lock
on it). Only configured
throttles take it, so by default claims on one site never wait for each other.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from scbundle.core.errors import StateError
from scbundle.core.private import open_private, private_dir
from scbundle.db.locks import MYSQL_LOCK_WAIT, mysql_get_lock, mysql_lock_name
from scbundle.db.models import RemoteRun
from scbundle.db.runs import get_run
from scbundle.db.session import Database


class ClaimBusy(StateError):
    """Another process is working on this run right now."""


@dataclass
class Claim:
    """A run claimed by this process: ``run`` as read once the claim was taken."""

    run: RemoteRun
    _db: Database

    def session(self) -> AbstractContextManager[Session]:
        """A short write transaction for the claimed run (committed at the end of the block);
        re-read the run in it (``get_run(..., lock=True)``) before changing its state."""
        return self._db.session()


@contextmanager
def claim_run(db: Database, remote_id: int, states: Sequence[str], *, site_lock: str | None = None) -> Iterator[Claim | None]:
    """Claim run ``remote_id`` if it is in one of ``states`` and no other process holds it;
    yields the Claim, or None (held elsewhere, gone, or in another state: see ``unclaimed``)."""
    server = {"postgresql": PG_LOCKS, "mysql": MYSQL_LOCKS, "mariadb": MYSQL_LOCKS}.get(db.backend)
    claim = partial(_claim_session_locks, server) if server is not None else _claim_file
    with claim(db, remote_id, list(states), site_lock) as c:
        yield c


def unclaimed(db: Database, remote_id: int, states: Sequence[str], step: str) -> StateError:
    """Why ``claim_run`` gave None: the run's state (StateError), or another process (ClaimBusy)."""
    with db.read_session() as s:
        try:
            get_run(s, remote_id, states, step)
        except StateError as err:
            return err
    return ClaimBusy(f"remote_id {remote_id}: another process is working on it ({step} skipped it); try again later")


def _claimed(db: Database, remote_id: int, states: Sequence[str]) -> Claim | None:
    """The run read again now that the claim is ours (None: it moved to another state meanwhile)."""
    with db.read_session() as s:
        run = s.scalars(select(RemoteRun).where(RemoteRun.remote_id == remote_id, RemoteRun.state.in_(states))).first()
    return Claim(run, db) if run is not None else None


# --- PostgreSQL and MariaDB / MySQL: session-level locks on the claim's own connection ----------


@dataclass(frozen=True)
class _ServerLocks:
    """How one server takes a claim's locks on a connection's session, and gives them back."""

    take_site: Callable[[Connection, str], None]  # waits its turn
    try_run: Callable[[Connection, int], bool]  # False at once when another session holds it
    release_all: Callable[[Connection], None]


def _pg_key(name: str):
    return func.hashtextextended(f"scbundle:{name}", 0)


def _pg_take_site(conn: Connection, site: str) -> None:
    conn.execute(select(func.pg_advisory_lock(_pg_key(f"site:{site}"))))


def _pg_try_run(conn: Connection, remote_id: int) -> bool:
    return bool(conn.execute(select(func.pg_try_advisory_lock(_pg_key(f"run:{remote_id}")))).scalar())


def _pg_release_all(conn: Connection) -> None:
    conn.execute(select(func.pg_advisory_unlock_all()))


PG_LOCKS = _ServerLocks(_pg_take_site, _pg_try_run, _pg_release_all)  # advisory locks


def _mysql_take_site(conn: Connection, site: str) -> None:
    if not mysql_get_lock(conn, mysql_lock_name(conn, f"site.{_site_key(site)}"), MYSQL_LOCK_WAIT):
        raise ClaimBusy(f"site {site}: its throttle lock was not free within a year")


def _mysql_try_run(conn: Connection, remote_id: int) -> bool:
    return mysql_get_lock(conn, mysql_lock_name(conn, f"run.{remote_id}"), 0)


def _mysql_release_all(conn: Connection) -> None:
    conn.exec_driver_sql("DO RELEASE_ALL_LOCKS()")


MYSQL_LOCKS = _ServerLocks(_mysql_take_site, _mysql_try_run, _mysql_release_all)  # named locks


@contextmanager
def _claim_session_locks(
    locks: _ServerLocks, db: Database, remote_id: int, states: list[str], site_lock: str | None
) -> Iterator[Claim | None]:
    conn = db.engine.connect()  # the claim's own connection: its session holds the locks
    try:
        if site_lock is not None:
            locks.take_site(conn, site_lock)
        got = locks.try_run(conn, remote_id)
        conn.commit()
        if not got:
            yield None
            return
        yield _claimed(db, remote_id, states)
    finally:
        try:  # a pooled connection keeps session locks: give them back before it goes back
            locks.release_all(conn)
            conn.commit()
        except Exception:
            conn.invalidate()  # the server drops the session, and its locks with it
        conn.close()


def _site_key(name: str) -> str:
    """A site name as a short part of a lock name (within the 64 characters of MySQL's)."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


# --- SQLite (and any backend without row locks): lock files ------------------------------------


def claims_dir(db: Database) -> Path:
    """Lock files live beside the database file (``<db>.claims/``), so every process that opens
    the database finds them; an in-memory database has one process, and a private directory."""
    if db.sqlite_file is not None:
        return db.sqlite_file.with_name(db.sqlite_file.name + ".claims")
    if not hasattr(db, "_claims_tmp"):
        db._claims_tmp = tempfile.mkdtemp(prefix="scbundle-claims-")  # type: ignore[attr-defined]
    return Path(db._claims_tmp)  # type: ignore[attr-defined]


@contextmanager
def _claim_file(db: Database, remote_id: int, states: list[str], site_lock: str | None) -> Iterator[Claim | None]:
    folder = claims_dir(db)
    # 0700 whatever the umask, and no link: each lock file in it is checked as it is opened too
    private_dir(folder, what="claims directory", ancestors=False, loose="tighten")
    with _file_lock(folder / f"site-{_safe(site_lock)}.lock", block=True) if site_lock else nullcontext(True):
        with _file_lock(folder / f"run-{remote_id}.lock", block=False) as held:
            if not held:
                yield None
                return
            yield _claimed(db, remote_id, states)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@contextmanager
def _file_lock(path: Path, *, block: bool) -> Iterator[bool]:
    """An exclusive flock on ``path``; yields False at once when ``block`` is False and another
    open file holds it. The holder unlinks the file before it lets go, so the directory stays
    clean; a process that locked a file just unlinked tries again on the new one."""
    while True:
        # never through a link, never another's file: it is truncated and written below
        fd = open_private(path, what="claim lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())  # who holds it, for a person looking
        yield True
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
