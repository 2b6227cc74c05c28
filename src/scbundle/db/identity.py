"""Which database this is: its installation id (a row migration 0005 made) and, for SQLite, the
file's identity on disk. Run directories and job names carry the id; a daemon checks before
each step that the database it started with is still the one it writes to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from scbundle.core.errors import DatabaseError
from scbundle.db.models import Installation
from scbundle.db.session import Database


class DatabaseReplaced(DatabaseError):
    """The database was deleted, or replaced by another one, under a running process."""


@dataclass(frozen=True)
class DatabaseIdentity:
    installation_id: str
    file: tuple[int, int] | None = None  # (st_dev, st_ino) of the SQLite file


def _read_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Installation.installation_id)))


def installation_id(session: Session) -> str:
    """This database's installation id (one clear error when it has none, or several)."""
    ids = _read_ids(session)
    if len(ids) != 1:
        raise DatabaseError(
            "the database has no installation id: run `scbundle db upgrade`" if not ids
            else f"the database has {len(ids)} installation ids ({', '.join(ids)}), not one"
        )  # fmt: skip
    return ids[0]


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DatabaseError(f"cannot stat database file {path}: {err.strerror}") from None
    return st.st_dev, st.st_ino


def identity(db: Database) -> DatabaseIdentity:
    file = None
    if db.sqlite_file is not None:
        file = _file_id(db.sqlite_file)
        if file is None:
            raise DatabaseReplaced(f"database file {db.sqlite_file} does not exist")
    with db.read_session() as s:
        return DatabaseIdentity(installation_id(s), file)


def check_same(db: Database, known: DatabaseIdentity) -> None:
    """Raise DatabaseReplaced when ``db`` is no longer the database ``known`` describes: the
    SQLite file is gone or is another file (an open connection would go on writing into the
    deleted one, and a new one would create an empty database), or the installation id read
    now differs or is gone. A database that cannot be reached raises DatabaseError (a server
    restarting: the caller may wait and ask again)."""
    who = f"installation {known.installation_id}"
    if db.sqlite_file is not None:
        now = _file_id(db.sqlite_file)
        if now is None:
            raise DatabaseReplaced(f"database file {db.sqlite_file} ({who}) was deleted")
        if now != known.file:
            raise DatabaseReplaced(f"database file {db.sqlite_file} ({who}) was replaced by another file")
    try:
        with db.read_session() as s:
            ids = _read_ids(s)
    except DatabaseError as err:
        try:  # reachable, and the table is gone: another database
            with db.engine.connect() as conn:
                gone = not inspect(conn).has_table(Installation.__tablename__)
        except SQLAlchemyError:
            raise err from None
        if not gone:
            raise
        raise DatabaseReplaced(f"database {db.display_url} ({who}) has no installation table any more") from None
    if ids != [known.installation_id]:
        now_is = ", ".join(ids) if ids else "none"
        raise DatabaseReplaced(f"database {db.display_url} was {who}, now its installation id is {now_is}")
