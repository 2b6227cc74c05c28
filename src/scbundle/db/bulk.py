"""Many rows in one statement's executemany, straight to the driver.

A poll of a large job writes tens of thousands of rows (a component's state, a result row
each). SQLAlchemy's executemany still builds a parameter dictionary a row through the
compiler; here the statement is written once, in the driver's own placeholder style, and the
rows go to the driver as tuples. Table and column names come from the models (never from
returned data); every value is a bound parameter. The states and fault codes are StrEnum /
IntEnum members, which sqlite3 and psycopg take as the str / int they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.orm import Session


def _placeholder(session: Session) -> str:
    style = session.get_bind().dialect.paramstyle
    return "?" if style == "qmark" else "%s"  # psycopg: format / pyformat both take %s


def update_rows(session: Session, table: Table, rows: Iterable[dict], key: str = "id") -> None:
    """UPDATE ``table`` SET <the row's other columns> WHERE ``key`` = <the row's key>, a row
    each; rows with the same columns share one executemany."""
    shapes: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        shapes.setdefault(tuple(row), []).append(row)
    conn, mark = session.connection(), _placeholder(session)
    q = conn.dialect.identifier_preparer.quote
    for cols, group in shapes.items():
        sets = [c for c in cols if c != key]
        if not sets:
            continue
        for c in cols:
            table.c[c]  # KeyError for a column the table does not have
        sql = f"UPDATE {q(table.name)} SET {', '.join(f'{q(c)} = {mark}' for c in sets)} WHERE {q(key)} = {mark}"
        conn.exec_driver_sql(sql, [tuple([r[c] for c in sets] + [r[key]]) for r in group])


def insert_rows(session: Session, table: Table, rows: Sequence[dict]) -> None:
    """INSERT the rows (all with the same columns) in one executemany."""
    if not rows:
        return
    cols = list(rows[0])
    for c in cols:
        table.c[c]
    conn, mark = session.connection(), _placeholder(session)
    q = conn.dialect.identifier_preparer.quote
    sql = f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) VALUES ({', '.join(mark for _ in cols)})"
    conn.exec_driver_sql(sql, [tuple([r[c] for c in cols]) for r in rows])
