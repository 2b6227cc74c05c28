"""define: a new remoteRun and its remoteComponents from a stage's pending work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from scbundle.core.app import App
from scbundle.core.errors import StateError
from scbundle.core.states import ComponentState, RunState
from scbundle.db.bulk import insert_rows
from scbundle.db.models import RemoteComponent, RemoteRun


@dataclass(frozen=True)
class Defined:
    remote_id: int
    n_components: int


def define(app: App, *, label: str, stage: str, limit: int | None, site: str | None, job_policy: str | None) -> Defined:
    st = app.stage(stage)
    site_name = site or app.config.default_site
    app.site(site_name)  # refuse an unknown site before touching the database
    policy = job_policy or app.config.stage_settings(stage).job_policy
    if limit is not None and limit <= 0:
        raise StateError(f"--limit must be positive, got {limit}")
    from scbundle.steps.advance import take_write_lock

    with app.db.session() as s:
        take_write_lock(s)  # PostgreSQL: concurrent defines (and advances) take turns instead of colliding
        work = st.pending_work(s, limit)
        if not work:
            raise StateError(f"no pending {stage} work to define (every item is already in a run)")
        return Defined(define_in(s, stage=stage, label=label, site=site_name, job_policy=policy, stage_ids=work), len(work))


def define_in(session: Session, *, stage: str, label: str, site: str, job_policy: str, stage_ids: Sequence[int]) -> int:
    """A new run of ``stage_ids`` inside the caller's transaction; returns its remote_id. A piece
    of work already in a run makes the insert fail (the unique (stage, stage_id) constraint)."""
    run = RemoteRun(stage=stage, label=label, site=site, state=RunState.NEW, job_policy=job_policy, attempt=1, fault=0)
    session.add(run)
    session.flush()
    ids = list(stage_ids)
    for start in range(0, len(ids), 50_000):  # one executemany a chunk: never a 10^6-row parameter list
        insert_rows(session, RemoteComponent.__table__, [
            {"remote_id": run.remote_id, "stage": stage, "stage_id": sid, "state": ComponentState.NEW, "fault": 0, "attempts": 0}
            for sid in ids[start : start + 50_000]
        ])  # fmt: skip
    return run.remote_id
