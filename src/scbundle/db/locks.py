"""Database-wide write locks: define and advance take turns on every backend."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

WRITE_LOCK_KEY = 0x5CB0AD  # PostgreSQL advisory lock: one define or advance at a time


def take_write_lock(session: Session) -> None:
    """Serialise defines and advances: the first statement of the transaction takes the lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
    else:
        # SQLite: a write (even of no row) takes the database's write lock now, waiting its
        # turn (busy_timeout); a session that began IMMEDIATE holds it already
        session.execute(text("UPDATE remote_run SET advanced = advanced WHERE 0 = 1"))
