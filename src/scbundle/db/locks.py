"""Database-wide write locks: define and advance take turns on every backend."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from scbundle.core.errors import DatabaseError
from scbundle.db.session import NAMED_LOCKS_HELD

WRITE_LOCK_KEY = 0x5CB0AD  # PostgreSQL advisory lock: one define or advance at a time
#: seconds a MySQL/MariaDB GET_LOCK waits for a lock another process holds (a negative timeout,
#: MySQL's "forever", gives NULL on MariaDB): a year, as PostgreSQL's pg_advisory_lock waits
MYSQL_LOCK_WAIT = 365 * 24 * 3600


def mysql_lock_name(conn: Connection, name: str) -> str:
    """A MySQL/MariaDB named lock for ``name`` in this database. Named locks are server-wide,
    so the name carries the database (hashed: names are limited to 64 characters)."""
    database = conn.exec_driver_sql("SELECT DATABASE()").scalar() or ""
    key = hashlib.sha256(database.encode()).hexdigest()[:16]
    out = f"scbundle.{key}.{name}"
    if len(out) > 64:
        raise ValueError(f"named lock {out!r} is longer than MySQL's 64 characters")
    return out


def mysql_get_lock(conn: Connection, name: str, wait: float) -> bool:
    """GET_LOCK on ``conn``'s session: True held, False another session holds it (``wait``
    seconds went by); a NULL (an error on the server, e.g. the session was killed) raises."""
    got = conn.execute(text("SELECT GET_LOCK(:name, :wait)"), {"name": name, "wait": wait}).scalar()
    if got is None:
        raise DatabaseError(f"GET_LOCK({name!r}) failed on the server (NULL)")
    return bool(got)


def take_write_lock(session: Session) -> None:
    """Serialise defines and advances: the first statement of the transaction takes the lock."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
    elif dialect in ("mysql", "mariadb"):
        # a named lock lives as long as the connection: the connection's pool check-in gives it
        # back once the transaction has committed or rolled back (db.session)
        conn = session.connection()
        conn.connection.info[NAMED_LOCKS_HELD] = True
        if not mysql_get_lock(conn, mysql_lock_name(conn, "write"), MYSQL_LOCK_WAIT):
            raise DatabaseError("the database write lock (define / advance) was not free within a year")
    else:
        # SQLite: a write (even of no row) takes the database's write lock now, waiting its
        # turn (busy_timeout); a session that began IMMEDIATE holds it already
        session.execute(text("UPDATE remote_run SET advanced = advanced WHERE 0 = 1"))
