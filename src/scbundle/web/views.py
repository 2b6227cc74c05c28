"""What the console's pages show, as plain data (the API serves it as JSON). The numbers are
`scbundle status --json`'s: built from steps/status.py's own records, never a second query
for the same counts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from scbundle.core.app import App
from scbundle.core.errors import ScbundleError
from scbundle.core.states import RunState
from scbundle.db import journal
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.runs import get_run
from scbundle.ops import tasks
from scbundle.steps.status import (
    FAILED,
    ComponentFilter,
    as_json,
    component_statuses,
    fault_counts,
    run_statuses,
    status_document,
)

DROP_WARN_S = 3600  # the link's last hour before the site drops it


@dataclass
class StageRow:
    """One label and stage of the overview: its runs by state and its components by state."""

    label: str
    stage: str
    runs: dict[str, int] = field(default_factory=dict)
    njobs: int = 0
    ngood: int = 0
    nfail: int = 0
    npending: int = 0
    nabandoned: int = 0
    faults: dict[int, int] = field(default_factory=dict)  # failed components by fault code
    remote_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LinkRow:
    site: str
    host: str
    user: str | None
    up: bool | None  # None: could not be checked (the reason in ``error``)
    age_s: float | None
    left_s: float | None
    level: str  # ok, warn (last hour), down, red (down with runs parked in auth)
    auth_runs: int
    last_event: str | None
    last_event_at: str | None
    error: str | None = None


def stage_rows(runs: list[dict], faults: dict[int, dict[int, int]]) -> list[StageRow]:
    """The status document's runs summed per label and stage (pure)."""
    rows: dict[tuple[str, str], StageRow] = {}
    for r in runs:
        row = rows.setdefault((r["label"], r["stage"]), StageRow(r["label"], r["stage"]))
        row.runs[r["state"]] = row.runs.get(r["state"], 0) + 1
        row.njobs += r["njobs"]
        row.ngood += r["ngood"]
        row.nfail += r["nfail"]
        row.npending += r["npending"]
        row.nabandoned += r["nabandoned"]
        row.remote_ids.append(r["remote_id"])
        for fault, n in faults.get(r["remote_id"], {}).items():
            row.faults[fault] = row.faults.get(fault, 0) + n
    return sorted(rows.values(), key=lambda x: (x.label, x.stage))


def link_level(up: bool | None, left_s: float | None, auth_runs: int) -> str:
    """How the overview colours a front end's link (pure)."""
    if up:
        return "warn" if left_s is not None and left_s < DROP_WARN_S else "ok"
    return "red" if auth_runs else "down"


def link_rows(app: App) -> list[LinkRow]:
    """Each ssh site's front ends: the master's state as `scbundle link check` reads it from
    the control directory, and the journal's last link event."""
    from scbundle.site.link.openssh import OpenSshLink

    with app.db.read_session() as s:
        auth = dict(s.execute(select(RemoteRun.site, func.count()).where(RemoteRun.state == RunState.AUTH)
                              .group_by(RemoteRun.site)).all())  # fmt: skip
    out = []
    for name, site in sorted(app.config.sites.items()):
        if site.link != "ssh" or site.ssh is None:
            continue
        n_auth = auth.get(name, 0)
        try:
            statuses = OpenSshLink(name, site).check()
            checked: list[tuple[str, object]] = [(m.host, m) for m in statuses]
        except (ScbundleError, OSError) as err:
            checked = [(h, err) for h in site.ssh.hosts]
        with app.db.read_session() as s:
            for host, m in checked:
                ev = journal.last_link_event(s, name, host)
                last = (ev.message, ev.at.isoformat(sep=" ", timespec="seconds")) if ev else (None, None)
                if isinstance(m, Exception):
                    out.append(LinkRow(name, host, None, None, None, None, link_level(False, None, n_auth), n_auth, *last,
                                       error=str(m)))  # fmt: skip
                else:
                    out.append(LinkRow(name, host, m.user, m.up, m.age_s, m.left_s,  # type: ignore[attr-defined]
                                       link_level(m.up, m.left_s, n_auth), n_auth, *last))  # type: ignore[attr-defined]
    return out


def overview(app: App, *, label: str | None = None) -> dict:
    doc = status_document(app, label=label)
    # only runs status counted failures in: an index range each (ix_remote_component_run_state), not every row
    faults = fault_counts(app, [r["remote_id"] for r in doc["runs"] if r["nfail"] or r["nabandoned"]])
    return {
        "status": doc,
        "stages": [asdict(r) for r in stage_rows(doc["runs"], faults)],
        "tasks": [asdict(t) for t in tasks.states(app)],
        "links": [asdict(x) for x in link_rows(app)],
    }


def run_page(app: App, remote_id: int, where: ComponentFilter, *, offset: int = 0, limit: int = 200) -> dict:
    (run,) = as_json(run_statuses(app, remote_id=remote_id))  # status's own record (not its failed-component list)
    with app.db.read_session() as s:
        history = journal.events(s, remote_id=remote_id, kind="run")
    comps = component_statuses(app, remote_id, where=where, offset=offset, limit=limit + 1)
    return {
        "run": run,
        "history": [event_json(e) for e in history],
        "components": as_json(comps[:limit]),
        "more": len(comps) > limit,
        "faults": {str(k): v for k, v in fault_counts(app, [remote_id]).get(remote_id, {}).items()},
    }


def event_json(e: journal.Event) -> dict:
    d = asdict(e)
    d["at"] = e.at.isoformat(sep=" ", timespec="seconds")
    d["from"], d["to"] = d.pop("src"), d.pop("dst")
    return d


def _rank_record(returned: Path, rank: int, idx: int) -> dict | None:
    """The component's record in its rank's result file, as poll brought it back."""
    p = returned / "results" / f"rank-{rank:05d}.jsonl"
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("index") == idx:
                    return rec
    except OSError:
        return None
    return None


LOG_CONTEXT = 200  # lines of the rank log shown around a component's command, at most


def _rank_log(returned: Path, rank: int, idx: int) -> list[str] | None:
    """The lines of the rank's log from this component's first header (``=== ... index N
    stage_id ...``) to the next component's, at most LOG_CONTEXT of them."""
    p = returned / "logs" / f"rank-{rank:05d}.log"
    mark = f" index {idx} stage_id "
    out: list[str] = []
    inside = False
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("=== ") and " index " in line:
                    inside = mark in line
                if inside:
                    out.append(line.rstrip("\n"))
                    if len(out) >= LOG_CONTEXT:
                        break
    except OSError:
        return None
    return out


def component_page(app: App, remote_id: int, stage_id: int) -> dict:
    """A component and the answer to "why": exit code, phase, attempts, the stderr tail (its
    record in the rank file poll brought back) and its lines of the rank log, when back."""
    with app.db.read_session() as s:
        run = get_run(s, remote_id)
        c = s.scalars(select(RemoteComponent).where(RemoteComponent.remote_id == remote_id,
                                                    RemoteComponent.stage_id == stage_id)).first()  # fmt: skip
        if c is None:
            raise LookupError(f"remote_id {remote_id} has no component with stage_id {stage_id}")
        returned = Path(run.path_base or "") / "returned" if run.path_base else None
        row = component_statuses(app, remote_id, where=ComponentFilter(stage_id=stage_id))[0]
        rank, idx, stage = c.rank, c.idx, run.stage
    rec = log = None
    if returned is not None and rank is not None and idx is not None:
        rec = _rank_record(returned, rank, idx)
        log = _rank_log(returned, rank, idx)
    return {
        "remote_id": remote_id, "stage": stage, "component": asdict(row),
        "phase": rec.get("phase") if rec else None,
        "stderr_tail": (rec.get("error") or "") if rec else None,
        "record_attempts": rec.get("attempts") if rec else None,
        "rank_log": log,
    }  # fmt: skip


def components_with_fault(app: App, *, label: str, stage: str, fault: int | None, limit: int = 200) -> list[dict]:
    """Failed components of a label's stage (with this fault code), across its runs."""
    with app.db.read_session() as s:
        q = (
            select(RemoteComponent.remote_id, RemoteComponent.stage_id)
            .join(RemoteRun, RemoteRun.remote_id == RemoteComponent.remote_id)
            .where(RemoteRun.label == label, RemoteRun.stage == stage, RemoteComponent.state.in_(list(FAILED)))
            .order_by(RemoteComponent.remote_id, RemoteComponent.stage_id)
            .limit(limit)
        )
        if fault is not None:
            q = q.where(RemoteComponent.fault == fault)
        keys = list(s.execute(q))
    out = []
    for rid, sid in keys:
        (c,) = component_statuses(app, rid, where=ComponentFilter(stage_id=sid))
        out.append({"remote_id": rid, **asdict(c)})
    return out


def history(app: App, *, label: str | None, limit: int = 500) -> dict:
    with app.db.read_session() as s:
        evs = journal.events(s, label=label, limit=limit)
        polls = journal.events(s, label=label, kind="run") if label is not None else []
    return {"label": label, "events": [event_json(e) for e in evs], "done": done_series(polls)}


def done_series(events: list[journal.Event]) -> dict[str, list[tuple[str, int]]]:
    """Components done (full) over time per stage, from the polls' replayed counts (pure)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for e in events:
        if e.counts is None or e.stage is None:
            continue
        series = out.setdefault(e.stage, [])
        total = (series[-1][1] if series else 0) + e.counts.good
        series.append((e.at.isoformat(sep=" ", timespec="seconds"), total))
    return out


