"""status: runs by state, and for a run its components (Njobs / Ngood / Nfail, as operators read them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from scbundle.core.app import App
from scbundle.core.states import ComponentState
from scbundle.db.models import AdvanceBlock, RemoteComponent, RemoteRun
from scbundle.db.runs import get_run


@dataclass(frozen=True)
class RunStatus:
    remote_id: int
    label: str
    stage: str
    site: str
    state: str
    fault: int
    job_id: str | None
    attempt: int
    last_poll: str | None
    njobs: int
    ngood: int
    nfail: int
    npending: int
    nabandoned: int
    message: str | None
    sched_state: str | None = None
    usage: Usage | None = None
    advanced: bool = False  # `scbundle advance` examined it
    advance_note: str | None = None  # what it queued, and why items were blocked
    job_name: str | None = None
    remote_dir: str | None = None  # its directory on the site (None: made before installation ids)


@dataclass(frozen=True)
class Usage:
    """Requested vs used core-hours of a run's job, and the fill it achieved."""

    nodes: int
    cores: int
    requested_s: int
    cost_seconds: float | None
    cost_source: str | None
    job_s: float | None = None
    busy_core_s: float | None = None

    @property
    def requested_core_h(self) -> float:
        return self.cores * self.requested_s / 3600

    @property
    def used_core_h(self) -> float | None:
        return self.cores * self.job_s / 3600 if self.job_s is not None else None

    @property
    def busy_core_h(self) -> float | None:
        return self.busy_core_s / 3600 if self.busy_core_s is not None else None

    @property
    def fill(self) -> float | None:
        """Busy core-seconds over allocated core-seconds (the cores held for as long as the job ran)."""
        if self.busy_core_s is None or not self.job_s or not self.cores:
            return None
        return self.busy_core_s / (self.cores * self.job_s)

    @property
    def time_used(self) -> float | None:
        """The job's wall time over the walltime it asked for (the field notes reached 0.83)."""
        return self.job_s / self.requested_s if self.job_s is not None and self.requested_s else None

    def describe(self) -> str:
        text = f"requested {self.nodes} node(s) x {self.requested_s / 3600:g} h = {self.requested_core_h:,.1f} core-h"
        if self.cost_seconds is not None:
            text += f" (cost {self.cost_seconds:.3g} s a command, {self.cost_source})"
        if self.used_core_h is not None:
            text += f"; used {self.used_core_h:,.2f} core-h ({(self.time_used or 0):.0%} of the time asked)"
        if self.busy_core_h is not None:
            text += f"; busy {self.busy_core_h:,.2f} core-h"
        if self.fill is not None:
            text += f"; fill {self.fill:.2f}"
        return text


@dataclass(frozen=True)
class ComponentStatus:
    stage_id: int
    state: str
    fault: int
    attempts: int
    exit_code: int | None
    rank: int | None
    seconds: float | None
    message: str | None
    host: str | None = None
    idx: int | None = None  # its line in the bundle (the index of its record in the rank files)


def run_statuses(app: App, *, label: str | None = None, remote_id: int | None = None) -> list[RunStatus]:
    with app.db.read_session() as s:
        if remote_id is not None:
            runs = [get_run(s, remote_id)]
        else:
            q = select(RemoteRun).order_by(RemoteRun.remote_id)
            if label is not None:
                q = q.where(RemoteRun.label == label)
            runs = list(s.scalars(q))
        ids = [r.remote_id for r in runs]
        counts: dict[int, dict[str, int]] = {i: {} for i in ids}
        if ids:
            q = (
                select(RemoteComponent.remote_id, RemoteComponent.state, func.count())
                .where(RemoteComponent.remote_id.in_(ids))
                .group_by(RemoteComponent.remote_id, RemoteComponent.state)
            )
            for rid, state, n in s.execute(q):
                counts[rid][state] = n
        out = []
        for r in runs:
            c = counts[r.remote_id]
            out.append(
                RunStatus(
                    remote_id=r.remote_id, label=r.label, stage=r.stage, site=r.site, state=r.state, fault=r.fault,
                    job_id=r.job_id, attempt=r.attempt,
                    last_poll=r.last_poll.isoformat(sep=" ", timespec="seconds") if r.last_poll else None,
                    njobs=sum(c.values()), ngood=c.get(ComponentState.FULL, 0), nfail=c.get(ComponentState.ERROR, 0),
                    npending=sum(c.get(k, 0) for k in (ComponentState.NEW, ComponentState.PENDING, ComponentState.RUN)),
                    nabandoned=c.get(ComponentState.ABANDONED, 0), message=r.message, sched_state=r.sched_state,
                    advanced=r.advanced, advance_note=r.advance_note, job_name=r.job_name, remote_dir=r.remote_dir,
                    usage=Usage(r.req_nodes, r.req_cores, r.req_seconds, r.cost_seconds, r.cost_source, r.job_seconds, r.busy_core_seconds)
                    if r.req_nodes and r.req_cores and r.req_seconds else None,
                )
            )  # fmt: skip
        return out


@dataclass(frozen=True)
class BlockedStatus:
    """A next-stage item that advance did not queue (an input failed for good), and why."""

    remote_id: int
    stage: str
    item_id: int
    item: str
    reason: str


def blocked_items(app: App, remote_ids: list[int]) -> list[BlockedStatus]:
    """What the advance of these runs found blocked."""
    if not remote_ids:
        return []
    with app.db.read_session() as s:
        q = select(AdvanceBlock).where(AdvanceBlock.remote_id.in_(remote_ids)).order_by(AdvanceBlock.remote_id, AdvanceBlock.id)
        return [BlockedStatus(b.remote_id, b.stage, b.item_id, b.item, b.reason) for b in s.scalars(q)]


def advance_lines(runs: list[RunStatus], blocked: list[BlockedStatus], *, verbose: bool, limit: int = 5) -> list[str]:
    """Lines under the runs table: items advance found blocked, by run (and, verbose, every
    advanced run's note)."""
    by_run: dict[int, list[BlockedStatus]] = {}
    for b in blocked:
        by_run.setdefault(b.remote_id, []).append(b)
    out = []
    for r in runs:
        items = by_run.get(r.remote_id, [])
        if verbose and r.advance_note:
            out.append(f"remote_id {r.remote_id}: {r.advance_note}")
        if items:
            out.append(f"remote_id {r.remote_id} ({r.stage}): advance blocked {len(items)} {items[0].stage} item(s):")
            shown = items if verbose else items[:limit]
            out += [f"  {b.item}: {b.reason}" for b in shown]
            if len(shown) < len(items):
                out.append(f"  and {len(items) - len(shown)} more (`scbundle status --remote-id {r.remote_id}`)")
    return out


@dataclass(frozen=True)
class ComponentFilter:
    """Which of a run's components to list (each None: any)."""

    states: tuple[str, ...] | None = None
    fault: int | None = None
    rank: int | None = None
    host: str | None = None
    stage_id: int | None = None


FAILED = (ComponentState.ERROR, ComponentState.ABANDONED)


def component_statuses(app: App, remote_id: int, *, only_failed: bool = False, where: ComponentFilter | None = None,
                       offset: int = 0, limit: int | None = None) -> list[ComponentStatus]:
    where = where or ComponentFilter(states=FAILED if only_failed else None)
    with app.db.read_session() as s:
        get_run(s, remote_id)
        q = select(RemoteComponent).where(RemoteComponent.remote_id == remote_id).order_by(RemoteComponent.stage_id)
        if where.states is not None:
            q = q.where(RemoteComponent.state.in_(list(where.states)))
        if where.fault is not None:
            q = q.where(RemoteComponent.fault == where.fault)
        if where.rank is not None:
            q = q.where(RemoteComponent.rank == where.rank)
        if where.host is not None:
            q = q.where(RemoteComponent.host == where.host)
        if where.stage_id is not None:
            q = q.where(RemoteComponent.stage_id == where.stage_id)
        if offset:
            q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        return [
            ComponentStatus(
                stage_id=c.stage_id, state=c.state, fault=c.fault, attempts=c.attempts, exit_code=c.exit_code, rank=c.rank,
                seconds=(c.t_end - c.t_start) if c.t_start is not None and c.t_end is not None else None, message=c.message,
                host=c.host, idx=c.idx,
            )
            for c in s.scalars(q)
        ]  # fmt: skip


def fault_counts(app: App, remote_ids: list[int] | None = None) -> dict[int, dict[int, int]]:
    """Failed (error or abandoned) components by run and fault code: {remote_id: {fault: n}}."""
    with app.db.read_session() as s:
        q = (
            select(RemoteComponent.remote_id, RemoteComponent.fault, func.count())
            .where(RemoteComponent.state.in_(list(FAILED)))
            .group_by(RemoteComponent.remote_id, RemoteComponent.fault)
        )
        if remote_ids is not None:
            q = q.where(RemoteComponent.remote_id.in_(remote_ids))
        out: dict[int, dict[int, int]] = {}
        for rid, fault, n in s.execute(q):
            out.setdefault(rid, {})[fault] = n
        return out


def as_json(rows: list) -> list[dict]:
    out = []
    for r in rows:
        d = asdict(r)
        usage = getattr(r, "usage", None)
        if usage is not None:
            d["usage"].update(requested_core_h=usage.requested_core_h, used_core_h=usage.used_core_h,
                              busy_core_h=usage.busy_core_h, fill=usage.fill, time_used=usage.time_used)  # fmt: skip
        out.append(d)
    return out


def status_document(app: App, *, label: str | None = None, remote_id: int | None = None, show_all: bool = False) -> dict:
    """What `scbundle status --json` prints (and the web console's /api/status serves)."""
    from scbundle.ops.links import host_states, service_json
    from scbundle.ops.throttle import site_loads

    runs = run_statuses(app, label=label, remote_id=remote_id)
    comps = component_statuses(app, remote_id, only_failed=not show_all) if remote_id is not None else []
    blocked = blocked_items(app, [r.remote_id for r in runs if r.advanced])
    sites = site_loads(app)
    hosts = [{"site": h.site, "host": h.host, **service_json(h)} for h in host_states(app)]
    return {"runs": as_json(runs), "components": as_json(comps), "blocked": as_json(blocked), "sites": [asdict(x) for x in sites],
            "hosts": hosts}  # fmt: skip
