"""The journal: one row an event, written in the caller's session, so an event is committed
with the change it tells of, or not at all (a rolled-back transition leaves none).

Who made it: the host, the pid and user@host of this process, and whether it runs under the
daemon (`origin(daemon=True)`, set once by `scbundle daemon`). The command is the transition's
``by`` (define, prepare, exec, poll, advance, revert, retire, cancel) or link / tasks.

The journal is also an outbox: ``id`` only grows, so a reader remembers the last id it
handled and reads ``after(last)``. A transaction commits its events when it commits, so on a
server with concurrent writers a smaller id may become visible after a larger one; a reader
that must see every event once re-reads a short window below its last id and skips the ids
it has handled (``since_id`` minus a margin)."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.app import utcnow
from scbundle.db.models import JournalEvent


@dataclass(frozen=True)
class ReplayCounts:
    """What a poll replayed: components full, failed (error), abandoned, and refused."""

    good: int = 0
    failed: int = 0
    abandoned: int = 0
    refused: int = 0


@dataclass
class _Origin:
    daemon: bool = False


_ORIGIN = _Origin()


def origin(*, daemon: bool) -> None:
    """Mark this process's events as the daemon's (or not)."""
    _ORIGIN.daemon = daemon


@dataclass(frozen=True)
class _Actor:
    command: str
    who: str


_ACTOR: ContextVar[_Actor | None] = ContextVar("scbundle_journal_actor", default=None)


@contextmanager
def acting(command: str, who: str) -> Iterator[None]:
    """Events recorded inside the block (in this thread or task) are ``command``'s, done by
    ``who``: the web console runs the CLI's own code for a person it authenticated."""
    token = _ACTOR.set(_Actor(command, who))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def whoami() -> str:
    """user@host of this process (the uid when the user has no name here), or the person
    ``acting`` names."""
    actor = _ACTOR.get()
    if actor is not None:
        return actor.who
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def record(session: Session, *, kind: str, command: str, message: str | None = None, remote_id: int | None = None,
           label: str | None = None, stage: str | None = None, site: str | None = None, src: str | None = None,
           dst: str | None = None, fault: int | None = None, counts: ReplayCounts | None = None) -> JournalEvent:
    """Add one event to ``session`` (it is written when the session flushes, kept when it commits)."""
    actor = _ACTOR.get()
    if actor is not None:
        command = actor.command
    ev = JournalEvent(
        at=utcnow(), kind=kind, command=command[:16], daemon=_ORIGIN.daemon, remote_id=remote_id, label=label,
        stage=stage, site=site, src=None if src is None else str(src), dst=None if dst is None else str(dst),
        fault=fault, message=message[:2000] if message else None, host=socket.gethostname()[:128], pid=os.getpid(),
        who=whoami()[:192],
        n_good=counts.good if counts else None, n_failed=counts.failed if counts else None,
        n_abandoned=counts.abandoned if counts else None, n_refused=counts.refused if counts else None,
    )  # fmt: skip
    session.add(ev)
    return ev


@dataclass(frozen=True)
class Event:
    """One journal row, as the history command and readers see it."""

    id: int
    at: datetime
    kind: str
    command: str
    daemon: bool
    remote_id: int | None
    label: str | None
    stage: str | None
    site: str | None
    src: str | None
    dst: str | None
    fault: int | None
    message: str | None
    counts: ReplayCounts | None
    host: str
    pid: int
    who: str


def _event(row: JournalEvent) -> Event:
    counts = None
    if row.n_good is not None:
        counts = ReplayCounts(row.n_good, row.n_failed or 0, row.n_abandoned or 0, row.n_refused or 0)
    return Event(row.id, row.at, row.kind, row.command, bool(row.daemon), row.remote_id, row.label, row.stage, row.site,
                 row.src, row.dst, row.fault, row.message, counts, row.host, row.pid, row.who)  # fmt: skip


def events(session: Session, *, label: str | None = None, remote_id: int | None = None, since: datetime | None = None,
           after_id: int | None = None, kind: str | None = None, limit: int | None = None) -> list[Event]:
    """Events oldest first (by id); ``limit``: the newest ``limit`` of them, still oldest first."""
    q = select(JournalEvent)
    if label is not None:
        q = q.where(JournalEvent.label == label)
    if remote_id is not None:
        q = q.where(JournalEvent.remote_id == remote_id)
    if since is not None:
        q = q.where(JournalEvent.at >= since)
    if after_id is not None:
        q = q.where(JournalEvent.id > after_id)
    if kind is not None:
        q = q.where(JournalEvent.kind == kind)
    if limit is not None:
        rows = list(session.scalars(q.order_by(JournalEvent.id.desc()).limit(limit)))
        rows.reverse()
    else:
        rows = list(session.scalars(q.order_by(JournalEvent.id)))
    return [_event(r) for r in rows]


def last_link_event(session: Session, site: str, host: str) -> Event | None:
    """The newest link event of ``site``'s front end ``host`` (its message starts "host: ")."""
    rows = session.scalars(
        select(JournalEvent).where(JournalEvent.kind == "link", JournalEvent.site == site,
                                   JournalEvent.message.startswith(f"{host}: ", autoescape=True))
        .order_by(JournalEvent.id.desc()).limit(1)
    ).all()  # fmt: skip
    return _event(rows[0]) if rows else None


def last_hold_event(session: Session, site: str, step: str) -> Event | None:
    """The newest throttle event of ``step`` on ``site`` (dst "held" or "free")."""
    rows = session.scalars(
        select(JournalEvent).where(JournalEvent.kind == "hold", JournalEvent.site == site, JournalEvent.command == step)
        .order_by(JournalEvent.id.desc()).limit(1)
    ).all()  # fmt: skip
    return _event(rows[0]) if rows else None


def throttle_changed(session: Session, *, site: str, step: str, held: str | None, label: str | None = None) -> bool:
    """Journal that a throttle started holding ``step`` back on ``site`` (``held``: its message)
    or let it go (None), when that changes what the last such event said; True if one was added.
    One event a hold, not one a pass: a notifier measures how long work has been held back."""
    last = last_hold_event(session, site, step)
    was_held = last is not None and last.dst == "held"
    if (held is not None) == was_held:
        return False
    record(session, kind="hold", command=step, site=site, label=label, src="free" if held else "held",
           dst="held" if held else "free", message=held)  # fmt: skip
    return True


def from_row(row: JournalEvent) -> Event:
    """A journal row as the frozen Event readers see (for a reader's own query)."""
    return _event(row)
