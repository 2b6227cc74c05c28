"""One session wrapper that commits or rolls back, and converts database errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DatabaseError


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - exercised via connect
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Database:
    """Engine + sessions for one database URL."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseError(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
        self.display_url = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            parent = Path(parsed.database).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DatabaseError(f"database {self.display_url}: cannot create {parent}: {err.strerror}") from None
        try:
            self.engine: Engine = create_engine(parsed, future=True)
        except (NoSuchModuleError, ImportError) as err:
            raise DatabaseError(f"database {self.display_url}: no driver: {err}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def check(self) -> None:
        """Open a connection once, so a bad URL fails here with one clear line."""
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as err:
            raise DatabaseError(f"cannot open database {self.display_url}: {_short(err)}") from None

    def table_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return inspect(conn).get_table_names()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back on any exception."""
        session = self._factory()
        try:
            yield session
            session.commit()
        except DBAPIError as err:
            session.rollback()
            raise DatabaseError(f"database {self.display_url}: {_short(err)}") from err
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def _short(err: SQLAlchemyError) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__
