"""define: a new remoteRun and its remoteComponents from a stage's pending work."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert

from .app import App
from .db.models import RemoteComponent, RemoteRun
from .errors import StateError
from .states import ComponentState, RunState


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
    with app.db.session() as s:
        work = st.pending_work(s, limit)
        if not work:
            raise StateError(f"no pending {stage} work to define (every item is already in a run)")
        run = RemoteRun(stage=stage, label=label, site=site_name, state=RunState.NEW, job_policy=policy, attempt=1, fault=0)
        s.add(run)
        s.flush()
        s.execute(
            insert(RemoteComponent),
            [
                {"remote_id": run.remote_id, "stage": stage, "stage_id": sid, "state": ComponentState.NEW, "fault": 0, "attempts": 0}
                for sid in work
            ],
        )
        return Defined(run.remote_id, len(work))
