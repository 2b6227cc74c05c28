"""poll: every run in state run, collected (steps/collect.py), one run's failure its own."""

from __future__ import annotations

from scbundle.core.app import App, utcnow
from scbundle.core.errors import LinkDownError, ScbundleError
from scbundle.core.states import RunState
from scbundle.db.claims import claim_run, unclaimed
from scbundle.db.runs import select_runs
from scbundle.site.link import Transport, live_transport
from scbundle.steps.collect import Polled, poll_run
from scbundle.steps.common import StepReport


def poll_runs(
    app: App, *, remote_id: int | None = None, label: str | None = None, min_age_s: float | None = None
) -> StepReport:
    """Poll runs in state run (only those whose last_poll is older than ``min_age_s``, if given)."""
    from scbundle.ops.auth import mark_auth, mark_auth_in
    from scbundle.ops.tasks import in_flight, is_enabled

    if not is_enabled(app, "poll"):
        return StepReport([], [], skipped="poll is switched off (`scbundle tasks on poll`)")
    with in_flight(app, "poll"):
        with app.db.read_session() as s:
            runs = select_runs(s, [RunState.RUN], remote_id, label, "poll")
        if min_age_s is not None:
            now = utcnow()
            runs = [r for r in runs if r.last_poll is None or (now - r.last_poll).total_seconds() >= min_age_s]
        out: list[Polled] = []
        paused: list[int] = []
        reason = None
        transports: dict[str, Transport] = {}
        held: list[str] = []
        down_sites: set[str] = set()
        for n, run in enumerate(runs):
            if run.site in down_sites:
                continue
            try:
                with claim_run(app.db, run.remote_id, [RunState.RUN]) as claim:
                    if claim is None:  # another process is polling it, or it moved on meanwhile
                        if remote_id is not None:
                            held.append(str(unclaimed(app.db, run.remote_id, [RunState.RUN], "poll")))
                        continue
                    mine = claim.run  # as read under the claim
                    try:
                        t = transports.get(run.site)
                        if t is None:
                            t = transports[run.site] = live_transport(run.site, app.site(run.site))
                        polled = poll_run(app, mine, t, claim)
                    except LinkDownError as err:
                        reason = str(err)
                        with claim.session() as s:
                            paused += mark_auth_in(s, [mine.remote_id], f"poll: {err}")
                        paused += mark_auth(app, [r.remote_id for r in runs[n + 1 :] if r.site == run.site], f"poll: {err}")
                        down_sites.add(run.site)
                        continue
                out.append(polled)  # committed
            except ScbundleError as err:  # a bad dbinfo file, the database cut off: nothing changed, the run stays in run
                err.remote_id = run.remote_id
                out.append(Polled(run.remote_id, "?", run.state, error=str(err)))
        for t in transports.values():
            t.close()
        return StepReport(out, paused, reason, held=held)
