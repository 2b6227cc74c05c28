"""poll: every run in state run, collected (steps/collect.py) through the step loop.

A run whose poll fails keeps its own failure: a link or database hiccup, a full local disk,
leaves it in ``run`` with fault 2 and the reason (the next poll tries again); what the job
returned being refused (an unsafe archive, a run directory that is not this run's) moves it to
``error`` with its components, for revert; anything unforeseen leaves it in ``run`` with fault 4
and the reason, and never stops the other runs.
"""

from __future__ import annotations

from sqlalchemy import update

from scbundle.core.app import App, utcnow
from scbundle.core.errors import (
    CommandError,
    DatabaseError,
    DbinfoError,
    LocalIOError,
    OversizeError,
    ScbundleError,
    UnsafeArchiveError,
)
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.core.text import printable
from scbundle.db.claims import Claim
from scbundle.db.journal import ReplayCounts
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run, move, select_runs
from scbundle.site.link import Transport
from scbundle.steps.collect import Polled, poll_run
from scbundle.steps.common import StepReport
from scbundle.steps.loop import RunStep, describe, run_step

EXIT_REFUSED = 3  # remote/sc_remote.py: a refusal (a path, a member, a stream), not a hiccup


def refused(err: BaseException) -> bool:
    """Whether a poll failure is the site's returns being refused (the same every time: the
    run goes to error) rather than a hiccup the next poll may not meet."""
    if isinstance(err, CommandError):  # the command failed by itself: its exit says why, not the cut stream
        # the tool is one word of the argv (the bootstrap before it names every tool in its digests)
        return err.returncode == EXIT_REFUSED and "sc_remote.py" in err.argv
    for e in (err, err.__cause__):
        if isinstance(e, UnsafeArchiveError | DbinfoError | OversizeError):
            return True
        if isinstance(e, ScbundleError) and getattr(e, "refused", False):
            return True
    return False


class PollStep(RunStep):
    name = "poll"
    states = (RunState.RUN,)
    needs_link = True

    def work(self, app: App, claim: Claim, transport: Transport | None) -> Polled:
        assert transport is not None
        return poll_run(app, claim.run, transport, claim)

    def failed(self, app: App, claim: Claim, err: Exception) -> Polled:
        rid = claim.run.remote_id
        text = printable(f"poll: {describe(err)}")[:2000]
        with claim.session() as s:
            r = get_run(s, rid, lock=True)
            if r.state != RunState.RUN:
                return Polled(rid, "?", str(r.state), error=text)
            r.last_poll = utcnow()
            if refused(err):
                fault = int(getattr(err, "fault", Fault.DATA))
                n = s.execute(
                    update(RemoteComponent)
                    .where(RemoteComponent.remote_id == rid, RemoteComponent.state == ComponentState.RUN)
                    .values(state=ComponentState.ERROR, fault=fault, message=text)
                ).rowcount
                move(r, RunState.ERROR, "poll", fault=fault, message=f"{text} (what the job returned is refused: `scbundle revert --remote-id {rid}` runs it again)",
                     counts=ReplayCounts(failed=n, refused=n))
            elif isinstance(err, CommandError | DatabaseError | LocalIOError | OSError | TimeoutError):
                r.fault, r.message = int(Fault.SYSTEM), f"{text} (poll tries again)"
            else:
                r.fault, r.message = int(Fault.PROGRAM), f"{text} (poll tries again; `scbundle retire --remote-id {rid}` takes it out)"
            return Polled(rid, "?", str(r.state), error=text)


def poll_runs(app: App, *, remote_id: int | None = None, label: str | None = None, min_age_s: float | None = None) -> StepReport:
    """Poll runs in state run (only those whose last_poll is older than ``min_age_s``, if given)."""
    with app.db.read_session() as s:
        runs: list[RemoteRun] = select_runs(s, [RunState.RUN], remote_id, label, "poll")
    if min_age_s is not None:
        now = utcnow()
        runs = [r for r in runs if r.last_poll is None or (now - r.last_poll).total_seconds() >= min_age_s]
    return run_step(app, PollStep(), runs, named=remote_id is not None)
