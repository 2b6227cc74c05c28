"""prepare: build a run's bundle on the local side (no link needed). new -> pending."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select, update

from scbundle.bundle.allocation import resource_request
from scbundle.bundle.build import BundleDir, BundlePlan, BundleWriter
from scbundle.core.app import App
from scbundle.core.errors import BundleError, StateError, UnsafeNameError
from scbundle.core.failpoints import failpoint
from scbundle.core.names import check_run_names
from scbundle.core.resources import content_hash, digest_list
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.core.text import printable
from scbundle.db.bulk import update_rows
from scbundle.db.claims import Claim, claim_run, unclaimed
from scbundle.db.identity import installation_id
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run, move
from scbundle.ops.throttle import HeldBack, prepare_hold
from scbundle.site.layout import job_name, remote_run_dir, shipped_dir
from scbundle.site.schedulers import scheduler_for
from scbundle.stages.base import ComponentSpec, build_isolated, shipped_file_bytes
from scbundle.stages.registry import get_stage
from scbundle.steps.common import StepReport, build_context
from scbundle.steps.loop import RunStep, describe, fault_of, run_step

PREPARABLE = (RunState.NEW, RunState.PENDING)  # a pending run is prepared again (its bundle swapped)


@dataclass(frozen=True)
class Prepared:
    remote_id: int
    state: str
    path_base: str | None
    n_components: int
    n_missing: int
    nodes: int = 0
    hours: int = 0
    nranks: int = 0
    n_configs: int = 0
    seconds: float = 0.0
    error: str | None = None


def local_path_base(app: App, run: RemoteRun) -> Path:
    """The run's bundle directory in the workdir: its parts checked, never outside the workdir."""
    check_run_names(run.remote_id, run.label, run.stage)
    workdir = Path(app.config.workdir)
    base = workdir / run.label / f"remote_{run.stage}.{int(run.remote_id)}"
    if base.parent.parent != workdir or base.parent.name != run.label:  # cannot happen past the check: say so loudly if it does
        raise UnsafeNameError(f"remote_id {run.remote_id}: bundle path {base} is not a directory of the workdir {workdir}", remote_id=run.remote_id)
    return base


MEASURED_WINDOW = 2000  # how many of the stage's most recent good components the median looks at


def measured_cost(session, stage: str, min_samples: int) -> tuple[float, int] | None:
    """Median measured seconds of the stage's most recent good components, and how many;
    None when there are fewer than ``min_samples`` (or min_samples is 0)."""
    if min_samples <= 0:
        return None
    rows = session.execute(
        select(RemoteComponent.t_start, RemoteComponent.t_end)
        .where(
            RemoteComponent.stage == stage,
            RemoteComponent.state == ComponentState.FULL,
            RemoteComponent.t_start.is_not(None),
            RemoteComponent.t_end.is_not(None),
        )
        .order_by(RemoteComponent.t_end.desc())
        .limit(MEASURED_WINDOW)
    ).all()
    secs = [e - b for b, e in rows if e >= b]
    if len(secs) < min_samples:
        return None
    return max(statistics.median(secs), 1e-3), len(secs)


def prepare(app: App, *, remote_id: int, stage: str | None = None, states: Sequence[str] = PREPARABLE) -> Prepared:
    """Claim the run in one of ``states`` (ClaimBusy when another process has it; a bulk pass
    over new runs gives ``states=["new"]``, so a run prepared meanwhile is not prepared twice),
    check the site's throttles (HeldBack), build the bundle and move the run to pending."""
    with app.db.read_session() as s:
        site_name = get_run(s, remote_id, states, "prepare").site
    site_lock = f"prepare:{site_name}" if app.site(site_name).max_prepared is not None else None
    with claim_run(app.db, remote_id, states, site_lock=site_lock) as claim:
        if claim is None:
            raise unclaimed(app.db, remote_id, states, "prepare")
        try:
            check_run_names(remote_id, claim.run.label, claim.run.stage)
        except UnsafeNameError as err:  # a run from an older scbundle: refused, and it says so (nothing written)
            with claim.session() as s:
                move(get_run(s, remote_id, lock=True), RunState.ERROR, "prepare", fault=int(err.fault), message=f"prepare: {err}")
            raise
        with claim.session() as s:
            why = prepare_hold(app, s, claim.run)
        if why:
            raise HeldBack(why, remote_id=remote_id)
        return _prepare_claimed(app, claim, stage)


BUILD_CHUNK = 50_000  # components built and written at a time: memory stays flat however large the run


def _build_into(writer: BundleWriter, st, s, comps: Sequence, ctx) -> tuple[list[int], list[tuple]]:
    """Build the components a chunk at a time into ``writer``; (ids of the built ones, in
    bundle order; (component, MissingInput | BuildFailure) of the others). A stage's relative
    costs are around its chunk's typical component (the whole run, up to BUILD_CHUNK)."""
    good: list[int] = []
    missing: list[tuple] = []
    for start in range(0, len(comps), BUILD_CHUNK):
        chunk = comps[start : start + BUILD_CHUNK]
        built = build_isolated(st, s, [c.stage_id for c in chunk], ctx)  # one raising component is faulted alone
        specs = []
        for c, b in zip(chunk, built, strict=True):
            if isinstance(b, ComponentSpec):
                good.append(c.id)
                specs.append(b)
            else:
                missing.append((c, b))
        writer.add(specs)
    return good, missing


def _prepare_claimed(app: App, claim: Claim, stage: str | None) -> Prepared:
    remote_id = claim.run.remote_id
    with app.db.read_session() as s:
        run = get_run(s, remote_id, [RunState.NEW, RunState.PENDING], "prepare")
        if stage is not None and stage != run.stage:
            raise StateError(f"remote_id {remote_id} is a {run.stage!r} run, not {stage!r}")
        st = get_stage(run.stage, app.config)
        site = app.site(run.site)
        ctx = build_context(app, run)
        comps = s.execute(  # plain rows (id, stage_id, attempts): no ORM objects for 10^5-10^6 components
            select(RemoteComponent.id, RemoteComponent.stage_id, RemoteComponent.attempts)
            .where(RemoteComponent.remote_id == remote_id, RemoteComponent.state.in_([ComponentState.NEW, ComponentState.PENDING]))
            .order_by(RemoteComponent.id)
        ).all()
        settings = app.config.stage_settings(run.stage)
        measured = measured_cost(s, run.stage, settings.measured_cost_min)
        attempt = run.attempt
        path_base = local_path_base(app, run)
        if run.state == RunState.PENDING and run.job_name:
            # prepared again for the same attempt: the same names (an exec that submitted and
            # crashed before it recorded the job finds it by them), made before ids or not
            installation = installation_id(s) if run.remote_dir else None
            run_dir = run.remote_dir or remote_run_dir(site.permanent_root, st.name, remote_id, attempt, None)
        else:
            installation = installation_id(s)
            run_dir = remote_run_dir(site.permanent_root, st.name, remote_id, attempt, installation)
        ctx = build_context(app, run, run_dir)
        shipped = shipped_file_bytes(st)  # the stage's own files, this version: the bundle keeps its copy
        if shipped:
            ctx = replace(ctx, shipped_dir=shipped_dir(site.permanent_root, st.name, content_hash(shipped)), shipped_names=frozenset(shipped))
        plan = BundlePlan(
            remote_id=remote_id,
            stage=st.name,
            attempt=attempt,
            run_dir=run_dir,
            tools_dir=ctx.tools_dir,
            python=site.python,
            cores_per_node=site.cores_per_node,
            job_template=scheduler_for(run.site, app.site(run.site)).job_template,
            attempts=settings.attempts,
            command_timeout=settings.command_timeout,
            fault_map=tuple(sorted((int(c), int(f)) for c, f in st.fault_policy().fault_map.items())),
            retry_faults=tuple(sorted(int(f) for f in st.fault_policy().retry)),
            account=site.account,
            partition=site.partition,
            installation=installation,
            shipped_dir=ctx.shipped_dir,
            shipped_digests=digest_list(shipped),
        )
        out = BundleDir(path_base)
        for name, data in shipped.items():  # local only: exec ships them to ctx.shipped_dir
            out.write_bytes(f"shipped/{name}", data)
        writer = BundleWriter(plan, out.open)
        request = None
        n_configs = 0
        cost, cost_source = st.cost_seconds, "configured"
        try:
            good, missing = _build_into(writer, st, s, comps, ctx)
            if good:
                # Measured seconds from earlier jobs rescale the stage's estimates (keeping their
                # relative weights), so requests converge on the fill factor.
                writer.scale_costs(measured[0] / statistics.median(writer.costs) if measured else 1.0)
                cost = sum(writer.costs) / len(writer.costs)
                cost_source = f"median of {measured[1]} measured" if measured else "configured"
                request = resource_request(
                    len(good),
                    threads=max(st.threads, writer.max_threads),
                    cost_seconds=cost,
                    cores_per_node=site.cores_per_node,
                    fill_factor=site.fill_factor,
                    max_nodes=site.max_nodes,
                    max_walltime_seconds=site.max_walltime_seconds,
                )
                n_configs = writer.finish(request)
                out.commit()
            else:
                writer.close()
                out.discard()
        except BaseException as err:
            writer.close()
            out.discard()
            if isinstance(err, BundleError):
                err.remote_id = remote_id
            raise
    failpoint("prepare.written")

    with claim.session() as s:
        run = get_run(s, remote_id, [RunState.NEW, RunState.PENDING], "prepare", lock=True)
        for start in range(0, len(good), BUILD_CHUNK):  # the bundle's line of each: its idx
            update_rows(s, RemoteComponent.__table__, [
                {"id": cid, "idx": start + i, "state": ComponentState.PENDING, "fault": 0, "message": None}
                for i, cid in enumerate(good[start : start + BUILD_CHUNK])
            ])  # fmt: skip
        if missing:
            s.execute(
                update(RemoteComponent),
                [
                    {"id": c.id, "idx": None, "state": ComponentState.ERROR, "fault": b.fault,
                     "attempts": c.attempts + 1, "message": b.message}
                    for c, b in missing
                ],
            )  # fmt: skip
        if request is None:
            fault = statistics.mode(b.fault for _, b in missing) if missing else int(Fault.DATA)
            move(run, RunState.ERROR, "prepare", fault=fault,
                 message=f"no component has its inputs ({len(missing)} missing or failed to build); nothing to run")  # fmt: skip
        else:
            move(run, RunState.PENDING, "prepare", fault=0)
            run.path_base = str(path_base)
            run.job_name = job_name(run.stage, remote_id, attempt, plan.installation)
            run.remote_dir = plan.run_dir if plan.installation else None  # None: named before installation ids
            run.req_nodes, run.req_seconds, run.nranks = request.nodes, request.seconds, request.nranks
            run.req_cores = request.nodes * site.cores_per_node
            run.cost_seconds, run.cost_source = cost, cost_source
    return Prepared(
        remote_id=remote_id,
        state=str(RunState.PENDING if request else RunState.ERROR),
        path_base=str(path_base),
        n_components=len(good),
        n_missing=len(missing),
        nodes=request.nodes if request else 0,
        hours=request.hours if request else 0,
        nranks=request.nranks if request else 0,
        n_configs=n_configs,
    )


class PrepareStep(RunStep):
    """prepare as the step loop drives it: new (or pending, named) -> pending."""

    name = "prepare"

    def __init__(self, states: Sequence[str], stage: str | None) -> None:
        self.states = tuple(states)
        self.stage = stage

    def site_lock(self, app: App, run: RemoteRun) -> str | None:
        return f"prepare:{run.site}" if app.site(run.site).max_prepared is not None else None

    def hold(self, app: App, run: RemoteRun) -> str | None:
        with app.db.read_session() as s:
            return prepare_hold(app, s, run)

    def work(self, app: App, claim: Claim, transport: object) -> Prepared:
        t0 = time.perf_counter()
        p = _prepare_claimed(app, claim, self.stage)
        return replace(p, seconds=round(time.perf_counter() - t0, 3))

    def failed(self, app: App, claim: Claim, err: Exception) -> Prepared:
        """A run that cannot be prepared (disk full, a read-only workdir, a request over
        max_walltime, a bug) goes to error with the reason; revert puts it back."""
        text = printable(f"prepare: {describe(err)}")
        with claim.session() as s:
            r = get_run(s, claim.run.remote_id, lock=True)
            if r.state in (RunState.NEW, RunState.PENDING):
                move(r, RunState.ERROR, "prepare", fault=fault_of(err), message=text)
            state = str(r.state)
        return Prepared(claim.run.remote_id, state, None, 0, 0, error=text)


def prepare_runs(
    app: App, *, stage: str | None = None, remote_id: int | None = None, label: str | None = None, stop: Callable[[], bool] | None = None
) -> StepReport:
    """Prepare the run named by ``remote_id`` (new or pending), or every new run (of ``stage``,
    of ``label``); one run's failure is recorded on that run and the others go on."""
    if stage is not None:
        get_stage(stage, app.config)  # an unknown stage is refused before anything else
    with app.db.read_session() as s:
        if remote_id is not None:
            run = get_run(s, remote_id, PREPARABLE, "prepare")
            if stage is not None and stage != run.stage:
                raise StateError(f"remote_id {remote_id} is a {run.stage!r} run, not {stage!r}")
            runs = [run]
        else:
            q = select(RemoteRun).where(RemoteRun.state == RunState.NEW).order_by(RemoteRun.remote_id)
            if stage is not None:
                q = q.where(RemoteRun.stage == stage)
            if label is not None:
                q = q.where(RemoteRun.label == label)
            runs = list(s.scalars(q))
    states = PREPARABLE if remote_id is not None else (RunState.NEW,)
    return run_step(app, PrepareStep(states, stage), runs, named=remote_id is not None, stop=stop)
