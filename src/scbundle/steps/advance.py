"""advance: completed (full) runs of one stage queue the next stage's work and define its runs.

For every full run not yet advanced, the next stage (the stage's ``next_stage``, or the
config's [stages.NAME] next_stage) says which of its work the run made ready
(``Stage.queue_from``): chip -> cam -> warp -> stack. Ready items that are in no run yet go
into one new run per (next stage, label, site); items whose inputs failed for good are
*blocked* and recorded with the reason (table advance_block, shown by `scbundle status`);
items still waiting for another run are left to that run's advance. The run is then marked
``advanced`` so it is not examined again.

Idempotent, and safe with several processes: everything happens in one transaction that takes
the database's write lock first (SQLite: the write lock, as BEGIN IMMEDIATE would;
PostgreSQL: a transaction-scoped advisory lock), so a second advance waits, then finds the
runs advanced and does nothing. A piece of work is never queued twice in any case: items that
already have a component of the next stage are skipped, and the unique (stage, stage_id)
constraint of remote_component refuses a second one (advance then starts over).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from scbundle.core.app import App
from scbundle.core.errors import DatabaseError
from scbundle.core.failpoints import failpoint
from scbundle.core.states import RunState
from scbundle.db.locks import take_write_lock
from scbundle.db.models import AdvanceBlock, RemoteComponent, RemoteRun
from scbundle.db.runs import get_run, new_run
from scbundle.stages.base import Advance, Stage
from scbundle.stages.registry import get_stage, next_stage_of

NOTE_BLOCKED = 5  # blocked items spelled out in a run's advance_note (all are in advance_block)


@dataclass(frozen=True)
class BlockedItem:
    remote_id: int  # the run whose advance found it
    stage: str  # the stage it would have gone to
    item_id: int
    item: str
    reason: str


@dataclass(frozen=True)
class RunAdvanced:
    remote_id: int
    stage: str
    label: str
    next_stage: str | None
    queued: int  # items this advance put in a new run
    already: int  # ready items that were in a run before
    blocked: int
    waiting: int
    note: str


@dataclass(frozen=True)
class Defined:
    remote_id: int
    stage: str
    label: str
    site: str
    n_components: int


@dataclass(frozen=True)
class AdvanceReport:
    runs: list[RunAdvanced]
    defined: list[Defined]
    blocked: list[BlockedItem]
    skipped: str | None = None



def advance(app: App, *, label: str | None = None, remote_id: int | None = None) -> AdvanceReport:
    """Advance every full, not yet advanced run (of ``label``); or re-examine one full run."""
    from scbundle.ops.tasks import in_flight, is_enabled

    if not is_enabled(app, "advance"):
        return AdvanceReport([], [], [], skipped="advance is switched off (`scbundle tasks on advance`)")
    with in_flight(app, "advance"):
        for attempt in range(3):
            try:
                return _advance(app, label, remote_id)
            except DatabaseError as err:  # another writer queued some of the same work first
                if not isinstance(err.__cause__, IntegrityError) or attempt == 2:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


def _note(nxt: str, queued: int, into: list[int], already: int, plan: Advance) -> str:
    parts = [f"advanced to {nxt}: {queued} queued" + (f" in remote_id {', '.join(map(str, into))}" if into else "")]
    if already:
        parts.append(f"{already} queued before")
    if plan.blocked:
        shown = "; ".join(f"{b.item}: {b.reason}" for b in plan.blocked[:NOTE_BLOCKED])
        more = f"; and {len(plan.blocked) - NOTE_BLOCKED} more" if len(plan.blocked) > NOTE_BLOCKED else ""
        parts.append(f"{len(plan.blocked)} blocked ({shown}{more})")
    if plan.waiting:
        parts.append(f"{len(plan.waiting)} waiting for other runs ({plan.waiting[0].item}: {plan.waiting[0].reason})")
    return "; ".join(parts)[:2000]


def _advance(app: App, label: str | None, remote_id: int | None) -> AdvanceReport:
    with app.db.session() as s:
        take_write_lock(s)
        if remote_id is not None:
            runs = [get_run(s, remote_id, [RunState.FULL], "advance")]
        else:
            q = select(RemoteRun).where(RemoteRun.state == RunState.FULL, RemoteRun.advanced.is_(False))
            if label is not None:
                q = q.where(RemoteRun.label == label)
            runs = list(s.scalars(q.order_by(RemoteRun.remote_id)))
        failpoint("advance.examined")

        stages: dict[str, Stage] = {}
        plans: list[tuple[RemoteRun, str | None, Advance, list[int], int]] = []
        groups: dict[tuple[str, str, str], list[int]] = {}  # (stage, label, site) -> new items, in order
        claimed: set[tuple[str, int]] = set()
        for run in runs:
            nxt = next_stage_of(run.stage, app.config)
            if nxt is None:
                plans.append((run, None, Advance(), [], 0))
                continue
            if nxt not in stages:
                stages[nxt] = get_stage(nxt, app.config)
            plan = stages[nxt].queue_from(s, run)
            ready = sorted(set(plan.ready))
            before = set()
            for start in range(0, len(ready), 5000):
                before.update(s.scalars(select(RemoteComponent.stage_id).where(
                    RemoteComponent.stage == nxt, RemoteComponent.stage_id.in_(ready[start : start + 5000])
                )))  # fmt: skip
            fresh = [i for i in ready if i not in before and (nxt, i) not in claimed]
            claimed.update((nxt, i) for i in fresh)
            groups.setdefault((nxt, run.label, run.site), []).extend(fresh)
            plans.append((run, nxt, plan, fresh, len(ready) - len(fresh)))

        defined: list[Defined] = []
        into: dict[tuple[str, str, str], int] = {}
        for (nxt, lbl, site), ids in groups.items():
            if ids:
                policy = app.config.stage_settings(nxt).job_policy
                into[(nxt, lbl, site)] = rid = new_run(s, stage=nxt, label=lbl, site=site, job_policy=policy, stage_ids=ids, by="advance")
                defined.append(Defined(rid, nxt, lbl, site, len(ids)))

        out_runs: list[RunAdvanced] = []
        blocked: list[BlockedItem] = []
        for run, nxt, plan, fresh, already in plans:
            s.execute(delete(AdvanceBlock).where(AdvanceBlock.remote_id == run.remote_id))
            if nxt is None:
                note = f"advanced: {run.stage} is the last stage of the pipeline"
            else:
                target = into.get((nxt, run.label, run.site))
                note = _note(nxt, len(fresh), [target] if fresh and target else [], already, plan)
                rows = [BlockedItem(run.remote_id, nxt, b.item_id, b.item[:128], b.reason[:1000]) for b in plan.blocked]
                if rows:
                    s.execute(insert(AdvanceBlock), [
                        {"remote_id": r.remote_id, "stage": r.stage, "item_id": r.item_id, "item": r.item, "reason": r.reason} for r in rows
                    ])  # fmt: skip
                blocked += rows
            run.advanced, run.advance_note = True, note
            out_runs.append(RunAdvanced(run.remote_id, run.stage, run.label, nxt, len(fresh), already, len(plan.blocked), len(plan.waiting), note))
        return AdvanceReport(out_runs, defined, blocked)
