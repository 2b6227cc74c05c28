"""Reading what a job returns: per-rank result records and their dbinfo, validated as data.

A dbinfo record is data for whitelisted tables and typed columns of the run's own stage,
keyed by a component that is in the run; it is never SQL or shell. Any bad record refuses
the whole replay, naming the file and line, before anything is written.
"""

from __future__ import annotations

import gc
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scbundle.core.errors import DbinfoError
from scbundle.stages.base import DbinfoRecord, Stage, check_value

# command / post: the program (or its post) exited non-zero; limit: stopped at the stage's
# command_timeout; deadline: the job's walltime ran out (stopped, or never started);
# signal: the rank was told to stop (SIGTERM: walltime or cancel); input: not started, an
# input was gone from the site (purged or deleted after exec) - see remote/sc_runner.py
PHASES = ("command", "post", "limit", "deadline", "signal", "input")
_PHASE = {p: p for p in PHASES}
STOPPED_PHASES = frozenset({"limit", "deadline", "signal"})

RESULT_FIELDS = {"index", "stage_id", "rank", "host", "attempts", "exit", "phase", "start", "end", "dbinfo", "error"}


@dataclass(frozen=True, slots=True)  # slots: a million of them in a large replay
class ComponentResult:
    index: int
    stage_id: int
    rank: int | None
    host: str | None
    attempts: int
    exit: int
    phase: str
    start: float | None
    end: float | None
    error: str | None
    dbinfo: DbinfoRecord | None

    @property
    def good(self) -> bool:
        return self.exit == 0 and self.dbinfo is not None


def validate_dbinfo(raw: object, stage: Stage, stage_id: int) -> DbinfoRecord:
    """Raise ValueError (the reason) unless ``raw`` is a well-formed record for ``stage_id``."""
    if not isinstance(raw, dict) or set(raw) - {"table", "key", "values"} or "table" not in raw:
        raise ValueError("dbinfo must be an object with 'table', 'key' and 'values' only")
    table = stage.dbinfo_tables.get(raw["table"]) if isinstance(raw["table"], str) else None
    if table is None:
        raise ValueError(f"table {raw['table']!r} is not one the {stage.name} stage writes")
    key = raw.get("key")
    if not isinstance(key, dict) or list(key) != [table.key]:
        raise ValueError(f"key must be exactly {{{table.key!r}: <id>}}, got {key!r}")
    if key[table.key] != stage_id or isinstance(key[table.key], bool):
        raise ValueError(f"key {table.key}={key[table.key]!r} is not this component's stage_id {stage_id}")
    values = raw.get("values", {})
    if not isinstance(values, dict):
        raise ValueError("values must be an object")
    columns = table.columns
    out: dict[str, object] = {}
    for column, value in values.items():
        kind = columns.get(column)
        if kind is None:
            raise ValueError(f"unknown column {column!r} for table {raw['table']!r}")
        t = type(value)  # the common cases decided here (bool is not int by type); the rest by check_value
        if not ((t is float and kind is float and math.isfinite(value)) or (t is int and (kind is int or kind is float))):
            problem = check_value(column, kind, value)
            if problem:
                raise ValueError(problem)
        out[sys.intern(column)] = value  # a whitelisted name: one str object for every record's key
    return DbinfoRecord(stage_id=stage_id, table=sys.intern(raw["table"]), values=out)


def _number(value: object, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


def _int(value: object, what: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def parse_result_line(line: str, stage: Stage, components: Mapping[int, int]) -> ComponentResult:
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise ValueError("a result line must be a JSON object")
    extra = set(rec) - RESULT_FIELDS
    if extra:
        raise ValueError(f"unknown field(s) {sorted(extra)}")
    index = _int(rec.get("index"), "index")
    assert index is not None
    if index not in components:
        raise ValueError(f"component index {index} is not in this run")
    stage_id = _int(rec.get("stage_id"), "stage_id")
    if stage_id != components[index]:
        raise ValueError(f"index {index} is stage_id {components[index]} in this run, not {stage_id}")
    exit_code = _int(rec.get("exit"), "exit")
    assert exit_code is not None
    given = rec.get("phase", "command")
    phase = _PHASE.get(given) if isinstance(given, str) else None  # the one str object of each phase
    if phase is None:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {given!r}")
    host = rec.get("host")
    if host is not None and not isinstance(host, str):
        raise ValueError("host must be a string")
    error = rec.get("error")
    dbinfo = None
    if exit_code == 0:
        dbinfo = validate_dbinfo(rec.get("dbinfo"), stage, stage_id)
    return ComponentResult(
        index=index,
        stage_id=stage_id,
        rank=_int(rec.get("rank"), "rank", allow_none=True),
        host=sys.intern(host[:128]) if host else None,  # a few hundred hosts, shared
        attempts=_int(rec.get("attempts", 1), "attempts") or 0,
        exit=exit_code,
        phase=phase,
        start=_number(rec.get("start"), "start", allow_none=True),
        end=_number(rec.get("end"), "end", allow_none=True),
        error=str(error)[-2000:] if error is not None else None,
        dbinfo=dbinfo,
    )


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection in the block: a replay makes tens of thousands of objects
    that live until it ends, and the collector would walk them over and over (~20% of a
    37,200-record replay). Reference counting still frees everything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_results(files: Sequence[Path], stage: Stage, components: Mapping[int, int]) -> dict[int, ComponentResult]:
    """All result records of a job by component index; DbinfoError names file and line."""
    with gc_paused():
        return _read_results(files, stage, components)


def _read_results(files: Sequence[Path], stage: Stage, components: Mapping[int, int]) -> dict[int, ComponentResult]:
    out: dict[int, ComponentResult] = {}
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise DbinfoError(f"{path}: not UTF-8 text: {err}") from None
        lines = text.split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if lineno == len(lines):
                # no newline after it: a rank killed while writing (node failure); that
                # component has no result, the rest of the file stands
                continue
            try:
                res = parse_result_line(line, stage, components)
            except ValueError as err:  # json errors are ValueErrors
                raise DbinfoError(f"{path}:{lineno}: bad record: {err}") from None
            if res.index in out:
                raise DbinfoError(f"{path}:{lineno}: component index {res.index} reported twice")
            out[res.index] = res
    return out
