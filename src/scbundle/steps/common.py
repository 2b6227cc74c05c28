"""What several steps share: a run's build context and submit context, the report of a pass."""

from __future__ import annotations

from dataclasses import dataclass, field

from scbundle.core.app import App
from scbundle.core.names import check_job_name, check_run_names
from scbundle.db.models import RemoteRun
from scbundle.site.layout import registry_dir, remote_run_dir, tools_dir
from scbundle.site.pathmap import PathMap
from scbundle.site.schedulers.base import SubmitContext
from scbundle.stages.base import BuildContext


def build_context(app: App, run: RemoteRun, run_dir: str | None = None) -> BuildContext:
    """What a stage builds a run's commands and paths from; the run's label and stage checked
    first (UnsafeNameError naming the way out), so no path is built from unchecked text."""
    check_run_names(run.remote_id, run.label, run.stage)
    site = app.site(run.site)
    return BuildContext(
        remote_id=run.remote_id,
        label=run.label,
        pathmap=PathMap.of(site.paths),
        tools_dir=tools_dir(site),
        python=site.python,
        run_dir=run_dir or run.remote_dir,
    )


def submit_context(app: App, run: RemoteRun) -> SubmitContext:
    """Where a run lives on the site and how its job is named; checked like build_context."""
    check_run_names(run.remote_id, run.label, run.stage)
    if run.job_name:
        check_job_name(run.job_name)
    site = app.site(run.site)
    # the directory prepare gave the run; a run made before installation ids has the old rule's
    run_dir = run.remote_dir or remote_run_dir(site.permanent_root, run.stage, run.remote_id, run.attempt, None)
    return SubmitContext(
        job_name=run.job_name or "",
        run_dir=run_dir,
        script=f"{run_dir}/job.sh",
        tools_dir=tools_dir(site),
        python=site.python,
        registry=registry_dir(site),
        account=site.account,
        partition=site.partition,
        slurm_conf=site.slurm_conf,
    )


@dataclass(frozen=True)
class StepReport:
    """What one exec or poll pass did: per-run results, runs paused for auth, or why it skipped."""

    results: list
    auth: list[int]
    auth_reason: str | None = None
    skipped: str | None = None
    held: list[str] = field(default_factory=list)  # throttles that held runs back, runs another process had
