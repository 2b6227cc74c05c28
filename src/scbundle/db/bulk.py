"""Many rows at once, straight to the driver.

A poll of a large job writes tens of thousands of rows (a component's state, a result row
each). SQLAlchemy's executemany still builds a parameter dictionary a row through the
compiler. Here, on SQLite, the statement is written once in the driver's placeholder style
and the rows go to ``executemany`` as tuples; on PostgreSQL, where a statement a row costs a
server round of its own, the rows are streamed with COPY (into the table, or into a temporary
table that one UPDATE ... FROM then applies); on MariaDB / MySQL, PyMySQL's executemany sends
an INSERT's rows as multi-row INSERTs (a statement per megabyte), and an UPDATE's rows go the
same way into a temporary table that one UPDATE ... JOIN applies (executemany of an UPDATE is
a server round a row). Table and column names come from the models
(never from returned data); every value is data, never SQL. The states and fault codes are
StrEnum / IntEnum members, which sqlite3, psycopg and PyMySQL take as the str / int they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.orm import Session


def _placeholder(session: Session) -> str:
    style = session.get_bind().dialect.paramstyle
    return "?" if style == "qmark" else "%s"  # psycopg: format / pyformat both take %s


def _checked(table: Table, cols: Sequence[str]) -> None:
    for c in cols:
        table.c[c]  # KeyError for a column the table does not have


def _copy(session: Session, quote: Callable[[str], str], table: str, cols: Sequence[str], rows: Iterable[tuple]) -> None:
    """COPY ``rows`` into ``table`` (PostgreSQL, psycopg), in the session's transaction."""
    raw = session.connection().connection  # the pooled DBAPI connection of this transaction
    with raw.cursor() as cur, cur.copy(f"COPY {quote(table)} ({', '.join(quote(c) for c in cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def update_rows(session: Session, table: Table, rows: Iterable[dict], key: str = "id") -> None:
    """UPDATE ``table`` SET <the row's other columns> WHERE ``key`` = <the row's key>, a row
    each; rows with the same columns go together."""
    shapes: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        shapes.setdefault(tuple(row), []).append(row)
    conn = session.connection()
    q = conn.dialect.identifier_preparer.quote
    for cols, group in shapes.items():
        sets = [c for c in cols if c != key]
        if not sets:
            continue
        _checked(table, cols)
        if conn.dialect.name == "postgresql":
            tmp = f"scb_update_{table.name}"
            names = [key, *sets]
            conn.exec_driver_sql(  # the table's own column types, no constraints; gone at commit
                f"CREATE TEMP TABLE {q(tmp)} ON COMMIT DROP AS SELECT {', '.join(q(c) for c in names)} FROM {q(table.name)} WITH NO DATA"
            )
            _copy(session, q, tmp, names, ([r[c] for c in names] for r in group))
            conn.exec_driver_sql(
                f"UPDATE {q(table.name)} AS t SET {', '.join(f'{q(c)} = s.{q(c)}' for c in sets)} "
                f"FROM {q(tmp)} AS s WHERE t.{q(key)} = s.{q(key)}"
            )
            conn.exec_driver_sql(f"DROP TABLE {q(tmp)}")
            continue
        if conn.dialect.name in ("mysql", "mariadb"):
            tmp = f"scb_update_{table.name}"
            names = [key, *sets]
            # a temporary table lives as long as the connection (not the transaction): one left
            # by a transaction that failed on this pooled connection goes first. Neither
            # statement commits the transaction (MySQL: temporary tables cause no implicit commit)
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {q(tmp)}")
            conn.exec_driver_sql(  # the table's own column types, no rows; the key (no ALTER: that one commits)
                f"CREATE TEMPORARY TABLE {q(tmp)} (PRIMARY KEY ({q(key)})) "
                f"SELECT {', '.join(q(c) for c in names)} FROM {q(table.name)} LIMIT 0"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {q(tmp)} ({', '.join(q(c) for c in names)}) VALUES ({', '.join('%s' for _ in names)})",
                [tuple(r[c] for c in names) for r in group],
            )
            conn.exec_driver_sql(
                f"UPDATE {q(table.name)} AS t JOIN {q(tmp)} AS s ON t.{q(key)} = s.{q(key)} "
                f"SET {', '.join(f't.{q(c)} = s.{q(c)}' for c in sets)}"
            )
            conn.exec_driver_sql(f"DROP TEMPORARY TABLE {q(tmp)}")
            continue
        mark = _placeholder(session)
        sql = f"UPDATE {q(table.name)} SET {', '.join(f'{q(c)} = {mark}' for c in sets)} WHERE {q(key)} = {mark}"
        conn.exec_driver_sql(sql, [tuple([r[c] for c in sets] + [r[key]]) for r in group])


def insert_rows(session: Session, table: Table, rows: Sequence[dict]) -> None:
    """INSERT the rows (all with the same columns)."""
    if not rows:
        return
    cols = list(rows[0])
    _checked(table, cols)
    conn = session.connection()
    q = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":
        _copy(session, q, table.name, cols, ([r[c] for c in cols] for r in rows))
        return
    mark = _placeholder(session)
    sql = f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) VALUES ({', '.join(mark for _ in cols)})"
    conn.exec_driver_sql(sql, [tuple([r[c] for c in cols]) for r in rows])
