"""Alembic, driven from code: `scbundle db upgrade` and the "is the schema current" check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from scbundle.core.errors import DatabaseError
from scbundle.db.session import Database, _short

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(db: Database) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db.engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory(str(MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str]:
    """Bring the schema to ``revision``; returns (before, after)."""
    db.check()
    before = current_revision(db)
    try:  # one transaction (migrations/env.py): a failure leaves the schema where it was
        command.upgrade(_alembic_config(db), revision)
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {db.display_url}: upgrade to {revision} failed, nothing changed: {_short(err)}") from err
    return before, current_revision(db) or ""


def require_current(db: Database) -> None:
    db.check()
    have = current_revision(db)
    if have != head_revision():
        raise DatabaseError(
            f"database {db.display_url} is at schema {have or 'none (empty)'}, "
            f"not {head_revision()}: run `scbundle db upgrade`"
        )
