"""What a stage provides to the spine: its pending work, its commands, its dbinfo whitelist."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError, ScbundleError
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.db.models import Base, RemoteComponent, RemoteRun
from scbundle.site.pathmap import PathMap


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

    fault = int(Fault.DATA)

    @property
    def message(self) -> str:
        return f"input missing locally: {self.path}"


@dataclass(frozen=True)
class BuildFailure:
    """A component the stage could not build (prepare faults it; the rest of the run goes on).
    A stage may return one; prepare also makes one when ``build`` raises for a component."""

    stage_id: int
    message: str
    fault: int = int(Fault.PROGRAM)


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


@dataclass(frozen=True, slots=True)  # slots: a million of them in a large replay
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


@dataclass(frozen=True)
class Blocked:
    """A next-stage item advance did not queue, and why."""

    item_id: int  # its key: the stage_id it would get, or what it is built from (e.g. a sky cell)
    item: str  # readable, e.g. "exposure o5300g0003o"
    reason: str


@dataclass(frozen=True)
class Advance:
    """What a stage's queue_from found in finished upstream runs.

    ready: stage_ids of this stage whose inputs are all good (advance queues the ones that are
    in no run yet); blocked: items that will never run because an input failed for good;
    waiting: items with inputs still on their way (the run that brings the last one queues them).
    """

    ready: list[int] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    waiting: list[Blocked] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """How an upstream piece of work ended, as advance sees it."""

    state: str  # "good", "failed" (for good) or "waiting"
    reason: str = ""


def work_outcomes(session: Session, stage: str, stage_ids: Sequence[int]) -> dict[int, Outcome]:
    """The outcome of each piece of ``stage`` work: good (its component is full), failed for good
    (abandoned, or an error in a run that is full: revert does not bring it back), or waiting
    (not in a run yet, not finished, or failed in a run that revert can still retry)."""
    out = {sid: Outcome("waiting", f"{stage} {sid} is in no run yet") for sid in stage_ids}
    ids = list(stage_ids)
    for start in range(0, len(ids), 5000):
        q = (
            select(RemoteComponent.stage_id, RemoteComponent.state, RemoteComponent.fault, RemoteComponent.message,
                   RemoteRun.remote_id, RemoteRun.state)
            .join(RemoteRun, RemoteRun.remote_id == RemoteComponent.remote_id)
            .where(RemoteComponent.stage == stage, RemoteComponent.stage_id.in_(ids[start : start + 5000]))
        )  # fmt: skip
        for sid, cstate, fault, message, rid, rstate in session.execute(q):
            why = f"{stage} {sid} in remote_id {rid}"
            if cstate == ComponentState.FULL:
                out[sid] = Outcome("good")
            elif cstate == ComponentState.ABANDONED or (cstate == ComponentState.ERROR and rstate == RunState.FULL):
                out[sid] = Outcome("failed", f"{why} {cstate}, fault {fault}" + (f": {message}" if message else ""))
            else:
                out[sid] = Outcome("waiting", f"{why} is {cstate} (run {rstate})")
    return out


class Stage(ABC):
    name: str
    threads: int
    cost_seconds: float
    dbinfo_tables: Mapping[str, DbinfoTable]
    #: the stage `scbundle advance` queues after this one (None: the end of the pipeline);
    #: a site's config may override it ([stages.NAME] next_stage)
    next_stage: str | None = None
    #: the largest permanent product poll brings back (bytes): a larger one is refused before
    #: any of it is written ([stages.NAME] max_product_bytes overrides it)
    max_product_bytes: int = 4 << 30

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

    def queue_from(self, session: Session, upstream: RemoteRun) -> Advance:
        """This stage's work that a finished (full) run of the stage before it makes ready.

        May create this stage's work rows (idempotently: unique keys); must not create
        remote runs or components (advance does, once per item)."""
        raise ConfigError(f"stage {self.name!r} cannot follow stage {upstream.stage!r}: it has no queue_from")

    def describe(self) -> str:
        return f"{self.name}: {self.threads} thread(s), ~{self.cost_seconds:g} s a command"


Built = ComponentSpec | MissingInput | BuildFailure


def build_isolated(stage: Stage, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[Built]:
    """``stage.build``, with a component whose build raises faulted alone (BuildFailure, fault
    4, or the error's own fault for a scbundle error) while the others build: on an exception
    the ids are split in halves and built again, down to the one that raises."""
    ids = list(stage_ids)
    if not ids:
        return []
    try:
        out = list(stage.build(session, ids, ctx))
    except Exception as err:
        if len(ids) == 1:
            fault = int(err.fault) if isinstance(err, ScbundleError) else int(Fault.PROGRAM)
            return [BuildFailure(ids[0], f"{stage.name} build raised {type(err).__name__}: {err}"[:2000], fault)]
        mid = len(ids) // 2
        return build_isolated(stage, session, ids[:mid], ctx) + build_isolated(stage, session, ids[mid:], ctx)
    if len(out) != len(ids) or any(b.stage_id != sid for b, sid in zip(out, ids, strict=False)):
        why = f"{stage.name} build returned {len(out)} result(s) for {len(ids)} component(s), not one each in order"
        return [BuildFailure(sid, why) for sid in ids]
    return out
