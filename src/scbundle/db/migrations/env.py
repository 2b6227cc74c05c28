"""Alembic environment: the engine comes from scbundle (config.attributes['engine']).

The whole upgrade is one transaction: it reaches the target revision or changes nothing (on
SQLite and PostgreSQL; MariaDB/MySQL commit each CREATE and ALTER at once, so there each
finished revision stays, and db.migrate.upgrade says so when one fails).

On SQLite a batch alter rebuilds a table (create a copy, copy the rows, drop the old table,
rename the copy). With PRAGMA foreign_keys=ON (every scbundle connection) dropping the old
table deletes the rows that reference it (ON DELETE CASCADE) or is refused (FOREIGN KEY
constraint failed), so the migrations run with foreign keys off, as Alembic's batch
documentation says ("Dealing with Referencing Foreign Keys"). SQLite ignores that pragma inside
a transaction, so it is set before the transaction begins, and PRAGMA foreign_key_check must
find no broken reference before the transaction commits; the connection gets foreign keys back
whatever happens, before it returns to the pool.
"""

from alembic import context
from sqlalchemy import Connection

from scbundle.core.errors import DatabaseError
from scbundle.db.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # pragma: no cover - `alembic` run by hand
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    """Set PRAGMA foreign_keys on the driver's connection: outside any transaction (SQLAlchemy's
    autobegin would open one first, and there the pragma is a no-op)."""
    raw = connection.connection.driver_connection
    assert raw is not None and not connection.in_transaction()
    raw.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    got = raw.execute("PRAGMA foreign_keys").fetchone()
    if got is None or bool(got[0]) != on:
        raise DatabaseError(f"SQLite did not turn foreign keys {'on' if on else 'off'} for the migration")


def _broken_references(connection: Connection) -> list:
    return list(connection.exec_driver_sql("PRAGMA foreign_key_check").all())


def _check_references(connection: Connection, before: int) -> None:
    """No broken reference the database did not already have (an old one is no reason to
    refuse an upgrade: that would leave the operator no way forward)."""
    broken = _broken_references(connection)
    if len(broken) > before:
        shown = ", ".join(f"{t} rowid {rowid} -> {parent}" for t, rowid, parent, _ in broken[:5])
        raise DatabaseError(
            f"the migration would leave {len(broken) - before} broken reference(s) ({shown}); nothing was changed"
        )


with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys(connection, False)
    try:
        with connection.begin():
            before = len(_broken_references(connection)) if sqlite else 0
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
            context.run_migrations()
            if sqlite:
                _check_references(connection, before)
    finally:
        if sqlite and not connection.invalidated:
            _sqlite_foreign_keys(connection, True)
