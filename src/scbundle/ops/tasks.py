"""Task switches (exec, poll, prepare, advance) in the database, and the registry of steps in
flight, so the 12-hour maintenance can switch network tasks off and wait for them to end."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
from sqlalchemy import delete, select

from scbundle.core.app import App, utcnow
from scbundle.core.errors import StateError
from scbundle.db import journal
from scbundle.db.models import TaskActivity, TaskSwitch

TASKS = ("prepare", "exec", "poll", "advance")


@dataclass(frozen=True)
class TaskState:
    task: str
    enabled: bool
    changed: str | None
    changed_by: str | None
    in_flight: int


def _check(names: Iterable[str]) -> list[str]:
    names = list(names)
    bad = [n for n in names if n not in TASKS]
    if bad or not names:
        raise StateError(f"unknown task(s) {bad or names}: tasks are {', '.join(TASKS)}")
    return names


def set_enabled(app: App, names: Iterable[str], enabled: bool) -> None:
    """Switch tasks on or off; each switch that changes is journaled with who did it."""
    who = journal.whoami()
    with app.db.session() as s:
        for name in _check(names):
            row = s.get(TaskSwitch, name)
            was = True if row is None else row.enabled
            if row is None:
                s.add(TaskSwitch(task=name, enabled=enabled, changed=utcnow(), changed_by=who))
            else:
                row.enabled, row.changed, row.changed_by = enabled, utcnow(), who
            if was != enabled:
                journal.record(s, kind="task", command="tasks", src="on" if was else "off", dst="on" if enabled else "off",
                               message=f"task {name} switched {'on' if enabled else 'off'} by {who}")  # fmt: skip


def is_enabled(app: App, name: str) -> bool:
    with app.db.session() as s:
        row = s.get(TaskSwitch, name)
        return True if row is None else row.enabled


def _prune_dead(s) -> None:
    """Forget in-flight rows of processes on this host that no longer exist (a killed step)."""
    here = socket.gethostname()
    for row in s.scalars(select(TaskActivity).where(TaskActivity.host == here)):
        if not psutil.pid_exists(row.pid):
            s.delete(row)


def states(app: App) -> list[TaskState]:
    with app.db.session() as s:
        _prune_dead(s)
        out = []
        for name in TASKS:
            row = s.get(TaskSwitch, name)
            n = len(list(s.scalars(select(TaskActivity.id).where(TaskActivity.task == name))))
            out.append(
                TaskState(
                    name, True if row is None else row.enabled,
                    row.changed.isoformat(sep=" ", timespec="seconds") if row else None,
                    row.changed_by if row else None, n,
                )
            )  # fmt: skip
        return out


@contextmanager
def in_flight(app: App, name: str) -> Iterator[None]:
    """Register this process as running ``name`` for the duration of the block."""
    with app.db.session() as s:
        row = TaskActivity(task=name, host=socket.gethostname(), pid=os.getpid(), started=utcnow())
        s.add(row)
        s.flush()
        row_id = row.id
    try:
        yield
    finally:
        with app.db.session() as s:
            s.execute(delete(TaskActivity).where(TaskActivity.id == row_id))


def wait(app: App, names: Iterable[str] = ("exec", "poll"), *, timeout: float | None = None, interval: float = 1.0) -> float:
    """Return once no step of ``names`` is in flight; seconds waited. StateError on timeout."""
    names = _check(names)
    t0 = time.monotonic()
    while True:
        with app.db.session() as s:
            _prune_dead(s)
            busy = list(s.scalars(select(TaskActivity).where(TaskActivity.task.in_(names))))
            desc = ", ".join(f"{r.task} pid {r.pid} on {r.host}" for r in busy)
        if not busy:
            return time.monotonic() - t0
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise StateError(f"still in flight after {timeout:g} s: {desc}")
        time.sleep(interval)
