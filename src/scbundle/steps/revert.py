"""revert: put failed, abandoned or paused work back in line (by remote_id or label, by the
components' fault code, or runs paused in auth).

- ``revert``: failed (error) components go back to new, under a new attempt (a new job name:
  the old job's results never mix with the new one's); one that has failed in
  ``MAX_ATTEMPTS`` jobs is abandoned instead. A run that failed before any job ran goes back
  to where it was (new, or pending with its bundle).
- ``revert --abandoned``: abandoned components back to new with a fresh count of attempts,
  for when their input or the program was fixed (a full run reopens).
- ``revert --auth``: runs paused when the link was down return to where they were.

Each run is claimed first, so a revert never races a step working on the run; its state,
fault and message are settled from its components' counts afterwards (core.states.settle).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from scbundle.core.app import App
from scbundle.core.errors import StateError
from scbundle.core.states import MAX_ATTEMPTS, ComponentState, RunState, settle
from scbundle.db.claims import claim_run, unclaimed
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import component_counts, get_run, move, select_runs


@dataclass(frozen=True)
class Reverted:
    remote_id: int
    from_state: str
    to_state: str
    requeued: int = 0
    abandoned: int = 0
    fault: int = 0
    message: str | None = None


def _requeue(s, run: RemoteRun, states: list[str], fault: int | None, *, fresh: bool) -> tuple[int, int]:
    """Components of ``run`` in ``states`` (of ``fault``) back to new; (requeued, abandoned):
    an error component that has failed in MAX_ATTEMPTS jobs is abandoned instead, unless
    ``fresh`` (revert --abandoned: a new count of attempts)."""
    q = select(RemoteComponent).where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state.in_(states))
    if fault is not None:
        q = q.where(RemoteComponent.fault == fault)
    requeued = abandoned = 0
    for c in s.scalars(q):
        if not fresh and c.attempts >= MAX_ATTEMPTS:
            c.state = ComponentState.ABANDONED
            c.message = f"abandoned after {c.attempts} jobs: {c.message or ''}"[:2000]
            abandoned += 1
        else:
            c.state, c.fault, c.message, c.idx = ComponentState.NEW, 0, None, None
            if fresh:
                c.attempts = 0
            requeued += 1
    s.flush()
    return requeued, abandoned


def _settle_after(s, run: RemoteRun, requeued: int, abandoned: int) -> Reverted:
    src = str(run.state)
    if requeued:
        # components in the old bundle that never ran go back to new with the requeued ones
        s.execute(
            update(RemoteComponent)
            .where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.PENDING)
            .values(state=ComponentState.NEW, idx=None)
        )
        if run.job_id is not None or run.prev_state == RunState.RUN or run.state == RunState.FULL:
            run.attempt += 1  # a new job name and run directory
            run.job_id = None
        move(run, RunState.NEW, "revert", fault=0)
        run.advanced, run.advance_note = False, None
    elif run.state == RunState.ERROR and run.prev_state in (RunState.NEW, RunState.PENDING) and component_counts(s, run.remote_id).open:
        move(run, RunState(run.prev_state), "revert", fault=0)  # it failed before any job ran: where it was
    else:
        counts = component_counts(s, run.remote_id)
        if counts.open:
            raise StateError(f"remote_id {run.remote_id}: {counts.open} component(s) are still open in a run in state {src!r}")
        state, fault, message = settle(counts, job_policy=run.job_policy)
        if state != run.state:
            move(run, state, "revert", fault=fault, message=message)
        else:
            run.fault, run.message = fault, message
    return Reverted(run.remote_id, src, str(run.state), requeued, abandoned, run.fault, run.message)


def revert(
    app: App,
    *,
    remote_id: int | None = None,
    label: str | None = None,
    fault: int | None = None,
    auth: bool = False,
    abandoned: bool = False,
) -> list[Reverted]:
    """The runs reverted (each claimed first); nothing to revert gives []. ``fault``: only
    components with this fault code."""
    if remote_id is None and label is None and not auth:
        raise StateError("revert needs --remote-id, --label or --auth")
    if auth:
        states: list[str] = [RunState.AUTH]
        step = "revert --auth"
    elif abandoned:
        states = [RunState.ERROR, RunState.FULL]
        step = "revert --abandoned"
    else:
        states = [RunState.ERROR]
        step = "revert"
    with app.db.read_session() as s:
        try:
            runs = select_runs(s, states, remote_id, label, step)
        except StateError as err:
            run = s.get(RemoteRun, remote_id) if remote_id is not None else None
            if run is not None and run.state == RunState.FULL and not abandoned and component_counts(s, run.remote_id).abandoned:
                raise StateError(f"{err} (its abandoned components: `scbundle revert --remote-id {remote_id} --abandoned`)") from None
            raise
    out = []
    for run in runs:
        with claim_run(app.db, run.remote_id, states) as claim:
            if claim is None:
                if remote_id is not None:
                    raise unclaimed(app.db, run.remote_id, states, step)
                continue
            with app.db.session() as s:
                r = get_run(s, run.remote_id, states, step, lock=True)
                if auth:
                    src = str(r.state)
                    move(r, RunState(r.prev_state or RunState.PENDING), "revert", fault=0)
                    out.append(Reverted(r.remote_id, src, str(r.state)))
                    continue
                if abandoned:
                    requeued, dropped = _requeue(s, r, [ComponentState.ABANDONED], fault, fresh=True)
                else:
                    requeued, dropped = _requeue(s, r, [ComponentState.ERROR], fault, fresh=False)
                before = (str(r.state), r.fault, r.message)
                res = _settle_after(s, r, requeued, dropped)
                if requeued or dropped or (res.to_state, res.fault, res.message) != before:
                    out.append(res)
    return out
