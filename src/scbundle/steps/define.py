"""define: a new remoteRun and its remoteComponents from a stage's pending work."""

from __future__ import annotations

from dataclasses import dataclass

from scbundle.core.app import App
from scbundle.core.errors import StateError
from scbundle.core.names import check_label
from scbundle.db.locks import take_write_lock
from scbundle.db.runs import new_run
from scbundle.stages.registry import get_stage


@dataclass(frozen=True)
class Defined:
    remote_id: int
    n_components: int


def define(app: App, *, label: str, stage: str, limit: int | None, site: str | None, job_policy: str | None) -> Defined:
    check_label(label)  # it names directories here and on the site: refused before anything else
    st = get_stage(stage, app.config)
    site_name = site or app.config.default_site
    app.site(site_name)  # refuse an unknown site before touching the database
    policy = job_policy or app.config.stage_settings(stage).job_policy
    if limit is not None and limit <= 0:
        raise StateError(f"--limit must be positive, got {limit}")
    with app.db.session() as s:
        take_write_lock(s)  # PostgreSQL: concurrent defines (and advances) take turns instead of colliding
        work = st.pending_work(s, limit)
        if not work:
            raise StateError(f"no pending {stage} work to define (every item is already in a run)")
        return Defined(new_run(s, stage=stage, label=label, site=site_name, job_policy=policy, stage_ids=work), len(work))
