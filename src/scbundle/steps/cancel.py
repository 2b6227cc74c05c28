"""cancel: stop a run's job on the site (scancel / canceljob / the local registry) and mark it.

The run stays in `run` with a message until the job has ended; poll then keeps every
component that finished and faults the rest 2 (safe to revert). cancel polls once itself
after a short wait, so usually the run is already in `error` when it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from scbundle.core.app import App, utcnow
from scbundle.core.errors import StateError
from scbundle.core.states import RunState
from scbundle.db.claims import claim_run
from scbundle.db.runs import get_run
from scbundle.ops.links import site_off
from scbundle.site import jobs
from scbundle.site.link import live_transport
from scbundle.site.schedulers import scheduler_for
from scbundle.steps.collect import Polled, poll_run
from scbundle.steps.common import submit_context


@dataclass(frozen=True)
class Cancelled:
    remote_id: int
    job_id: str | None
    state: str
    message: str


def cancel(app: App, remote_id: int, *, settle_s: float = 20.0) -> Cancelled:
    with app.db.session() as s:
        run = get_run(s, remote_id, [RunState.RUN, RunState.PENDING], "cancel")
        if run.state == RunState.PENDING or not run.job_id:
            raise StateError(f"remote_id {remote_id} has no submitted job to cancel (state {run.state})")
        s.expunge(run)
    t = live_transport(run.site, app.site(run.site), site_off(app, run.site))
    try:
        sched = scheduler_for(run.site, app.site(run.site))
        ctx = submit_context(app, run)
        jobs.cancel(t, sched, ctx, run.job_id or "")
        with app.db.session() as s:
            r = get_run(s, remote_id)
            r.message = f"cancel requested at {utcnow():%Y-%m-%d %H:%M:%S} UTC (job {run.job_id})"
            r.last_poll = None
        polled: Polled | None = None
        deadline = time.monotonic() + settle_s
        while True:
            with claim_run(app.db, remote_id, [RunState.RUN]) as claim:  # a poller may be at it: never two replays
                polled = poll_run(app, claim.run, t, claim) if claim else None
            if polled is None:  # another process polls it (or has brought it back): read what it wrote
                with app.db.read_session() as s:
                    r = get_run(s, remote_id)
                    polled = Polled(remote_id, "polled by another process", r.state, message=r.message)
            if polled.state != RunState.RUN or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        t.close()
    return Cancelled(remote_id, run.job_id, polled.state, polled.message or f"job {polled.job_state}")
