"""Collecting one run's job (poll and cancel use it): ask the scheduler; when the job is done,
bring back its summary and rank files, read the results, bring back the permanent products
of the components that succeeded (and only those), and replay the results into the tables in
one transaction: run -> full, or error with a fault. Re-running it after a crash repeats the
pulls and the replay, which change nothing the second time.

A failed component's leftovers (a partial product) stay on the site: they never reach a
product's destination, where a reader would take them for a result. Products arrive in a
staging area under the run's path_base first and are moved to their destinations in the
replay's transaction, only for components that end up full (steps/products.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import case, select, update

from scbundle.core.app import App, utcnow
from scbundle.core.errors import DbinfoError
from scbundle.core.failpoints import failpoint
from scbundle.core.protocol import PROTOCOL as P
from scbundle.core.states import (
    DEFAULT_POLICY,
    ComponentState,
    Fault,
    FaultPolicy,
    RunState,
    settle,
)
from scbundle.core.text import printable
from scbundle.db import journal
from scbundle.db.bulk import update_rows
from scbundle.db.claims import Claim
from scbundle.db.identity import installation_id
from scbundle.db.journal import ReplayCounts
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import component_counts, get_run, move
from scbundle.site import jobs
from scbundle.site.link import Transport
from scbundle.site.schedulers import scheduler_for
from scbundle.site.schedulers.base import JobState, JobStatus
from scbundle.stages.registry import get_stage
from scbundle.steps.common import build_context, submit_context
from scbundle.steps.products import Products, pack, pull_products
from scbundle.steps.replay import (
    ComponentResult,
    Results,
    gc_paused,
    read_results,
    results_file_limit,
)


@dataclass(frozen=True)
class Polled:
    remote_id: int
    job_state: str
    state: str
    n_good: int = 0
    n_failed: int = 0
    message: str | None = None
    error: str | None = None


def _components_index(path_base: Path) -> dict[int, int]:
    out = {}
    for line in (path_base / P.COMPONENTS_TSV).read_text().splitlines():
        i, sid = line.split("\t")
        out[int(i)] = int(sid)
    return out


JOB_FILES = ("summary.json", "job.exit", "results/pre.json", "job.out")

# What the job's own files may hold when they come back (bytes), by the run's component count:
# summary.json lists every component (its seconds, and the missing / failed / stopped ones).
SUMMARY_BASE, SUMMARY_PER_COMPONENT = 1 << 20, 128
JOB_FILE_MAX = {"job.exit": 4096, "results/pre.json": 64 << 20, "job.out": 256 << 20}


def job_file_limit(rel: str, n_components: int) -> int:
    """The most a job file (``rel`` in the run directory) may hold when it comes back."""
    if rel == "summary.json":
        return SUMMARY_BASE + SUMMARY_PER_COMPONENT * max(n_components, 0)
    if rel.startswith("results/rank-"):
        return results_file_limit(n_components)
    return JOB_FILE_MAX[rel]


def pull_job_files(app: App, run: RemoteRun, t: Transport) -> Path:
    """The job's summary, exit marker, logs and rank files into path_base/returned (stale
    copies of an earlier pull removed first); returns that directory."""
    path_base = Path(run.path_base or "")
    returned = path_base / "returned"
    run_dir = submit_context(app, run).run_dir
    rels = [*JOB_FILES, *(f"results/rank-{r:05d}.jsonl" for r in range(run.nranks or 0))]
    returned.mkdir(parents=True, exist_ok=True)
    for stale in returned.rglob("*"):
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
    n_components = int(_read_bundle(path_base).get("n_components") or 0)
    limits = {i: job_file_limit(rel, n_components) for i, rel in enumerate(rels)}
    pack(app, run, t, [(f"{run_dir}/{rel}", returned / rel) for rel in rels], [returned], limits)
    return returned


def fault_for_missing(job: JobStatus | None) -> Fault:
    """Components with no result: the job ran out of time (6), or died, was cancelled or
    vanished (2: safe to revert)."""
    if job is not None and job.state == JobState.TIMEOUT:
        return Fault.TIMEOUT
    return Fault.SYSTEM


def classify(
    res: ComponentResult | None, job: JobStatus | None, max_attempts: int, policy: FaultPolicy = DEFAULT_POLICY
) -> tuple[str, Fault, str | None]:
    """(component state, fault, message) for one component's result. Pure.

    - no result: error, fault by the job's end (6 for TIMEOUT, else 2);
    - stopped at its command limit or the job's deadline: error, fault 6;
    - stopped by SIGTERM: 6 if the job hit its walltime, else 2 (cancelled, preempted);
    - an input gone when it was to start: error, fault 2 (revertable: the next exec pushes it);
    - a command that failed all its tries inside the job: abandoned, fault from its exit code
      (the stage's fault map);
    - a failure not tried again, a post or dbinfo failure: error, fault from the exit code (5
      when the command exited 0 but its record is missing).
    """
    if res is None:
        why = f"no result from the job ({job.state}: {job.raw})" if job else "no result from the job"
        return ComponentState.ERROR, fault_for_missing(job), why
    if res.good:
        return ComponentState.FULL, Fault.NONE, None
    text = f"{res.phase} exit {res.exit}: {res.error or ''}"[:2000]
    if res.phase in ("limit", "deadline"):
        return ComponentState.ERROR, Fault.TIMEOUT, text
    if res.phase == "signal":
        return ComponentState.ERROR, fault_for_missing(job), text
    if res.phase == "input":
        return ComponentState.ERROR, Fault.SYSTEM, text
    fault = policy.fault(res.exit) if res.exit != 0 else Fault.DATA
    if res.phase == "command" and res.attempts >= max_attempts:
        return ComponentState.ABANDONED, fault, f"abandoned after {res.attempts} tries: {text}"[:2000]
    return ComponentState.ERROR, fault, text


REPLAY_CHUNK = 50_000  # components whose rows are built and written at a time


def apply_results(
    app: App,
    remote_id: int,
    results: Results | dict[int, ComponentResult],
    products_back: set[int],
    owners: Sequence[int],
    *,
    job: JobStatus | None,
    job_note: str,
    max_attempts: int = 2,
    usage: dict | None = None,
    claim: Claim | None = None,
    products: Products | None = None,
) -> Polled:
    """One transaction: component states, the stage's tables, the delivery of full components'
    products, the run's state (settled from its components' counts). ``owners``: the
    component index of each products.tsv row; ``products_back``: the rows whose product came
    back. A refused record fails its component (fault 5) alone."""
    res_all = results if isinstance(results, Results) else Results(records=dict(results))
    records, refused = res_all.records, res_all.refused
    lost = {owners[r] for r in range(len(owners)) if r not in products_back}  # components missing a product
    with gc_paused(), claim.session() if claim else app.db.session() as s:
        run = get_run(s, remote_id, [RunState.RUN], "poll", lock=True)
        stage = get_stage(run.stage, app.config)
        policy = stage.fault_policy()
        comps = s.execute(  # plain (id, idx) rows: no ORM objects for 10^5-10^6 components
            select(RemoteComponent.id, RemoteComponent.idx).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state == ComponentState.RUN)
        ).all()
        n_good = n_failed = n_abandoned = n_refused = 0
        ctx = build_context(app, run)
        for start in range(0, len(comps), REPLAY_CHUNK):  # all in this one transaction; a chunk's rows at a time
            changes, good_records, good_idx = [], [], []
            for c in comps[start : start + REPLAY_CHUNK]:
                res = records.get(c.idx) if c.idx is not None else None
                row: dict = {"id": c.id}
                if c.idx in refused:
                    n_refused += 1
                    state, fault, message = ComponentState.ERROR, Fault.DATA, printable(refused[c.idx])[:2000]
                else:
                    state, fault, message = classify(res, job, max_attempts, policy)
                if res is not None:
                    row.update(exit_code=res.exit, rank=res.rank, host=res.host, t_start=res.start, t_end=res.end)
                    if state == ComponentState.FULL:
                        if c.idx in lost:
                            state, fault, message = ComponentState.ERROR, Fault.SYSTEM, "permanent product did not come back"
                        else:
                            assert res.dbinfo is not None
                            good_records.append(res.dbinfo)
                            good_idx.append(c.idx)
                if message is not None:
                    message = printable(message)
                row.update(state=state, fault=int(fault), message=message)
                n_failed += state != ComponentState.FULL
                n_abandoned += state == ComponentState.ABANDONED
                changes.append(row)
            update_rows(s, RemoteComponent.__table__, changes)
            stage.replay(s, run, good_records, ctx)
            if products is not None:
                products.deliver(good_idx)
            n_good += len(good_records)
        run.last_poll = utcnow()
        if job is not None:
            run.sched_state = printable(job.raw)[:64]
        if usage:
            run.job_seconds = usage.get("job_seconds", run.job_seconds)
            run.busy_core_seconds = usage.get("busy_core_seconds", run.busy_core_seconds)
        s.flush()
        note = job_note
        if res_all.unattributed:
            note += f"; {len(res_all.unattributed)} record(s) refused: {printable(res_all.unattributed[0])}"
        state, fault, message = settle(component_counts(s, remote_id), job_policy=run.job_policy, note=note)
        replayed = ReplayCounts(good=n_good, failed=n_failed - n_abandoned, abandoned=n_abandoned, refused=n_refused)
        move(run, state, "poll", fault=fault, message=message, counts=replayed)
        if products is not None and (where := products.where()):  # where a stage's products are ([notify])
            # no remote_id: the run's own history stays its state changes; the label's has it
            journal.record(s, kind="products", command="poll", label=run.label, stage=run.stage, site=run.site,
                           message=f"remote_id {run.remote_id}: {where}")  # fmt: skip
        s.flush()
        failpoint("poll.replayed")  # written, not yet committed
        return Polled(remote_id, job_note, run.state, n_good, n_failed, run.message)


def accounting(summary: dict | None, threads: int) -> dict:
    """job_seconds and busy_core_seconds from the job's own summary (empty when absent)."""
    if not summary:
        return {}
    out = {}
    start, end = summary.get("job_start"), summary.get("job_end")
    if _finite(start) and _finite(end) and end >= start:
        out["job_seconds"] = float(end - start)
    busy = summary.get("busy_seconds")
    if _finite(busy) and busy >= 0:
        out["busy_core_seconds"] = float(busy) * threads
    return out


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and abs(x) < 1e18


def _read_bundle(path_base: Path) -> dict:
    try:
        return json.loads((path_base / P.BUNDLE_JSON).read_text())
    except (OSError, ValueError):
        return {}


def _ident(installation: str | None, remote_id: object, attempt: object) -> str:
    return f"installation {installation or '(none)'} remote_id {remote_id} attempt {attempt}"


def not_own(owner: dict | None, *, installation: str | None, remote_id: int, attempt: int) -> str | None:
    """Why the job that ran in a run's directory is not the run's (None: it is, or it wrote no
    word of whose it is). Pure. ``installation`` None: a run made before installation ids, whose
    job wrote none (nor, with the tools of its time, its attempt): what it wrote is compared."""
    if owner is None:
        return None
    theirs = (owner.get("installation"), owner.get("remote_id"), owner.get("attempt"))
    if installation is not None:
        mine = theirs == (installation, remote_id, attempt)
    else:
        mine = theirs[0] is None and theirs[1] in (None, remote_id) and theirs[2] in (None, attempt)
    if mine:
        return None
    return f"it holds the job of {_ident(*theirs)}, not this run's ({_ident(installation, remote_id, attempt)})"


def refuse_foreign(app: App, run: RemoteRun, run_dir: str, why: str, job: JobStatus, claim: Claim | None) -> Polled:
    """run -> error (fault 2), nothing replayed, nothing brought back: its components get back
    the try that never was theirs, and `scbundle revert` gives the run a new attempt (a new
    directory and job name)."""
    message = f"run directory {run_dir} is not this run's: {why}; nothing was taken from it (`scbundle revert --remote-id {run.remote_id}`: a new attempt)"
    with claim.session() if claim else app.db.session() as s:
        r = get_run(s, run.remote_id, [RunState.RUN], "poll", lock=True)
        n = s.execute(
            update(RemoteComponent)
            .where(RemoteComponent.remote_id == run.remote_id, RemoteComponent.state == ComponentState.RUN)
            .values(state=ComponentState.ERROR, fault=int(Fault.SYSTEM), message=message[:2000],
                    attempts=case((RemoteComponent.attempts > 0, RemoteComponent.attempts - 1), else_=0))
        ).rowcount  # fmt: skip
        move(r, RunState.ERROR, "poll", fault=Fault.SYSTEM, message=message, counts=ReplayCounts(failed=n))
        r.last_poll, r.sched_state = utcnow(), printable(job.raw)[:64]
    return Polled(run.remote_id, job.state, RunState.ERROR, 0, n, message)


def poll_run(app: App, run: RemoteRun, t: Transport, claim: Claim | None = None) -> Polled:
    """Poll one run; when its job is over, collect it."""
    sched = scheduler_for(run.site, app.site(run.site))
    ctx = submit_context(app, run)
    view = jobs.status(t, sched, ctx, run.job_id or "")
    job = view.status
    if not view.finished:
        with claim.session() if claim else app.db.session() as s:
            r = get_run(s, run.remote_id, lock=True)
            r.last_poll = utcnow()
            r.sched_state = printable(job.raw)[:64]
            if r.fault and r.state == RunState.RUN:  # an earlier poll's failure is over
                r.fault, r.message = 0, None
        return Polled(run.remote_id, job.state, run.state)
    if view.owner is not None:  # before anything comes back: another run's products never reach a destination
        with app.db.read_session() as s:
            installation = installation_id(s) if run.remote_dir else None
        why = not_own(view.owner, installation=installation, remote_id=run.remote_id, attempt=run.attempt)
        if why:
            return refuse_foreign(app, run, ctx.run_dir, why, job, claim)
    returned = pull_job_files(app, run, t)
    path_base = Path(run.path_base or "")
    stage = get_stage(run.stage, app.config)
    files = sorted((returned / P.RESULTS_DIR).glob("rank-*.jsonl"))
    results = read_results(files, stage, _components_index(path_base))
    good = {i for i, r in results.records.items() if r.good and i not in results.refused}
    products = pull_products(app, run, t, good)
    failpoint("poll.pulled")
    bundle = _read_bundle(path_base)
    note = f"job {run.job_id} {job.state} ({printable(job.raw)})" + (
        f", exit {view.exit_marker}" if view.exit_marker is not None else ", no exit marker"
    )
    return apply_results(
        app, run.remote_id, results, products.back, products.owners,
        job=job, job_note=note, max_attempts=int(bundle.get("attempts", 2)),
        usage=accounting(read_summary(path_base, int(bundle.get("n_components") or 0)), int(bundle.get("threads", 1))), claim=claim, products=products,
    )  # fmt: skip


def read_summary(path_base: Path, n_components: int = 0) -> dict | None:
    """The job's summary.json as it came back (None when absent or unreadable: it only feeds
    the accounting); one larger than job_file_limit is refused, naming the file."""
    p = path_base / "returned" / "summary.json"
    limit = job_file_limit("summary.json", n_components)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        raise DbinfoError(f"{p}: more than {limit} bytes for a run of {n_components} component(s); refused")
    try:
        summary = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return summary if isinstance(summary, dict) else None
