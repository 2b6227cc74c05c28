"""revert: put failed or paused work back in line (by remote_id or label, by fault, or auth)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from scbundle.core.app import App
from scbundle.core.errors import StateError
from scbundle.core.states import MAX_ATTEMPTS, ComponentState, RunState
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import select_runs


@dataclass(frozen=True)
class Reverted:
    remote_id: int
    to_state: str
    requeued: int = 0
    abandoned: int = 0


def _revert_error(s, run: RemoteRun) -> Reverted:
    comps = list(
        s.scalars(select(RemoteComponent).where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.ERROR))
    )
    requeued = abandoned = 0
    for c in comps:
        if c.attempts >= MAX_ATTEMPTS:
            c.state = ComponentState.ABANDONED
            abandoned += 1
        else:
            c.state, c.fault, c.message, c.idx = ComponentState.NEW, 0, None, None
            requeued += 1
    if run.prev_state in (RunState.NEW, RunState.PENDING):
        target = run.prev_state  # failed before any job ran: the bundle (if any) is still good
    else:
        target = RunState.NEW if requeued else RunState.FULL
        if requeued:
            run.attempt += 1  # a new job name: the old job's results never mix with the new one's
            run.job_id = None
    left = s.scalar(
        select(RemoteComponent.id)
        .where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state.in_([ComponentState.NEW, ComponentState.PENDING]))
        .limit(1)
    )
    if left is None:
        target = RunState.FULL  # every failure was abandoned: nothing left to run
    run.state, run.prev_state, run.fault, run.message = target, None, 0, None
    if target == RunState.NEW:
        # components that the job never got to run in are re-prepared too
        for c in s.scalars(select(RemoteComponent).where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.PENDING)):
            c.state = ComponentState.NEW
    return Reverted(run.remote_id, target, requeued, abandoned)


def revert(
    app: App, *, remote_id: int | None = None, label: str | None = None, fault: int | None = None, auth: bool = False
) -> list[Reverted]:
    if remote_id is None and label is None and not auth:
        raise StateError("revert needs --remote-id, --label or --auth")
    out = []
    with app.db.session() as s:
        if auth:
            runs = select_runs(s, [RunState.AUTH], remote_id, label, "revert --auth")
            for run in runs:
                target = run.prev_state or RunState.PENDING
                run.state, run.prev_state = target, None
                out.append(Reverted(run.remote_id, target))
            return out
        runs = select_runs(s, [RunState.ERROR], remote_id, label, "revert")
        for run in runs:
            if fault is not None and run.fault != fault:
                continue
            out.append(_revert_error(s, run))
    return out
