"""Small helpers the demo pipeline's stages share: local file sizes, data roots, result upserts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError
from scbundle.db.bulk import insert_rows, update_rows
from scbundle.db.models import Base, RemoteComponent
from scbundle.site.pathmap import PathMap

CHUNK = 5000  # ids per IN (...) clause: under every backend's parameter limit


def not_in_a_run(session: Session, stage: str, id_column: Any, limit: int | None) -> list[int]:
    """Values of ``id_column`` that no component of ``stage`` holds yet, in order: a stage's
    pending work when every row of its work table is one component."""
    taken = select(RemoteComponent.stage_id).where(RemoteComponent.stage == stage)
    q = select(id_column).where(id_column.not_in(taken)).order_by(id_column)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class Sizes:
    """Local file sizes, each file stat'ed once per build (None: absent)."""

    def __init__(self) -> None:
        self._sizes: dict[str, int | None] = {}

    def __call__(self, path: str) -> int | None:
        if path not in self._sizes:
            try:
                self._sizes[path] = os.stat(path).st_size
            except OSError:
                self._sizes[path] = None
        return self._sizes[path]

    def first_missing(self, paths: Iterable[str]) -> str | None:
        return next((p for p in paths if self(p) is None), None)


def data_root_of(pm: PathMap) -> Callable[[str], str]:
    """data_root for many files of one site: the roots ordered and their prefixes made once."""
    roots = [(r, r.rstrip("/") + "/") for r in sorted(pm.local_roots(), key=len, reverse=True)]

    def find(local: str) -> str:
        for root, prefix in roots:
            if local.startswith(prefix):
                return root
        raise ConfigError(f"no path rule of the site covers local file {local} (add a [[sites.X.paths]] rule)")

    return find


def data_root(pm: PathMap, local: str) -> str:
    """The site's local data root that holds ``local`` (products go under the same root)."""
    return data_root_of(pm)(local)


def upsert(session: Session, model: type[Base], key: str, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose key is new, update the others: replaying twice changes nothing."""
    if not rows:
        return
    column = getattr(model, key)
    existing: set[int] = set()
    for chunk in chunks([r[key] for r in rows]):
        existing.update(session.scalars(select(column).where(column.in_(chunk))))
    new = [r for r in rows if r[key] not in existing]
    changed = [r for r in rows if r[key] in existing]
    insert_rows(session, model.__table__, new)  # one executemany (PostgreSQL: COPY) each
    update_rows(session, model.__table__, changed, key=key)


def fixed(x: float) -> str:
    """A float as a command-line word argparse never mistakes for an option (no exponent)."""
    text = f"{x:.12f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
