"""status: runs by state, and for a run its components (Njobs / Ngood / Nfail, as operators read them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rich.table import Table
from sqlalchemy import func, select

from .app import App, get_run
from .db.models import RemoteComponent, RemoteRun
from .states import ComponentState


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


def run_statuses(app: App, *, label: str | None = None, remote_id: int | None = None) -> list[RunStatus]:
    with app.db.session() as s:
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
                    nabandoned=c.get(ComponentState.ABANDONED, 0), message=r.message,
                )
            )  # fmt: skip
        return out


def component_statuses(app: App, remote_id: int, *, only_failed: bool = False) -> list[ComponentStatus]:
    with app.db.session() as s:
        get_run(s, remote_id)
        q = select(RemoteComponent).where(RemoteComponent.remote_id == remote_id).order_by(RemoteComponent.stage_id)
        if only_failed:
            q = q.where(RemoteComponent.state.in_([ComponentState.ERROR, ComponentState.ABANDONED]))
        return [
            ComponentStatus(
                stage_id=c.stage_id, state=c.state, fault=c.fault, attempts=c.attempts, exit_code=c.exit_code, rank=c.rank,
                seconds=(c.t_end - c.t_start) if c.t_start is not None and c.t_end is not None else None, message=c.message,
            )
            for c in s.scalars(q)
        ]  # fmt: skip


def runs_table(rows: list[RunStatus]) -> Table:
    t = Table(title="remote runs", title_justify="left")
    for col in ("remote_id", "label", "stage", "state", "fault", "job_id", "Njobs", "Ngood", "Nfail", "Npend", "Nabandon", "last_poll"):
        t.add_column(col, justify="right" if col[0].isupper() or col in ("remote_id", "fault") else "left")
    style = {"full": "green", "error": "red", "auth": "yellow", "run": "cyan"}
    for r in rows:
        t.add_row(
            str(r.remote_id), r.label, r.stage, f"[{style.get(r.state, '')}]{r.state}[/]" if r.state in style else r.state,
            str(r.fault), r.job_id or "-", str(r.njobs), str(r.ngood), str(r.nfail), str(r.npending), str(r.nabandoned),
            r.last_poll or "-",
        )  # fmt: skip
    return t


def components_table(remote_id: int, rows: list[ComponentStatus], *, limit: int | None = 50) -> Table:
    t = Table(title=f"components of remote_id {remote_id}", title_justify="left")
    for col in ("stage_id", "state", "fault", "attempts", "exit", "rank", "seconds", "message"):
        t.add_column(col)
    for c in rows[:limit] if limit else rows:
        t.add_row(
            str(c.stage_id), c.state, str(c.fault), str(c.attempts), "-" if c.exit_code is None else str(c.exit_code),
            "-" if c.rank is None else str(c.rank), "-" if c.seconds is None else f"{c.seconds:.3f}", c.message or "",
        )  # fmt: skip
    if limit and len(rows) > limit:
        t.caption = f"{len(rows) - limit} more not shown (--all)"
    return t


def as_json(rows: list) -> list[dict]:
    return [asdict(r) for r in rows]
