"""Collecting one run's job: ask the scheduler; when the job is done, bring back its summary,
results and the permanent products, and replay the results into the tables in one
transaction. run -> full (or error with a fault). Re-running it after a crash repeats the
pull and the replay, which change nothing the second time. poll and cancel use it.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from scbundle.core.app import App, utcnow
from scbundle.core.errors import DbinfoError
from scbundle.core.failpoints import failpoint
from scbundle.core.states import ComponentState, Fault, RunState, fault_from_exit
from scbundle.db.bulk import update_rows
from scbundle.db.claims import Claim
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run
from scbundle.site import jobs
from scbundle.site.layout import roots_args, tool_argv
from scbundle.site.link import Transport
from scbundle.site.pathmap import PathMap
from scbundle.site.schedulers import scheduler_for
from scbundle.site.schedulers.base import JobState, JobStatus
from scbundle.site.transfer import extract_returned
from scbundle.stages.registry import get_stage
from scbundle.steps.common import build_context, submit_context
from scbundle.steps.replay import ComponentResult, gc_paused, read_results


@dataclass(frozen=True)
class Polled:
    remote_id: int
    job_state: str
    state: str
    n_good: int = 0
    n_failed: int = 0
    message: str | None = None
    error: str | None = None


def _products(path_base: Path) -> list[tuple[int, str, str]]:
    rows = []
    for line in (path_base / "products.tsv").read_text().splitlines():
        idx, remote, local = line.split("\t")
        rows.append((int(idx), remote, local))
    return rows


def _components_index(path_base: Path) -> dict[int, int]:
    out = {}
    for line in (path_base / "components.tsv").read_text().splitlines():
        i, sid = line.split("\t")
        out[int(i)] = int(sid)
    return out


def pull_results(app: App, run: RemoteRun, t: Transport) -> tuple[Path, set[int], array]:
    """One pack invocation: job files into path_base/returned, products to their destinations.

    Returns the returned/ directory, the product rows (by products.tsv line) that came back,
    and the component index of each products.tsv row (what apply_results needs of the rows).
    """
    site = app.site(run.site)
    ctx = submit_context(app, run)
    path_base = Path(run.path_base or "")
    returned = path_base / "returned"
    job_files = ["summary.json", "job.exit", "results/pre.json", "job.out"]
    job_files += [f"results/rank-{r:05d}.jsonl" for r in range(run.nranks or 0)]
    wanted: list[tuple[str, Path]] = [(f"{ctx.run_dir}/{rel}", returned / rel) for rel in job_files]
    products = _products(path_base)
    pm = PathMap.of(site.paths)
    for _, remote, local in products:
        if not pm.covers_local(local):
            raise DbinfoError(f"{path_base / 'products.tsv'}: product destination {local} is outside the site's local roots")
        wanted.append((remote, Path(local)))
    destinations = {i: dest for i, (_, dest) in enumerate(wanted)}
    roots = [returned, *(Path(r) for r in pm.local_roots())]
    returned.mkdir(parents=True, exist_ok=True)
    for stale in returned.rglob("*"):
        if stale.is_file():
            stale.unlink()
    listing = "".join(remote + "\n" for remote, _ in wanted).encode()
    got = {}

    def consume(stream) -> None:
        got["r"] = extract_returned(stream, destinations, roots)

    pack = tool_argv(site.python, ctx.tools_dir, "sc_remote.py", "pack", *roots_args(site), dirs=[ctx.run_dir])
    t.stream_out(pack, consume, input=listing)
    received = got["r"].indices
    n_job = len(job_files)
    owners = array("q", (idx for idx, _, _ in products))
    return returned, {i - n_job for i in received if i >= n_job}, owners


def fault_for_missing(job: JobStatus | None) -> Fault:
    """Components with no result: the job ran out of time (6), or died, was cancelled or
    vanished (2: safe to revert)."""
    if job is not None and job.state == JobState.TIMEOUT:
        return Fault.TIMEOUT
    return Fault.SYSTEM


def classify(res: ComponentResult | None, job: JobStatus | None, max_attempts: int) -> tuple[str, Fault, str | None]:
    """(component state, fault, message) for one component's result. Pure.

    - no result: error, fault by the job's end (6 for TIMEOUT, else 2);
    - stopped at its command limit or the job's deadline: error, fault 6;
    - stopped by SIGTERM: 6 if the job hit its walltime, else 2 (cancelled, preempted);
    - a command that failed all its tries inside the job: abandoned, fault from its exit code;
    - a post or dbinfo failure: error, fault from the exit code (5 when it is not a fault code).
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
    fault = fault_from_exit(res.exit) if res.exit != 0 else Fault.DATA
    if fault == Fault.NONE or fault == Fault.UNKNOWN:
        fault = Fault.UNKNOWN if res.exit != 0 else Fault.DATA
    if res.phase == "command" and res.attempts >= max_attempts:
        return ComponentState.ABANDONED, fault, f"abandoned after {res.attempts} tries: {text}"[:2000]
    return ComponentState.ERROR, fault, text


REPLAY_CHUNK = 50_000  # components whose rows are built and written at a time


def apply_results(
    app: App,
    remote_id: int,
    results: dict[int, ComponentResult],
    products_back: set[int],
    owners: Sequence[int],
    *,
    job: JobStatus | None,
    job_note: str,
    max_attempts: int = 2,
    usage: dict | None = None,
    claim: Claim | None = None,
) -> Polled:
    """One transaction (the claim's, when the run is claimed): component states, the stage's
    tables, the run's state. ``owners``: the component index of each products.tsv row;
    ``products_back``: the rows whose product came back."""
    lost = {owners[r] for r in range(len(owners)) if r not in products_back}  # components missing a product
    with gc_paused(), claim.session() if claim else app.db.session() as s:
        run = get_run(s, remote_id, [RunState.RUN], "poll")
        stage = get_stage(run.stage, app.config)
        comps = s.execute(  # plain (id, idx) rows: no ORM objects for 10^5-10^6 components
            select(RemoteComponent.id, RemoteComponent.idx).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state == ComponentState.RUN)
        ).all()
        faults: Counter = Counter()
        n_good, ctx = 0, build_context(app, run)
        for start in range(0, len(comps), REPLAY_CHUNK):  # all in this one transaction; a chunk's rows at a time
            changes, good_records = [], []
            for c in comps[start : start + REPLAY_CHUNK]:
                res = results.get(c.idx) if c.idx is not None else None
                state, fault, message = classify(res, job, max_attempts)
                row: dict = {"id": c.id}
                if res is not None:
                    row.update(exit_code=res.exit, rank=res.rank, host=res.host, t_start=res.start, t_end=res.end)
                    if state == ComponentState.FULL:
                        if c.idx in lost:
                            state, fault, message = ComponentState.ERROR, Fault.SYSTEM, "permanent product did not come back"
                        else:
                            assert res.dbinfo is not None
                            good_records.append(res.dbinfo)
                row.update(state=state, fault=int(fault), message=message)
                if state != ComponentState.FULL:
                    faults[int(fault)] += 1
                changes.append(row)
            update_rows(s, RemoteComponent.__table__, changes)
            stage.replay(s, run, good_records, ctx)
            n_good += len(good_records)
        # components that failed before the job (prepare: missing input, a stage that raised)
        prior = Counter(
            s.scalars(select(RemoteComponent.fault).where(RemoteComponent.remote_id == remote_id, RemoteComponent.state == ComponentState.ERROR))
        )
        for fault_code, n in faults.items():  # this poll's errors are already flushed among them
            prior[fault_code] -= n
        prior_errors = +prior or None
        n_failed = sum(faults.values())
        run.last_poll = utcnow()
        if job is not None:
            run.sched_state = job.raw[:64]
        for key, value in (usage or {}).items():
            setattr(run, key, value)
        if (n_failed == 0 and prior_errors is None) or run.job_policy == "ignore":
            run.state, run.fault, run.message = RunState.FULL, 0, (f"{n_failed} component(s) failed, ignored by job_policy" if n_failed else None)
        else:
            run.state, run.prev_state = RunState.ERROR, RunState.RUN
            run.fault = (faults or prior_errors or Counter({int(Fault.DATA): 1})).most_common(1)[0][0]
            run.message = f"{n_failed} of {len(comps)} component(s) failed ({job_note})"
        s.flush()
        failpoint("poll.replayed")  # written, not yet committed
        return Polled(remote_id, job_note, run.state, n_good, n_failed, run.message)


def accounting(summary: dict | None, threads: int) -> dict:
    """job_seconds and busy_core_seconds from the job's own summary (empty when absent)."""
    if not summary:
        return {}
    out = {}
    start, end = summary.get("job_start"), summary.get("job_end")
    if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
        out["job_seconds"] = float(end - start)
    busy = summary.get("busy_seconds")
    if isinstance(busy, int | float) and not isinstance(busy, bool):
        out["busy_core_seconds"] = float(busy) * threads
    return out


def _read_bundle(path_base: Path) -> dict:
    try:
        return json.loads((path_base / "bundle.json").read_text())
    except (OSError, ValueError):
        return {}


def poll_run(app: App, run: RemoteRun, t: Transport, claim: Claim | None = None) -> Polled:
    """Poll one run; its writes go through ``claim`` (the run's claim) when given."""
    sched = scheduler_for(run.site, app.site(run.site))
    ctx = submit_context(app, run)
    view = jobs.status(t, sched, ctx, run.job_id or "")
    job = view.status
    if not view.finished:
        with claim.session() if claim else app.db.session() as s:
            r = get_run(s, run.remote_id)
            r.last_poll = utcnow()
            r.sched_state = job.raw[:64]
        return Polled(run.remote_id, job.state, run.state)
    returned, products_back, owners = pull_results(app, run, t)
    failpoint("poll.pulled")
    path_base = Path(run.path_base or "")
    stage = get_stage(run.stage, app.config)
    files = sorted((returned / "results").glob("rank-*.jsonl"))
    results = read_results(files, stage, _components_index(path_base))
    bundle = _read_bundle(path_base)
    note = f"job {run.job_id} {job.state} ({job.raw})" + (
        f", exit {view.exit_marker}" if view.exit_marker is not None else ", no exit marker"
    )
    return apply_results(
        app, run.remote_id, results, products_back, owners,
        job=job, job_note=note, max_attempts=int(bundle.get("attempts", 2)),
        usage=accounting(read_summary(path_base), int(bundle.get("threads", 1))), claim=claim,
    )  # fmt: skip



def read_summary(path_base: Path) -> dict | None:
    p = path_base / "returned" / "summary.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
