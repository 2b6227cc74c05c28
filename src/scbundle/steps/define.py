"""define: a new remoteRun and its remoteComponents from a stage's pending work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scbundle.core.app import App
from scbundle.core.errors import StateError
from scbundle.core.names import check_label
from scbundle.db.locks import take_write_lock
from scbundle.db.runs import new_run
from scbundle.stages.registry import get_stage
from scbundle.stages.work import add_items, read_work_file, work_context


@dataclass(frozen=True)
class Defined:
    remote_id: int
    n_components: int


def define(
    app: App, *, label: str, stage: str, limit: int | None, site: str | None, job_policy: str | None, tasks: Path | None = None
) -> Defined:
    """A new run of ``stage``'s pending work (at most ``limit``); with ``tasks``, of the work
    items that file registers (work.add_items: checked, named by line), in the same transaction."""
    check_label(label)  # it names directories here and on the site: refused before anything else
    st = get_stage(stage, app.config)
    site_name = site or app.config.default_site
    app.site(site_name)  # refuse an unknown site before touching the database
    policy = job_policy or app.config.stage_settings(stage).job_policy
    if limit is not None and limit <= 0:
        raise StateError(f"--limit must be positive, got {limit}")
    file_items = read_work_file(st, tasks) if tasks is not None else None
    with app.db.session() as s:
        take_write_lock(s)  # PostgreSQL: concurrent defines (and advances) take turns instead of colliding
        if file_items is not None:
            assert tasks is not None
            ids = add_items(s, st, file_items[1], work_context(app, site_name, str(tasks)), file_items[0])
            pending = set(st.pending_work(s, None))
            work = [i for i in dict.fromkeys(ids) if i in pending][:limit]
            if not work:
                raise StateError(f"every task of {tasks} is already in a run: nothing to define")
        else:
            work = st.pending_work(s, limit)
        if not work:
            raise StateError(f"no pending {stage} work to define (every item is already in a run)")
        return Defined(new_run(s, stage=stage, label=label, site=site_name, job_policy=policy, stage_ids=work), len(work))
