"""Putting work in: the supported way for a stage's work items to reach its tables, from
Python (``add_work``) or from a file (``read_work_file``: `scbundle work add STAGE FILE`,
`scbundle define --stage STAGE --tasks FILE`). The stage checks each item
(``Stage.add_work``); an error names the file and line, and nothing is added."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from scbundle.core.app import App
from scbundle.core.errors import ConfigError, ScbundleError
from scbundle.db.locks import take_write_lock
from scbundle.site.pathmap import PathMap
from scbundle.stages.base import Stage, WorkContext
from scbundle.stages.registry import get_stage

MAX_WORK_FILE = 1 << 30  # a task file larger than this is refused, not read into memory


class WorkError(ScbundleError):
    """A work item is refused: the file and line (or the item's number) and why."""


def work_context(app: App, site: str | None, source: str) -> WorkContext:
    name = site or app.config.default_site
    return WorkContext(name, PathMap.of(app.site(name).paths), source)


def read_work_file(stage: Stage, path: Path) -> tuple[list[int], list[Mapping[str, Any]]]:
    """The items of a work file and their line numbers; WorkError names the file and line."""
    try:
        size = path.stat().st_size
        if size > MAX_WORK_FILE:
            raise WorkError(f"{path}: {size} bytes, over the {MAX_WORK_FILE} a work file may have")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise WorkError(f"{path}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise WorkError(f"{path}: cannot read it: {err.strerror}") from None
    lines, items = [], []
    try:
        for lineno, item in stage.read_work(text):
            lines.append(lineno)
            items.append(item)
    except ValueError as err:
        raise WorkError(f"{path}:{err}") from None
    if not items:
        raise WorkError(f"{path}: no work items in it")
    return lines, items


def add_items(session: Session, stage: Stage, items: Sequence[Mapping[str, Any]], ctx: WorkContext, lines: Sequence[int] | None = None) -> list[int]:
    """``stage.add_work`` in the caller's transaction; a refused item is named by its line."""
    try:
        return stage.add_work(session, items, ctx)
    except ValueError as err:
        text = str(err)
        if lines is not None and text.startswith("item "):
            n, _, rest = text[5:].partition(":")
            if n.isdigit() and 1 <= int(n) <= len(lines):
                raise WorkError(f"{ctx.source}:{lines[int(n) - 1]}:{rest}") from None
        raise WorkError(f"{ctx.source}: {text}") from None


def add_work(app: App, stage: str, items: Sequence[Mapping[str, Any]], *, site: str | None = None, source: str = "the items given") -> list[int]:
    """Register work items of ``stage`` from Python, in one transaction; returns their
    stage_ids (an item already registered gives its id). The API a plugin's own code uses."""
    st = get_stage(stage, app.config)
    ctx = work_context(app, site, source)
    with app.db.session() as s:
        take_write_lock(s)
        return add_items(s, st, items, ctx)


def add_work_file(app: App, stage: str, path: Path, *, site: str | None = None) -> list[int]:
    st = get_stage(stage, app.config)
    lines, items = read_work_file(st, path)
    ctx = work_context(app, site, str(path))
    with app.db.session() as s:
        take_write_lock(s)
        return add_items(s, st, items, ctx, lines)


def check_takes_work(stage: Stage) -> None:
    if type(stage).add_work is Stage.add_work:
        raise ConfigError(f"stage {stage.name!r} takes no work items from a file: its pending work comes from its own tables")
