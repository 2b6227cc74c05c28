"""retire: take a run out for good, from any state that is not final (new, pending, run,
error, auth), when nothing else will move it. Its full components and their results stay;
the others are released as pending work (their rows go, so `define` puts the work in a new
run) or abandoned (reported, never run again). A run whose job may still be running has it
cancelled first over the link (``force``: the operator says the job is gone, the link being
down); its run directory on the site is left, or removed with ``clean_remote``.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, update

from scbundle.core.app import App
from scbundle.core.errors import LinkDownError, ScbundleError, StateError
from scbundle.core.states import ComponentState, RunState
from scbundle.db.claims import claim_run, unclaimed
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run, move
from scbundle.ops.links import site_off
from scbundle.site import jobs
from scbundle.site.link import live_transport
from scbundle.site.schedulers import scheduler_for
from scbundle.steps.common import submit_context

RETIRABLE = (RunState.NEW, RunState.PENDING, RunState.RUN, RunState.ERROR, RunState.AUTH)
NOT_DONE = (ComponentState.NEW, ComponentState.PENDING, ComponentState.RUN, ComponentState.ERROR, ComponentState.ABANDONED)


@dataclass(frozen=True)
class Retired:
    remote_id: int
    from_state: str
    released: int
    abandoned: int
    kept: int  # full components, with their results
    cancelled: str | None  # the job cancelled on the site, if there was one to cancel
    cleaned: str | None  # the run directory removed on the site
    message: str


def _cancel_and_clean(app: App, run: RemoteRun, *, cancel: bool, clean: bool, force: bool) -> tuple[str | None, str | None]:
    if not cancel and not clean:
        return None, None
    try:
        t = live_transport(run.site, app.site(run.site), site_off(app, run.site))
    except LinkDownError as err:
        if force:
            return None, None
        raise StateError(
            f"remote_id {run.remote_id}: {err}; its job may still be running: start the link, or retire it with --force"
            + (" (without --clean-remote)" if clean else ""),
            remote_id=run.remote_id,
        ) from None
    try:
        ctx = submit_context(app, run)
        cancelled = cleaned = None
        if cancel:
            try:
                jobs.cancel(t, scheduler_for(run.site, app.site(run.site)), ctx, run.job_id or "")
                cancelled = run.job_id
            except ScbundleError as err:
                if not force:
                    raise StateError(f"remote_id {run.remote_id}: cancelling job {run.job_id} failed ({err}); retire it with --force if the job is gone", remote_id=run.remote_id) from None
        if clean:
            t.run(["rm", "-rf", "--", ctx.run_dir])
            cleaned = ctx.run_dir
        return cancelled, cleaned
    finally:
        t.close()


def retire(
    app: App, remote_id: int, *, components: Literal["release", "abandon"], clean_remote: bool = False, force: bool = False
) -> Retired:
    if components not in ("release", "abandon"):
        raise StateError(f"retire: components must be 'release' or 'abandon', not {components!r}")
    with claim_run(app.db, remote_id, RETIRABLE) as claim:
        if claim is None:
            raise unclaimed(app.db, remote_id, RETIRABLE, "retire")
        run = claim.run
        has_job = run.job_id is not None and (run.state == RunState.RUN or (run.state == RunState.AUTH and run.prev_state == RunState.RUN))
        cancelled, cleaned = _cancel_and_clean(app, run, cancel=has_job, clean=clean_remote, force=force)
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        with claim.session() as s:
            r = get_run(s, remote_id, RETIRABLE, "retire", lock=True)
            src = str(r.state)
            kept = len(s.scalars(select(RemoteComponent.id).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state == ComponentState.FULL)).all())
            todo = select(RemoteComponent.id).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state.in_(NOT_DONE))
            n = len(s.scalars(todo).all())
            if components == "release":
                s.execute(delete(RemoteComponent).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state.in_(NOT_DONE)))
                released, abandoned = n, 0
            else:
                s.execute(
                    update(RemoteComponent)
                    .where(RemoteComponent.remote_id == remote_id, RemoteComponent.state.in_(NOT_DONE))
                    .values(state=ComponentState.ABANDONED, message=f"retired by {who}")
                )
                released, abandoned = 0, n
            what = f"{released} component(s) released as pending work" if released else f"{abandoned} component(s) abandoned"
            message = f"retired by {who} from {src}: {what}, {kept} full kept" + (f"; job {cancelled} cancelled" if cancelled else "") + (
                f"; {cleaned} removed on the site" if cleaned else "")  # fmt: skip
            move(r, RunState.RETIRED, "retire", message=message)
        return Retired(remote_id, src, released, abandoned, kept, cancelled, cleaned, message)
