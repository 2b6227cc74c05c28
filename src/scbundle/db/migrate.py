"""Alembic, driven from code: `scbundle db upgrade`, `scbundle db status` and the "is the
schema current" check.

The engine's history lives in ``db/migrations/versions``. A stage plugin ships its tables as an
Alembic branch of its own: a package of revision files named by an entry point of the group
``scbundle.migrations`` (``rawsum = "scbundle_rawsum.migrations"``), whose first revision has
``down_revision = None``, ``branch_labels = ("rawsum",)`` and ``depends_on`` the engine revision
it needs. `scbundle db upgrade` brings the engine and every installed plugin's branch to their
heads in one transaction; the schema is current when every head is applied.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicCommandError
from sqlalchemy.exc import SQLAlchemyError

from scbundle.core.errors import ConfigError, DatabaseError
from scbundle.db.models import Base
from scbundle.db.session import MYSQL_BACKENDS, Database, _short

MIGRATIONS = Path(__file__).parent / "migrations"
GROUP = "scbundle.migrations"
ENGINE = "scbundle"

#: branches that ship inside scbundle (also found without installed metadata, from a source tree)
BUILTIN: dict[str, str] = {"commands": "scbundle.stages.commands.migrations"}


@dataclass(frozen=True)
class Branch:
    name: str  # the entry point's name = the branch label ("scbundle" for the engine)
    location: Path  # the directory of its revision files
    dist: str  # the distribution that ships it


def branches() -> list[Branch]:
    """The engine's history and every installed plugin's branch (ConfigError names a plugin
    whose migrations cannot be found)."""
    out = [Branch(ENGINE, MIGRATIONS / "versions", "scbundle")]
    found: dict[str, tuple[str, str]] = {name: (value, "scbundle") for name, value in BUILTIN.items()}
    for ep in md.entry_points(group=GROUP):
        found.setdefault(ep.name, (ep.value, ep.dist.name if ep.dist is not None else "an unnamed distribution"))
    for name, (value, dist) in sorted(found.items()):
        try:
            module = importlib.import_module(value)
        except Exception as err:  # a plugin's import error, of any kind
            raise ConfigError(f"migrations {name!r} ({value} from {dist}) cannot be loaded: {type(err).__name__}: {err}") from err
        paths = list(getattr(module, "__path__", [])) or [str(Path(module.__file__ or "").parent)]
        out.append(Branch(name, Path(paths[0]), dist))
    return out


def _alembic_config(db: Database | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(str(b.location) for b in branches()))
    if db is not None:
        cfg.attributes["engine"] = db.engine
    return cfg


@functools.cache
def script() -> ScriptDirectory:
    """Every branch's revisions (read once a process: the installed plugins do not change)."""
    return ScriptDirectory.from_config(_alembic_config())


def head_revisions() -> set[str]:
    return set(script().get_heads())


def head_revision() -> str:
    """The engine's own head."""
    heads = [h for h in script().get_heads() if _branch_of(h) == ENGINE]
    assert len(heads) == 1, heads
    return heads[0]


def _branch_of(revision: str) -> str:
    """The branch a revision belongs to: its base's branch label (the engine's has none)."""
    sd = script()
    rev = sd.get_revision(revision)
    while rev is not None and rev.down_revision:
        down = rev.down_revision
        rev = sd.get_revision(down if isinstance(down, str) else down[0])
    labels = rev.branch_labels if rev is not None else None
    return next(iter(sorted(labels))) if labels else ENGINE


def current_heads(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _applied(heads: set[str]) -> set[str]:
    """Every revision the database has: its heads and all they stand on (down revisions and
    dependencies: a plugin branch's head that depends on the engine's 0005 stands alone in
    alembic_version, and 0005 is applied)."""
    sd = script()
    out: set[str] = set()
    todo = list(heads)
    while todo:
        rev = sd.get_revision(todo.pop())
        if rev is None or rev.revision in out:
            continue
        out.add(rev.revision)
        downs = rev.down_revision or ()
        todo += [downs] if isinstance(downs, str) else list(downs)
        deps = rev.dependencies or ()
        for dep in [deps] if isinstance(deps, str) else deps:
            todo += [r.revision for r in sd.revision_map.get_revisions(dep) if r is not None]
    return out


def _newest(revisions: set[str]) -> str | None:
    """The one of ``revisions`` (one branch's) that no other stands on."""
    sd = script()
    below = set()
    for r in revisions:
        rev = sd.get_revision(r)
        downs = rev.down_revision or () if rev is not None else ()
        below.update([downs] if isinstance(downs, str) else downs)
    top = sorted(revisions - below)
    return top[0] if top else None


def _check_known(db: Database, have: set[str]) -> None:
    unknown = have - {r.revision for r in script().walk_revisions()}
    if unknown:
        raise DatabaseError(
            f"database {db.display_url} holds schema revision(s) {', '.join(sorted(unknown))} that no installed "
            "migrations know: a plugin that made them is no longer installed (install it again)"
        )


def current_revision(db: Database) -> str | None:
    """The engine's revision in the database (None: empty)."""
    have = current_heads(db)
    _check_known(db, have)
    return _newest({r for r in _applied(have) if _branch_of(r) == ENGINE})


@dataclass(frozen=True)
class BranchStatus:
    branch: str
    dist: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def status(db: Database) -> list[BranchStatus]:
    """Each branch's revision in the database and its head."""
    sd = script()
    have = current_heads(db)
    _check_known(db, have)
    applied = _applied(have)
    out = []
    for b in branches():
        heads = [h for h in sd.get_heads() if _branch_of(h) == b.name]
        if heads:
            out.append(BranchStatus(b.name, b.dist, _newest({r for r in applied if _branch_of(r) == b.name}), heads[0]))
    return out


def upgrade(db: Database, revision: str = "heads") -> tuple[str | None, str]:
    """Bring the schema to ``revision`` (every branch's head by default); returns the engine's
    (before, after)."""
    db.check()
    before = current_revision(db)
    if db.backend in MYSQL_BACKENDS and not current_heads(db):
        _check_no_clash(db)
    try:  # one transaction (migrations/env.py): a failure leaves the schema where it was
        command.upgrade(_alembic_config(db), revision)
    except SQLAlchemyError as err:
        if db.backend in MYSQL_BACKENDS:  # every CREATE / ALTER commits at once there
            raise DatabaseError(
                f"database {db.display_url}: upgrade to {revision} failed: {_short(err)}; MariaDB/MySQL commits each "
                f"CREATE and ALTER, so the schema is now at {_now(db)} and the failed revision may have left tables behind"
            ) from err
        raise DatabaseError(f"database {db.display_url}: upgrade to {revision} failed, nothing changed: {_short(err)}") from err
    except AlembicCommandError as err:
        raise DatabaseError(f"database {db.display_url}: upgrade to {revision} refused: {err}") from err
    return before, current_revision(db) or ""


def _now(db: Database) -> str:
    try:
        return ", ".join(sorted(current_heads(db))) or "none"
    except SQLAlchemyError:
        return "unknown (the database cannot be read)"


def _check_no_clash(db: Database) -> None:
    """A first upgrade on MariaDB/MySQL, where DDL does not roll back, refuses before it changes
    anything when a table it would create is there already: scbundle's tables beside a team's
    own (IPP's gpc1 has a ``skycell``)."""
    have = set(db.table_names())
    clash = sorted(have & set(Base.metadata.tables))
    if clash:
        raise DatabaseError(
            f"database {db.display_url} already has table(s) {', '.join(clash)} that scbundle's schema would create; "
            "nothing was changed: give scbundle a database of its own on this server"
        )


def require_current(db: Database) -> None:
    db.check()
    try:
        have = current_heads(db)
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {db.display_url}: {_short(err)}") from None
    if not head_revisions() <= _applied(have) or not have:
        behind = [s for s in status(db) if not s.up_to_date] if have else []
        state = ", ".join(f"{s.branch} at {s.current or 'none'} (head {s.head})" for s in behind) or "none (empty)"
        raise DatabaseError(f"database {db.display_url} is at schema {state}: run `scbundle db upgrade`")
