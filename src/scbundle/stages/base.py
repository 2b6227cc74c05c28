"""What a stage provides to the spine: its pending work, its commands, its dbinfo whitelist."""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError, ScbundleError
from scbundle.core.states import (
    DEFAULT_FAULT_MAP,
    DEFAULT_RETRY_FAULTS,
    ComponentState,
    Fault,
    FaultPolicy,
    RunState,
)
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
    threads: int | None = None  # its own threads when not the stage's (the run asks for the most any needs)


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
    run_dir: str | None = None  # the run's directory on the site (prepare knows it; replay may not)
    shipped_dir: str | None = None  # the site directory of this version of the stage's shipped files
    shipped_names: frozenset[str] = frozenset()  # the stage's shipped_files

    def shipped(self, name: str) -> str:
        """The site path of ``name``, one of the stage's ``shipped_files`` (verified by digest
        by exec and at the job's start, before any command runs)."""
        if self.shipped_dir is None or name not in self.shipped_names:
            known = ", ".join(sorted(self.shipped_names)) or "none"
            raise ConfigError(f"{name!r} is not one of the stage's shipped_files (it ships: {known})")
        return f"{self.shipped_dir}/{name}"


@dataclass(frozen=True)
class WorkContext:
    """What a stage's ``add_work`` knows: the site the work is meant for (its path rules check
    every path), and where the items came from (a file's name, for messages)."""

    site: str
    pathmap: PathMap
    source: str = "the items given"


class PluginSettings(BaseModel):
    """Base of a stage's own settings (``Stage.settings_model``): strict, unknown keys refused,
    like the engine's. [stages.NAME] keys the engine does not know are validated against it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a work item may hold")


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what an integer column holds on every backend
FLOAT_MAX = 1.7976931348623157e308
MAX_JSON_COLUMN = 16 * 1024  # a JSON object column's encoded size


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def check_value(column: str, kind: type, value: object) -> str | None:
    """None if ``value`` fits ``kind``; otherwise why not. Integers must fit 64 bits, numbers
    must be finite, strings must be plain tokens."""
    if value is None:
        return None
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"column {column!r} wants an integer, got {_short(value)}"
        if not INT64_MIN <= value <= INT64_MAX:
            return f"column {column!r} wants a 64-bit integer, got {_short(value)} (out of range)"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"column {column!r} wants a finite number, got {_short(value)}"
        if isinstance(value, int) and not -FLOAT_MAX <= value <= FLOAT_MAX or isinstance(value, float) and not math.isfinite(value):
            return f"column {column!r} wants a finite number, got {_short(value)} (out of range)"
    elif kind is dict:  # a small JSON object, kept as JSON text (never read as SQL or shell)
        if not isinstance(value, dict):
            return f"column {column!r} wants a JSON object, got {_short(value)}"
        try:
            text = json.dumps(value, allow_nan=False)
        except (ValueError, RecursionError):
            return f"column {column!r}: the object holds a non-finite number or is nested too deep"
        if len(text) > MAX_JSON_COLUMN:
            return f"column {column!r}: the object is {len(text)} bytes as JSON, over {MAX_JSON_COLUMN}"
    elif kind is str:
        if not isinstance(value, str) or not SAFE_TEXT.match(value):
            return f"column {column!r} wants a plain token (letters, digits, _.:/+@-), got {_short(value)}"
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
    #: the stage's programs' exit codes as faults (the operators' 2-6, timeout's 124 by
    #: default; any other code is 1, unknown), and the faults a command is tried again for
    #: inside the job; [stages.NAME] fault_map / retry_faults override both
    fault_map: Mapping[int, int] = DEFAULT_FAULT_MAP
    retry_faults: frozenset[int] = DEFAULT_RETRY_FAULTS

    #: the stage's own [stages.NAME] settings (a PluginSettings subclass; None: it has none),
    #: and their values once the config is read (get_stage sets it)
    settings_model: type[PluginSettings] | None = None
    settings: PluginSettings | None = None

    #: files of the stage's own package shipped to the site (names relative to the package of
    #: the module of the class that sets it, e.g. ("sources.sex", "measure.py")): content-addressed under
    #: <permanent_root>/stages/<name>/<hash>/, verified by digest before use; ``build`` names
    #: their site paths with ``ctx.shipped(name)``
    shipped_files: tuple[str, ...] = ()

    def add_work(self, session: Session, items: Sequence[Mapping[str, Any]], ctx: WorkContext) -> list[int]:
        """Register work items (each a mapping the stage defines: from Python, or one line of a
        work file); returns their stage_ids, in order (an item already registered gives the id
        it has). The supported way to put work in: `scbundle work add STAGE FILE`,
        `scbundle define --tasks FILE`, or scbundle.steps.work.add_work from Python. Raise
        ValueError naming the item's problem; the caller adds where it came from."""
        raise ConfigError(f"stage {self.name!r} takes no work items: its pending work comes from its own tables")

    def read_work(self, text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """The items of a work file, with their line numbers: JSON lines, one object a line
        (blank lines and lines starting with # skipped). ValueError("LINE: why")."""
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                item = json.loads(line, parse_constant=_no_constant)
            except (ValueError, RecursionError) as err:
                raise ValueError(f"{lineno}: not one JSON object: {err}") from None
            if not isinstance(item, dict):
                raise ValueError(f"{lineno}: a work item is a JSON object, got {type(item).__name__}")
            yield lineno, item

    def fault_policy(self) -> FaultPolicy:
        return FaultPolicy({int(k): Fault(v) for k, v in self.fault_map.items()}, frozenset(Fault(f) for f in self.retry_faults))
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


SHIPPED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*$")
MAX_SHIPPED_BYTES = 16 << 20  # all of a stage's shipped files: configs and small programs, not data


def shipped_file_bytes(stage: Stage) -> dict[str, bytes]:
    """The bytes of ``stage.shipped_files``, read from the package of the module of the class
    that names them (a subclass elsewhere ships its parent's files)
    (importlib.resources: an installed wheel or a source tree). ConfigError names the stage and
    the file for a bad name, a file the package lacks, or too much."""
    import importlib.resources as ir
    import sys

    names = tuple(stage.shipped_files)
    if not names:
        return {}
    owner = next(c for c in type(stage).__mro__ if "shipped_files" in vars(c))  # the class that names them
    module = sys.modules[owner.__module__]
    package = module.__name__ if hasattr(module, "__path__") else (module.__package__ or "")
    where = f"stage {stage.name!r} ({type(stage).__module__}.{type(stage).__qualname__})"
    if not package:
        raise ConfigError(f"{where}: shipped_files need the stage's module to be inside a package")
    out: dict[str, bytes] = {}
    for name in names:
        if not isinstance(name, str) or not SHIPPED_NAME.match(name) or ".." in name.split("/"):
            raise ConfigError(f"{where}: shipped file {name!r} is not a plain relative name (letters, digits, _.+- and /)")
        try:
            out[name] = ir.files(package).joinpath(name).read_bytes()
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where}: shipped file {name!r} cannot be read from package {package}: {err}") from None
    total = sum(map(len, out.values()))
    if total > MAX_SHIPPED_BYTES:
        raise ConfigError(f"{where}: shipped files hold {total} bytes, over {MAX_SHIPPED_BYTES}: ship data as inputs")
    return out


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
