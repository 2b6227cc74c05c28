"""What a stage provides to the spine: its pending work, its commands, its dbinfo whitelist."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from ..db.models import Base, RemoteRun
from ..pathmap import PathMap


@dataclass(frozen=True)
class Requirement:
    local: str
    remote: str
    size: int


@dataclass(frozen=True)
class ComponentSpec:
    """Everything prepare needs to know about one component."""

    stage_id: int
    inputs: tuple[Requirement, ...]
    out_dirs: tuple[str, ...]  # remote directories its outputs go to
    command: tuple[str, ...]  # argv, remote paths
    post: tuple[str, ...]  # argv; prints the dbinfo record (one JSON object)
    products: tuple[tuple[str, str], ...]  # permanent products: (remote path, local path)
    cost: float  # estimated seconds


@dataclass(frozen=True)
class MissingInput:
    stage_id: int
    path: str


@dataclass(frozen=True)
class BuildContext:
    remote_id: int
    label: str
    pathmap: PathMap
    tools_dir: str  # remote directory holding remote/
    python: str  # remote interpreter


SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.:/+@-]{0,256}$")


@dataclass(frozen=True)
class DbinfoTable:
    """A table a dbinfo record may write to: its key column (= stage_id) and typed columns."""

    model: type[Base]
    key: str
    columns: Mapping[str, type]


@dataclass(frozen=True)
class DbinfoRecord:
    stage_id: int
    table: str
    values: dict[str, object] = field(default_factory=dict)


def check_value(column: str, kind: type, value: object) -> str | None:
    """None if ``value`` fits ``kind``; otherwise why not. Strings must be plain tokens."""
    if value is None:
        return None
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"column {column!r} wants an integer, got {value!r}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"column {column!r} wants a finite number, got {value!r}"
    elif kind is str:
        if not isinstance(value, str) or not SAFE_TEXT.match(value):
            return f"column {column!r} wants a plain token (letters, digits, _.:/+@-), got {value!r}"
    else:  # pragma: no cover - programming error in a stage definition
        return f"column {column!r} has unsupported type {kind}"
    return None


class Stage(ABC):
    name: str
    threads: int
    cost_seconds: float
    dbinfo_tables: Mapping[str, DbinfoTable]

    @abstractmethod
    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        """stage_ids of work that is in no run yet, oldest first."""

    @abstractmethod
    def build(
        self, session: Session, stage_ids: Sequence[int], ctx: BuildContext
    ) -> list[ComponentSpec | MissingInput]:
        """One spec per stage_id (same order), or the input that is missing locally."""

    @abstractmethod
    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        """Write validated dbinfo records into the stage's tables (idempotent)."""

    def describe(self) -> str:
        return f"{self.name}: {self.threads} thread(s), ~{self.cost_seconds:g} s a command"
