"""Runs in the database: a new one with its components, one by remote_id (its state checked),
or the runs a step works on."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from scbundle.core.errors import StateError
from scbundle.core.names import check_label, check_stage_name
from scbundle.core.states import OPEN_COMPONENT_STATES, ComponentState, Counts, RunState, allowed
from scbundle.db import journal
from scbundle.db.bulk import insert_rows
from scbundle.db.journal import ReplayCounts
from scbundle.db.models import RemoteComponent, RemoteRun


def _states(states: Sequence[str]) -> str:
    return " or ".join(repr(str(s)) for s in states)


def get_run(session: Session, remote_id: int, states: Sequence[str] | None = None, step: str = "", *, lock: bool = False) -> RemoteRun:
    """The run, its state checked; ``lock``: its row locked for the rest of the transaction
    (PostgreSQL: FOR UPDATE; SQLite's write transactions hold the database's write lock), so a
    write made on what was read here is compare-and-set."""
    run = session.get(RemoteRun, remote_id, with_for_update=lock or None, populate_existing=lock)
    if run is None:
        raise StateError(f"remote_id {remote_id} does not exist")
    if states is not None and run.state not in states:
        raise StateError(f"remote_id {remote_id} is in state {str(run.state)!r}; {step or 'this step'} needs state {_states(states)}")
    return run


def select_runs(
    session: Session, states: Sequence[str], remote_id: int | None, label: str | None, step: str
) -> list[RemoteRun]:
    """The runs a step works on: one by remote_id (state checked), or all in ``states``."""
    if remote_id is not None:
        return [get_run(session, remote_id, states, step)]
    q = select(RemoteRun).where(RemoteRun.state.in_(states)).order_by(RemoteRun.remote_id)
    if label is not None:
        q = q.where(RemoteRun.label == label)
    return list(session.scalars(q))


def new_run(session: Session, *, stage: str, label: str, site: str, job_policy: str, stage_ids: Sequence[int], by: str = "define") -> int:
    """A new run of ``stage_ids`` inside the caller's transaction, made by step ``by`` (define,
    advance), journaled (none -> new); returns its remote_id. A piece
    of work already in a run makes the insert fail (the unique (stage, stage_id) constraint).
    The label and stage become paths and job names: checked (UnsafeNameError)."""
    check_label(label)
    check_stage_name(stage)
    run = RemoteRun(stage=stage, label=label, site=site, state=RunState.NEW, job_policy=job_policy, attempt=1, fault=0)
    session.add(run)
    session.flush()
    ids = list(stage_ids)
    for start in range(0, len(ids), 50_000):  # one executemany a chunk: never a 10^6-row parameter list
        insert_rows(session, RemoteComponent.__table__, [
            {"remote_id": run.remote_id, "stage": stage, "stage_id": sid, "state": ComponentState.NEW, "fault": 0, "attempts": 0}
            for sid in ids[start : start + 50_000]
        ])  # fmt: skip
    journal.record(session, kind="run", command=by, remote_id=run.remote_id, label=label, stage=stage, site=site,
                   dst=RunState.NEW, fault=0, message=f"{len(ids)} component(s)")  # fmt: skip
    return run.remote_id


def move(run: RemoteRun, to: str, by: str, *, fault: int | None = None, message: str | None = None,
         counts: ReplayCounts | None = None) -> None:
    """Move ``run`` to state ``to`` as step ``by`` does, if the transition table allows it
    (StateError otherwise, naming both states); ``prev_state`` remembers where an error or
    auth came from, for revert. One journal event goes into the run's own session (a poll's
    ``counts``: what it replayed), committed with the change or rolled back with it."""
    src = RunState(run.state)
    dst = RunState(to)
    if not allowed(src, dst, by):
        raise StateError(f"remote_id {run.remote_id}: {by} cannot move a run from {str(src)!r} to {str(dst)!r}")
    if dst in (RunState.ERROR, RunState.AUTH) and src != dst:
        run.prev_state = src
    elif dst not in (RunState.ERROR, RunState.AUTH):
        run.prev_state = None
    run.state = dst
    if fault is not None:
        run.fault = int(fault)
    if message is not None or fault == 0:
        run.message = message[:2000] if message else None
    session = object_session(run)
    if session is not None:  # a run outside any session changes nothing in the database: nothing to tell
        journal.record(session, kind="run", command=by, remote_id=run.remote_id, label=run.label, stage=run.stage,
                       site=run.site, src=src, dst=dst, fault=run.fault, message=run.message, counts=counts)  # fmt: skip


def component_counts(session: Session, remote_id: int) -> Counts:
    """The run's components by state, with the faults of the failed and abandoned ones."""
    rows = session.execute(
        select(RemoteComponent.state, RemoteComponent.fault, func.count())
        .where(RemoteComponent.remote_id == remote_id)
        .group_by(RemoteComponent.state, RemoteComponent.fault)
    ).all()
    open_ = full = error = abandoned = 0
    error_faults: dict[int, int] = {}
    abandoned_faults: dict[int, int] = {}
    for state, fault, n in rows:
        if state in OPEN_COMPONENT_STATES:
            open_ += n
        elif state == ComponentState.FULL:
            full += n
        elif state == ComponentState.ERROR:
            error += n
            error_faults[int(fault)] = error_faults.get(int(fault), 0) + n
        elif state == ComponentState.ABANDONED:
            abandoned += n
            abandoned_faults[int(fault)] = abandoned_faults.get(int(fault), 0) + n
    return Counts(open_, full, error, abandoned, error_faults, abandoned_faults)
