"""The `commands` stage: a list of commands, no code (as disBatch, the TACC launcher and GNU
parallel users start). A task file is JSON lines, one task a line::

    {"command": ["sex", "{input0}", "-c", "{input1}", "-CATALOG_NAME", "{output0}"],
     "inputs": ["/data/raw/a.fits", "/data/conf/default.sex"],
     "outputs": ["/data/cat/a.cat"], "key": "a", "cost": 30, "threads": 1}

``key``, ``cost`` (seconds) and ``threads`` are optional (the key defaults to a digest of the
task, so adding the same file twice adds nothing). In the command's words ``{input0}``,
``{input1}``, ... and ``{output0}``, ... stand for those files' paths on the site. Each task
is checked when it is read (a missing field, a path no path rule maps, a duplicate key, a
placeholder with no file), the error naming its line. `scbundle work add commands FILE` or
`scbundle define --stage commands --tasks FILE --label L` registers them; the rest - prepare,
the content-checked push, multi-prog packing, poll, revert, status - is any stage's. A task's
result is its exit code and timings (its component) and, when the command's last line on
stdout is one JSON object, that object (``commands_result.output``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, MetaData, String, Text, func, select
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from scbundle.db.models import DOUBLE, NAMING, RemoteRun
from scbundle.site.pathmap import PathMap
from scbundle.stages.base import (
    BuildContext,
    ComponentSpec,
    DbinfoRecord,
    DbinfoTable,
    MissingInput,
    Requirement,
    Stage,
    WorkContext,
)
from scbundle.stages.common import Sizes, chunks, not_in_a_run, upsert


class CommandsBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {float: DOUBLE}


#: MySQL's TEXT holds 64 KiB: a task's list of inputs can be longer
LONG_TEXT = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class CommandsTask(CommandsBase):
    """One task of a task file: one piece of `commands` work (stage_id = task_id)."""

    __tablename__ = "commands_task"

    task_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    command: Mapped[str] = mapped_column(LONG_TEXT)  # JSON list of words
    inputs: Mapped[str] = mapped_column(LONG_TEXT)  # JSON list of local paths
    outputs: Mapped[str] = mapped_column(LONG_TEXT)  # JSON list of local paths brought back
    cost: Mapped[float | None] = mapped_column(DOUBLE)
    threads: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class CommandsResult(CommandsBase):
    __tablename__ = "commands_result"

    task_id: Mapped[int] = mapped_column(ForeignKey("commands_task.task_id"), primary_key=True)
    remote_id: Mapped[int] = mapped_column(Integer)  # the engine's remote_run (a foreign key in the migration)
    output: Mapped[str | None] = mapped_column(LONG_TEXT)  # the command's last stdout line, when one JSON object


FIELDS = {"command", "inputs", "outputs", "key", "cost", "threads"}
PLACEHOLDER = re.compile(r"\{(input|output)(\d+)\}")
MAX_WORDS = 100  # srun --multi-prog lines take at most 127 words; the runner's own need some
MAX_KEY = 128


@dataclass(frozen=True)
class Task:
    key: str
    command: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cost: float | None
    threads: int | None


def _paths(item: Mapping[str, Any], field: str, pm: PathMap) -> tuple[str, ...]:
    value = item.get(field, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"{field!r} must be a list of paths")
    out = []
    for i, path in enumerate(value):
        if not posixpath.isabs(path):
            raise ValueError(f"{field}[{i}] {path!r} is not an absolute path")
        if not pm.covers_local(path) or "\n" in path or "\t" in path:
            raise ValueError(f"{field}[{i}] {path!r} is outside every path rule of the site (add a [[sites.X.paths]] rule)")
        out.append(posixpath.normpath(path))
    return tuple(out)


def parse_task(item: Mapping[str, Any], pm: PathMap) -> Task:
    """One task, checked (ValueError names the problem). Pure."""
    extra = set(item) - FIELDS
    if extra:
        raise ValueError(f"unknown field(s) {sorted(extra)} (a task has {sorted(FIELDS)})")
    command = item.get("command")
    if command is None:
        raise ValueError("missing field 'command'")
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        raise ValueError("'command' must be a non-empty list of words (strings)")
    if len(command) > MAX_WORDS:
        raise ValueError(f"'command' has {len(command)} words, over {MAX_WORDS}")
    for w in command:
        if "\n" in w or "\r" in w or "\0" in w:
            raise ValueError(f"command word {w!r} holds a newline or NUL")
    inputs, outputs = _paths(item, "inputs", pm), _paths(item, "outputs", pm)
    for word in command:
        for kind, n in PLACEHOLDER.findall(word):
            files = inputs if kind == "input" else outputs
            if int(n) >= len(files):
                raise ValueError(f"placeholder {{{kind}{n}}} in {word!r} names no file ({len(files)} {kind}s)")
    cost, threads = item.get("cost"), item.get("threads")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 < cost < 1e7):
        raise ValueError(f"'cost' must be seconds, a positive number, got {cost!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise ValueError(f"'threads' must be a whole number of threads, got {threads!r}")
    key = item.get("key")
    if key is None:
        key = "sha256:" + hashlib.sha256(json.dumps([command, inputs, outputs], separators=(",", ":")).encode()).hexdigest()[:40]
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or any(c < " " for c in key):
        raise ValueError(f"'key' must be a printable string of at most {MAX_KEY} characters, got {key!r}")
    return Task(key, tuple(command), inputs, outputs, float(cost) if cost is not None else None, threads)


def words_on_site(task: Task, pm: PathMap) -> tuple[str, ...]:
    """The command with its placeholders replaced by the files' paths on the site. Pure."""
    files = {"input": [pm.to_remote(p) for p in task.inputs], "output": [pm.to_remote(p) for p in task.outputs]}
    return tuple(PLACEHOLDER.sub(lambda m: files[m.group(1)][int(m.group(2))], w) for w in task.command)


def _row_task(row: CommandsTask) -> Task:
    return Task(row.key, tuple(json.loads(row.command)), tuple(json.loads(row.inputs)), tuple(json.loads(row.outputs)), row.cost, row.threads)


class CommandsStage(Stage):
    name = "commands"
    dbinfo_tables = {"commands_result": DbinfoTable(CommandsResult, "task_id", {"output": dict})}

    def __init__(self, threads: int = 1, cost_seconds: float = 60.0) -> None:
        self.threads = threads
        self.cost_seconds = cost_seconds

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        return not_in_a_run(session, self.name, CommandsTask.task_id, limit)

    def add_work(self, session: Session, items: Sequence[Mapping[str, Any]], ctx: WorkContext) -> list[int]:
        tasks: list[Task] = []
        seen: dict[str, int] = {}
        for n, item in enumerate(items):
            try:
                task = parse_task(item, ctx.pathmap)
            except ValueError as err:
                raise ValueError(f"item {n + 1}: {err}") from None
            if task.key in seen:
                raise ValueError(f"item {n + 1}: duplicate key {task.key!r} (also item {seen[task.key] + 1})")
            seen[task.key] = n
            tasks.append(task)
        known: dict[str, CommandsTask] = {}
        for chunk in chunks(list(range(len(tasks)))):
            keys = [tasks[i].key for i in chunk]
            known.update((r.key, r) for r in session.scalars(select(CommandsTask).where(CommandsTask.key.in_(keys))))
        ids: list[int] = []
        for n, task in enumerate(tasks):
            row = known.get(task.key)
            if row is not None:
                if _row_task(row) != task:
                    raise ValueError(f"item {n + 1}: key {task.key!r} is already a task with another command, inputs or outputs")
                ids.append(row.task_id)
                continue
            row = CommandsTask(key=task.key, command=json.dumps(list(task.command)), inputs=json.dumps(list(task.inputs)),
                               outputs=json.dumps(list(task.outputs)), cost=task.cost, threads=task.threads)  # fmt: skip
            session.add(row)
            session.flush()
            ids.append(row.task_id)
        return ids

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput]:
        rows: dict[int, CommandsTask] = {}
        for chunk in chunks(stage_ids):
            rows.update((r.task_id, r) for r in session.scalars(select(CommandsTask).where(CommandsTask.task_id.in_(chunk))))
        sizes, pm = Sizes(), ctx.pathmap
        tool = f"{ctx.tools_dir}/sc_task.py"
        results = f"{ctx.run_dir or ctx.tools_dir}/task-results"
        out: list[ComponentSpec | MissingInput] = []
        for sid in stage_ids:
            row = rows.get(sid)
            if row is None:
                out.append(MissingInput(sid, f"task {sid} is not in the database"))
                continue
            task = _row_task(row)
            missing = sizes.first_missing(task.inputs)
            if missing is not None:
                out.append(MissingInput(sid, missing))
                continue
            result = f"{results}/{sid}.json"
            outs = [pm.to_remote(p) for p in task.outputs]
            out.append(ComponentSpec(
                stage_id=sid,
                inputs=tuple(Requirement(p, pm.to_remote(p), sizes(p) or 0) for p in task.inputs),
                out_dirs=tuple(sorted({results, *(posixpath.dirname(o) for o in outs)})),
                command=(ctx.python, "-S", tool, "run", "--task-id", str(sid), "--result", result, "--", *words_on_site(task, pm)),
                post=("cat", result),  # the record run wrote whole: no second Python start a task
                products=tuple(zip(outs, task.outputs, strict=True)),
                cost=task.cost if task.cost is not None else self.cost_seconds,
                threads=task.threads,
            ))  # fmt: skip
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        upsert(session, CommandsResult, "task_id", [
            {"task_id": r.stage_id, "remote_id": run.remote_id,
             "output": json.dumps(r.values["output"]) if r.values.get("output") is not None else None}
            for r in records
        ])  # fmt: skip
