"""prepare: build a run's bundle on the local side (no link needed). new -> pending."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from scbundle.bundle.allocation import resource_request
from scbundle.bundle.build import BundleDir, BundlePlan, BundleWriter
from scbundle.core.app import App
from scbundle.core.errors import BundleError, StateError, UnsafeNameError
from scbundle.core.failpoints import failpoint
from scbundle.core.names import check_run_names
from scbundle.core.states import ComponentState, Fault, RunState
from scbundle.db.bulk import update_rows
from scbundle.db.claims import Claim, claim_run, unclaimed
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run
from scbundle.ops.throttle import HeldBack, prepare_hold
from scbundle.site.layout import job_name, remote_run_dir
from scbundle.site.schedulers import scheduler_for
from scbundle.stages.base import ComponentSpec, build_isolated
from scbundle.stages.registry import get_stage
from scbundle.steps.common import build_context

PREPARABLE = (RunState.NEW, RunState.PENDING)  # a pending run is prepared again (its bundle swapped)


@dataclass(frozen=True)
class Prepared:
    remote_id: int
    path_base: str
    n_components: int
    n_missing: int
    nodes: int
    hours: int
    nranks: int
    n_configs: int


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
                r = get_run(s, remote_id)
                r.prev_state, r.state, r.fault, r.message = r.state, RunState.ERROR, int(err.fault), f"prepare: {err}"[:2000]
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
        plan = BundlePlan(
            remote_id=remote_id,
            stage=st.name,
            attempt=attempt,
            run_dir=remote_run_dir(site.permanent_root, st.name, remote_id, attempt),
            tools_dir=ctx.tools_dir,
            python=site.python,
            cores_per_node=site.cores_per_node,
            job_template=scheduler_for(run.site, app.site(run.site)).job_template,
            attempts=settings.attempts,
            command_timeout=settings.command_timeout,
            account=site.account,
            partition=site.partition,
        )
        out = BundleDir(path_base)
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
                    threads=st.threads,
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
        run = get_run(s, remote_id, [RunState.NEW, RunState.PENDING], "prepare")
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
            run.state, run.prev_state = RunState.ERROR, RunState.NEW
            run.fault = statistics.mode(b.fault for _, b in missing) if missing else int(Fault.DATA)
            run.message = f"no component has its inputs ({len(missing)} missing or failed to build); nothing to run"
        else:
            run.state = RunState.PENDING
            run.path_base = str(path_base)
            run.job_name = job_name(run.stage, remote_id, attempt)
            run.req_nodes, run.req_seconds, run.nranks = request.nodes, request.seconds, request.nranks
            run.req_cores = request.nodes * site.cores_per_node
            run.cost_seconds, run.cost_source = cost, cost_source
            run.fault, run.message = 0, None
    return Prepared(
        remote_id=remote_id,
        path_base=str(path_base),
        n_components=len(good),
        n_missing=len(missing),
        nodes=request.nodes if request else 0,
        hours=request.hours if request else 0,
        nranks=request.nranks if request else 0,
        n_configs=n_configs,
    )
