"""Every schema migration keeps every row: from each earlier revision (read from the migration
scripts, so a new migration is covered without touching this file), a database filled with rows
in every table (made from its reflected schema, with real references between them) is upgraded
to head, and every row is still there with the same values. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, Table, insert, select

from scbundle.core.errors import DatabaseError
from scbundle.db.migrate import MIGRATIONS, current_revision, head_revision, upgrade
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.session import Database

ROWS = 4  # rows a table

REVISIONS = [r.revision for r in reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions()))]
EARLIER = REVISIONS[:-1]


def _reflect(conn: Connection) -> MetaData:
    md = MetaData()
    md.reflect(conn)
    md.remove(md.tables["alembic_version"])
    return md


def _plain_value(table: Table, col, i: int, pk_offset: int):
    """A value of the column's type for row i: distinct per row and table (so every unique
    constraint holds), exactly representable (so it compares equal after the round trip)."""
    try:
        kind = col.type.python_type
    except NotImplementedError:
        kind = str
    serial = i + 1 + (pk_offset if col.primary_key else 0)
    if kind is bool or getattr(col.type, "display_width", None) == 1:  # MySQL reflects a BOOLEAN as TINYINT(1)
        return i % 2 == 0
    if kind is int:
        return serial if col.primary_key else 1000 * (len(table.name) % 7 + 1) + i
    if kind is float:
        return serial + 0.25
    if kind is decimal.Decimal:
        return decimal.Decimal(f"{serial}.5")
    if kind is dt.datetime:
        return dt.datetime(2026, 11, 1, 12, 0, 0) + dt.timedelta(days=i, seconds=len(col.name))
    if kind is dt.date:
        return dt.date(2026, 11, 1) + dt.timedelta(days=i)
    if kind is bytes:
        return f"{table.name}.{col.name}.{serial}".encode()
    text = f"{col.name}-{serial}"
    length = getattr(col.type, "length", None)
    return text[-length:] if length else text


def fill(conn: Connection) -> dict[str, dict[tuple, dict]]:
    """ROWS more rows in every table, parents first, each foreign key pointing at a real parent
    row (a different one for each row, so unique keys made of references hold too). The last
    row leaves its nullable plain columns NULL. Returns every row of every table (those the
    migrations themselves put there too), by primary key."""
    md = _reflect(conn)
    made: dict[str, list[dict]] = {}
    for table in md.sorted_tables:
        existing = [dict(r._mapping) for r in conn.execute(select(table))]
        int_pks = [v for r in existing for c in table.primary_key.columns if isinstance(v := r[c.name], int)]
        offset = max(int_pks, default=0)
        fk_cols = {c.name for fk in table.foreign_key_constraints for c in fk.columns}
        rows = []
        for i in range(ROWS):
            row = {}
            for col in table.columns:
                if col.name in fk_cols:
                    continue
                null = i == ROWS - 1 and col.nullable and not col.primary_key
                row[col.name] = None if null else _plain_value(table, col, i, offset)
            for fk in table.foreign_key_constraints:
                parent = fk.referred_table
                parents = made[parent.name] if parent is not table else (rows or [row])  # a self-reference: an earlier row
                p = parents[i % len(parents)]
                for elem in fk.elements:
                    row[elem.parent.name] = p[elem.column.name]
            rows.append(row)
        conn.execute(insert(table), rows)
        made[table.name] = existing + rows
    return snapshot(conn)


def snapshot(conn: Connection) -> dict[str, dict[tuple, dict]]:
    out = {}
    for table in _reflect(conn).sorted_tables:
        pk = [c.name for c in table.primary_key.columns]
        assert pk, f"table {table.name} has no primary key: its rows cannot be followed through a migration"
        out[table.name] = {tuple(r._mapping[k] for k in pk): dict(r._mapping) for r in conn.execute(select(table))}
    return out


def _database(request, tmp_path: Path, backend: str, rev: str) -> Database:
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp_path / f'at-{rev}.db'}")
    server = request.getfixturevalue({"postgresql": "pg_server", "mariadb": "maria_server"}[backend])
    return Database(server.create_database(f"mig_{rev}_{uuid.uuid4().hex[:8]}"))


BACKENDS = ["sqlite", "postgresql", "mariadb"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rev", EARLIER)
def test_upgrade_from_every_revision_keeps_every_row(request, tmp_path, backend, rev):
    db = _database(request, tmp_path, backend, rev)
    try:
        upgrade(db, rev)
        with db.engine.begin() as conn:
            before = fill(conn)
        assert all(len(rows) >= ROWS for rows in before.values()), "every table got its rows"
        upgrade(db)
        assert current_revision(db) == head_revision()
        with db.engine.connect() as conn:  # on SQLite, the connection the upgrade used (the pool's)
            after = snapshot(conn)
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1, "foreign keys back on after the upgrade"
    finally:
        db.engine.dispose()
    for name, rows in before.items():
        assert name in after, f"table {name} is gone after the upgrade from {rev}"
        assert sorted(after[name]) == sorted(rows), f"{name}: rows lost or added by the upgrade from {rev}"
        gone = set(next(iter(rows.values()))) - set(next(iter(after[name].values())))
        assert gone <= _dropped_columns(name), f"{name}: columns {sorted(gone)} dropped by the upgrade from {rev}"
        for key, row in rows.items():
            now = after[name][key]
            assert {k: now[k] for k in row if k not in gone} == {k: row[k] for k in row if k not in gone}, (
                f"{name} {key}: values changed by the upgrade from {rev}"
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_float_column_keeps_a_time_to_the_microsecond(request, tmp_path, backend):
    """A component's start and end (seconds since 1970) and a run's cost come back as written:
    MySQL's FLOAT is single precision (1764633600.123456 would come back 1764633600)."""
    db = _database(request, tmp_path, backend, "head")
    t0, t1 = 1_764_633_600.123456, 1_764_633_725.654321
    try:
        upgrade(db)
        with db.engine.begin() as conn:
            md = _reflect(conn)
            conn.execute(insert(md.tables["remote_run"]), [
                {"remote_id": 1, "stage": "chip", "label": "l", "site": "local", "state": "full", "attempt": 1, "fault": 0,
                 "job_policy": "fatal", "cost_seconds": 61.123456789, "job_seconds": t1 - t0}
            ])  # fmt: skip
            conn.execute(insert(md.tables["remote_component"]), [
                {"remote_id": 1, "stage": "chip", "stage_id": 7, "state": "full", "fault": 0, "attempts": 1, "t_start": t0, "t_end": t1}
            ])  # fmt: skip
        with db.engine.connect() as conn:  # read as scbundle reads them: through its models
            run = conn.execute(select(RemoteRun.cost_seconds, RemoteRun.job_seconds)).one()._mapping
            comp = conn.execute(select(RemoteComponent.t_start, RemoteComponent.t_end)).one()._mapping
    finally:
        db.engine.dispose()
    assert (comp["t_start"], comp["t_end"]) == (t0, t1)
    assert (run["cost_seconds"], run["job_seconds"]) == (61.123456789, t1 - t0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_commands_task_keeps_a_long_list_of_inputs(request, tmp_path, backend):
    """A task's inputs (a JSON list of paths) past 64 KiB, MySQL's TEXT, are stored whole."""
    from scbundle.stages.commands import CommandsTask

    db = _database(request, tmp_path, backend, "head")
    inputs = "[" + ", ".join(f'"/data/night/{i:06d}/exposure-{i:06d}.fits"' for i in range(3000)) + "]"
    assert len(inputs) > 64 * 1024
    try:
        upgrade(db)
        with db.session() as s:
            s.add(CommandsTask(key="k", command='["cat"]', inputs=inputs, outputs="[]"))
        with db.read_session() as s:
            assert s.scalars(select(CommandsTask.inputs)).one() == inputs
    finally:
        db.engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_and_keys_that_differ_in_case_are_different(request, tmp_path, backend):
    """MariaDB's default collation is case-insensitive: `--label night1` would take in the runs of
    Night1, and task keys "A" and "a" would clash. scbundle's tables compare exactly."""
    from scbundle.stages.commands import CommandsTask

    db = _database(request, tmp_path, backend, "head")
    try:
        upgrade(db)
        with db.session() as s:
            s.add_all([RemoteRun(stage="chip", label=label, site="local", state="new", job_policy="fatal", attempt=1, fault=0)
                       for label in ("Night1", "night1")])  # fmt: skip
            s.add_all([CommandsTask(key=key, command='["true"]', inputs="[]", outputs="[]") for key in ("A", "a")])
        with db.read_session() as s:
            assert s.scalars(select(RemoteRun.label).where(RemoteRun.label == "night1")).all() == ["night1"]
            assert s.scalars(select(CommandsTask.key).where(CommandsTask.key == "a")).all() == ["a"]
    finally:
        db.engine.dispose()


def test_a_first_upgrade_beside_a_table_of_the_same_name_on_mariadb_changes_nothing(maria_server):
    """IPP's gpc1 has a `skycell` table; MariaDB commits each CREATE at once, so an upgrade that
    stopped on it would leave the tables made before it behind. It refuses before it starts."""
    url = maria_server.create_database(f"gpc1_{uuid.uuid4().hex[:8]}")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE skycell (tess_id VARCHAR(64), skycell_id VARCHAR(64), radeg FLOAT, "
                                 "PRIMARY KEY (tess_id, skycell_id)) ENGINE=innodb DEFAULT CHARSET=latin1")  # fmt: skip
        with pytest.raises(DatabaseError) as err:
            upgrade(db)
        assert "already has table(s) skycell" in str(err.value) and "nothing was changed" in str(err.value)
        assert db.table_names() == ["skycell"]
        assert current_revision(db) is None
    finally:
        db.engine.dispose()


def _dropped_columns(table: str) -> set[str]:
    """Columns a later migration dropped on purpose (none so far): name them here with the
    migration that drops them, so losing one is a decision, not an accident."""
    return set()


def test_the_revisions_are_one_line_from_base_to_head():
    """The test above walks one history; a branch would leave revisions out."""
    script = ScriptDirectory(str(MIGRATIONS))
    assert len(script.get_heads()) == 1 and REVISIONS[-1] == head_revision()
    assert [r.down_revision for r in map(script.get_revision, REVISIONS)] == [None, *REVISIONS[:-1]]


def test_db_upgrade_from_0003_keeps_the_components_of_a_run(cli):
    """The issue's reproduction: `scbundle db upgrade` from 0003 rebuilt remote_run and the
    drop cascaded into remote_component (no result rows: no error, the rows were just gone)."""
    db = Database(f"sqlite:///{cli.db_path}")
    upgrade(db, "0003")
    with db.engine.begin() as conn:
        md = _reflect(conn)
        conn.execute(insert(md.tables["remote_run"]), [
            {"remote_id": r, "stage": "chip", "label": "l", "site": "local", "state": "full", "attempt": 1, "fault": 0, "job_policy": "fatal"}
            for r in (1, 2)
        ])  # fmt: skip
        conn.execute(insert(md.tables["remote_component"]), [
            {"remote_id": 1 + i % 2, "stage": "chip", "stage_id": i, "state": "full", "fault": 0, "attempts": 1} for i in range(10)
        ])  # fmt: skip
    db.engine.dispose()
    out = cli("db", "upgrade").stdout
    assert "schema 0003 ->" in out
    with db.engine.connect() as conn:
        md = _reflect(conn)
        rows = conn.execute(select(md.tables["remote_component"].c.remote_id, md.tables["remote_component"].c.stage_id)).all()
    assert sorted(rows) == sorted((1 + i % 2, i) for i in range(10))
