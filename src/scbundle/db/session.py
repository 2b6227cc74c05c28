"""One session wrapper that commits or rolls back, and converts database errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scbundle.core.errors import DatabaseError
from scbundle.core.private import make_private_file
from scbundle.core.secrets import hide_password


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - exercised via connect
    # the driver never emits BEGIN itself: _sqlite_begin does (SQLAlchemy's pysqlite recipe
    # "Serializable isolation / Savepoints / Transactional DDL")
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


MYSQL_BACKENDS = ("mysql", "mariadb")  # SQLAlchemy's backend names for MySQL and MariaDB URLs
#: set in a pooled connection's ``info`` when it takes a MySQL named lock that lasts as long as
#: the transaction (db.locks.take_write_lock): released when the connection goes back to the pool
NAMED_LOCKS_HELD = "scbundle_named_locks"


def _release_named_locks(dbapi_conn, record) -> None:
    """MySQL/MariaDB named locks belong to the connection, not to the transaction: give back
    those a transaction took before another checks the connection out (the session has
    committed or rolled back by now). A connection that cannot is closed: the server drops its
    locks with it."""
    if record is None or not record.info.pop(NAMED_LOCKS_HELD, False):
        return
    try:
        cur = dbapi_conn.cursor()
        cur.execute("DO RELEASE_ALL_LOCKS()")
        cur.close()
    except Exception:
        record.invalidate()


READ_ONLY = "scbundle_read_only"  # execution option of the engine behind read_session()


def _sqlite_begin(conn) -> None:
    """Every transaction that may write takes SQLite's write lock at BEGIN (BEGIN IMMEDIATE): it
    waits its turn (busy_timeout) up front, and what it reads cannot change before it writes.
    A deferred transaction that reads first fails at its first write, without waiting, when
    another process wrote in between. Read-only sessions begin deferred and lock out no one."""
    conn.exec_driver_sql("BEGIN DEFERRED" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


class Database:
    """Engine + sessions for one database URL."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise DatabaseError(f"database URL {hide_password(url)!r} is not a valid SQLAlchemy URL") from None
        self.display_url = hide_password(parsed.render_as_string(hide_password=True))
        if "@" in (parsed.host or ""):  # "u:p@ss@host": SQLAlchemy would send "p" and try host "ss@host"
            raise DatabaseError(f"database URL {hide_password(url)!r}: its password holds an '@'; write it as %40")
        self._password = parsed.password  # kept out of every message below
        self.backend = parsed.get_backend_name()  # "sqlite", "postgresql", ...
        #: the SQLite database file (None for other backends and in-memory databases)
        self.sqlite_file: Path | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.sqlite_file = Path(parsed.database).absolute()
            parent = Path(parsed.database).parent
            try:
                parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # private whatever the umask: SQLite gives its -wal and -shm files the database
                # file's own mode, so they are 0600 as well
                if not parsed.query.get("uri"):
                    make_private_file(self.sqlite_file)
                    for suffix in ("-wal", "-shm", "-journal"):  # left 0644 by an earlier scbundle
                        make_private_file(self.sqlite_file.with_name(self.sqlite_file.name + suffix), create=False)
            except OSError as err:
                raise DatabaseError(f"database {self.display_url}: cannot create {err.filename or parent}: {err.strerror}") from None
        # a server restarted under a long-lived process (the daemon) costs it nothing: stale
        # pooled connections are replaced at checkout
        options = {} if self.backend == "sqlite" else {"pool_pre_ping": True}
        if self.backend in MYSQL_BACKENDS:
            # READ COMMITTED, as PostgreSQL's default: every statement sees what was committed
            # before it, so a read after a claim or a lock sees the holder's last write (InnoDB's
            # REPEATABLE READ would keep the snapshot of the transaction's first read), and
            # FOR UPDATE locks the rows it reads, not the gaps between them
            options["isolation_level"] = "READ COMMITTED"
        try:
            self.engine: Engine = create_engine(parsed, future=True, **options)
        except (NoSuchModuleError, ImportError) as err:
            raise DatabaseError(f"database {self.display_url}: no driver: {err}") from None
        if self.backend in MYSQL_BACKENDS:
            event.listen(self.engine, "checkin", _release_named_locks)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_factory = sessionmaker(self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)

    def check(self) -> None:
        """Open a connection once, so a bad URL fails here with one clear line."""
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as err:
            raise DatabaseError(f"cannot open database {self.display_url}: {_short(err, self._password)}") from None

    def table_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return inspect(conn).get_table_names()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back on any exception."""
        with self._session(self._factory) as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it takes no write lock (others keep writing)."""
        with self._session(self._read_factory) as session:
            yield session

    @contextmanager
    def _session(self, factory: sessionmaker) -> Iterator[Session]:
        session = factory()
        try:
            yield session
            session.commit()
        except DBAPIError as err:
            session.rollback()
            raise DatabaseError(f"database {self.display_url}: {_short(err, self._password)}") from err
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def _short(err: SQLAlchemyError, password: str | None = None) -> str:
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err)
    text = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if password:  # a driver may quote its connection string back
        text = text.replace(password, "***")
    return hide_password(text)
