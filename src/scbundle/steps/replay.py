"""Reading what a job returns: per-rank result records and their dbinfo, validated as data.

A dbinfo record is data for whitelisted tables and typed columns of the run's own stage,
keyed by a component that is in the run; it is never SQL or shell. Any bad record refuses
the whole replay, naming the file and line, before anything is written.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scbundle.core.errors import DbinfoError
from scbundle.core.protocol import PROTOCOL as P
from scbundle.core.text import printable
from scbundle.stages.base import INT64_MAX, INT64_MIN, DbinfoRecord, Stage, check_value

# a result record's phases and fields: remote/sc_protocol.py (what remote/sc_runner.py writes)
PHASES: tuple[str, ...] = P.PHASES
_PHASE = {p: p for p in PHASES}
STOPPED_PHASES: frozenset[str] = P.STOPPED_PHASES

RESULT_FIELDS = frozenset(P.RESULT_FIELDS)

# A result line is one component's record: its dbinfo (numbers and short tokens) and an error
# tail of 2000 characters; more than this is refused, naming the file and line.
RESULT_LINE_MAX = 1 << 20
# What one rank file may hold, per component of the run (a record is a few hundred bytes).
RESULT_BYTES_PER_COMPONENT = 16 * 1024


def results_file_limit(n_components: int) -> int:
    """The most one results/rank-*.jsonl file of a run of ``n_components`` may hold."""
    return RESULT_LINE_MAX + RESULT_BYTES_PER_COMPONENT * max(n_components, 0)


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
        if not ((t is float and kind is float and math.isfinite(value)) or (t is int and (kind is int or kind is float) and INT64_MIN <= value <= INT64_MAX)):
            problem = check_value(column, kind, value)
            if problem:
                raise ValueError(problem)
        out[sys.intern(column)] = value  # a whitelisted name: one str object for every record's key
    return DbinfoRecord(stage_id=stage_id, table=sys.intern(raw["table"]), values=out)


def _number(value: object, what: str, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {_show(value)}")
    if isinstance(value, int) and abs(value) > 1e18 or isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite time, got {_show(value)}")
    return float(value)


def _int(value: object, what: str, *, allow_none: bool = False, lo: int = 0, hi: int = 2**31 - 1) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {_show(value)} is out of range ({lo}..{hi})")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number a record may hold")


def parse_result_line(line: str, stage: Stage, components: Mapping[int, int]) -> ComponentResult:
    try:
        rec = json.loads(line, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the record is nested too deep") from None
    return parse_record(rec, stage, components)


def parse_record(rec: object, stage: Stage, components: Mapping[int, int]) -> ComponentResult:
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
    exit_code = _int(rec.get("exit"), "exit", lo=-(2**31), hi=2**31 - 1)
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
        host=_host_name(host) if host else None,
        attempts=_int(rec.get("attempts", 1), "attempts", hi=1000) or 0,
        exit=exit_code,
        phase=phase,
        start=_number(rec.get("start"), "start", allow_none=True),
        end=_number(rec.get("end"), "end", allow_none=True),
        error=printable(str(error)[-2000:], multiline=True) if error is not None else None,  # the site's text
        dbinfo=dbinfo,
    )


@functools.lru_cache(maxsize=4096)
def _host_name(host: str) -> str:
    """A node's name as the site gave it, printable; a few hundred hosts, each one str shared."""
    return sys.intern(printable(host[:128]))


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


@dataclass
class Results:
    """What a job's rank files say: the good and failed records by component index, the
    records refused (by index, when the line names a component of the run: file, line and
    why), and the lines refused that name no component of the run."""

    records: dict[int, ComponentResult] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    unattributed: list[str] = field(default_factory=list)


def read_results(
    files: Sequence[Path], stage: Stage, components: Mapping[int, int], *, line_max: int = RESULT_LINE_MAX, file_max: int | None = None
) -> Results:
    """Every result record of a job; a bad record is refused on its own, naming file and line
    (its component fails with fault 5; the others replay).

    Each file is read a line at a time: a line over ``line_max`` bytes, or a file over
    ``file_max`` (default: results_file_limit of the run's components), refuses the whole
    job's results (DbinfoError): no honest runner writes them."""
    with gc_paused():
        return _read_results(files, stage, components, line_max, results_file_limit(len(components)) if file_max is None else file_max)


def _index_of(line: bytes, components: Mapping[int, int]) -> int | None:
    """The component a refused line speaks for, when it says so plainly."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    index = rec.get("index") if isinstance(rec, dict) else None
    return index if type(index) is int and index in components else None


def _read_results(files: Sequence[Path], stage: Stage, components: Mapping[int, int], line_max: int, file_max: int) -> Results:
    out = Results()
    for path in files:
        with open(path, "rb") as f:
            size = 0
            for lineno, raw in enumerate(iter(lambda: f.readline(line_max + 1), b""), 1):
                size += len(raw)
                if size > file_max:
                    raise DbinfoError(f"{path}: more than {file_max} bytes of results for a run of {len(components)} component(s); refused")
                if not raw.endswith(b"\n"):
                    if len(raw) > line_max:
                        raise DbinfoError(f"{path}:{lineno}: a line longer than {line_max} bytes; refused")
                    # no newline after it: a rank killed while writing (node failure); that
                    # component has no result, the rest of the file stands
                    break
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    res = parse_result_line(raw.decode("utf-8"), stage, components)
                except (ValueError, RecursionError) as err:  # json errors, UnicodeDecodeError: ValueErrors
                    why = f"{where}: bad record: {str(err)[:500]}"
                    index = _index_of(raw, components)
                    if index is None:
                        out.unattributed.append(why)
                    else:
                        out.refused.setdefault(index, why)
                        out.records.pop(index, None)
                    continue
                if res.index in out.records or res.index in out.refused:
                    out.refused[res.index] = f"{where}: component index {res.index} reported twice"
                    out.records.pop(res.index, None)
                    continue
                out.records[res.index] = res
    return out
