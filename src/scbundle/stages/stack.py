"""The demo pipeline's stack stage: the good warps of one sky cell in one filter averaged.

One component per row of the ``stack`` table (stage_id = stack_id): a sky cell, a filter and
the set of warps it combines (``stack_input``). Advance makes one from a full warp run once
every warp of that sky cell and filter has finished; warps that failed for good are left out
(the notes: "if some components fail permanently ... we need to not include them in the
input metadata"), and a sky cell with no good warp is blocked. The same set of warps is
stacked once; warps added later make a new stack of the larger set.
"""

from __future__ import annotations

import hashlib
import posixpath
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError
from scbundle.core.states import Fault
from scbundle.db.models import (
    Exposure,
    RemoteComponent,
    RemoteRun,
    Skycell,
    Stack,
    StackInput,
    StackResult,
    Warp,
    WarpResult,
)
from scbundle.stages.base import (  # fmt: skip
    Advance,
    Blocked,
    BuildContext,
    BuildFailure,
    ComponentSpec,
    DbinfoRecord,
    DbinfoTable,
    MissingInput,
    Requirement,
    Stage,
    work_outcomes,
)
from scbundle.stages.common import Sizes, chunks, data_root, not_in_a_run, upsert

STACK_COLUMNS: dict[str, type] = {
    "n_inputs": int,
    "npix": int,
    "coverage": float,
    "depth": float,
    "mean": float,
    "stdev": float,
    "median": float,
    "dtime_stack": float,
}

UPSTREAM = "warp"


def inputs_key(warp_ids: Sequence[int]) -> str:
    return hashlib.sha256(",".join(str(w) for w in sorted(warp_ids)).encode()).hexdigest()


@dataclass(frozen=True)
class _Job:
    stack_id: int
    cell_name: str
    filter: str
    warps: tuple[tuple[int, str | None], ...]  # (warp_id, local image path or None: no warp result)


def _jobs(session: Session, stack_ids: Sequence[int]) -> dict[int, _Job]:
    heads: dict[int, tuple[str, str]] = {}
    warps: dict[int, list[tuple[int, str | None]]] = {}
    for chunk in chunks(stack_ids):
        for sid, name, flt in session.execute(
            select(Stack.stack_id, Skycell.name, Stack.filter).join(Skycell, Skycell.skycell_id == Stack.skycell_id).where(Stack.stack_id.in_(chunk))
        ):
            heads[sid] = (name, flt)
            warps[sid] = []
        q = (
            select(StackInput.stack_id, StackInput.warp_id, WarpResult.image_uri)
            .join(WarpResult, WarpResult.warp_id == StackInput.warp_id, isouter=True)
            .where(StackInput.stack_id.in_(chunk))
            .order_by(StackInput.stack_id, StackInput.warp_id)
        )
        for sid, wid, image in session.execute(q):
            warps[sid].append((wid, image))
    return {s: _Job(s, heads[s][0], heads[s][1], tuple(warps[s])) for s in heads}


class StackStage(Stage):
    name = "stack"
    dbinfo_tables = {"stack_result": DbinfoTable(StackResult, "stack_id", STACK_COLUMNS)}
    next_stage = None  # the end of the demo pipeline

    def __init__(self, threads: int = 3, cost_seconds: float = 760.0) -> None:
        self.threads = threads
        self.cost_seconds = cost_seconds

    @staticmethod
    def outputs(label: str, root: str, cell_name: str, filt: str, stack_id: int) -> tuple[str, str]:
        """Local paths of the stack image and its statistics (both permanent products)."""
        base = posixpath.join(root, "stack", label, cell_name, f"{cell_name}.{filt}.stk.{stack_id}")
        return base, base + ".stats.json"

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        """Queued stacks (rows advance made from full warp runs) in no stack run yet."""
        return not_in_a_run(session, self.name, Stack.stack_id, limit)

    def queue_from(self, session: Session, upstream: RemoteRun) -> Advance:
        if upstream.stage != UPSTREAM:
            raise ConfigError(f"stage stack queues its work from {UPSTREAM} runs, not from {upstream.stage!r} (remote_id {upstream.remote_id})")
        touched = (
            select(Warp.skycell_id, Exposure.filter)
            .join(Exposure, Exposure.exp_id == Warp.exp_id)
            .join(RemoteComponent, RemoteComponent.stage_id == Warp.warp_id)
            .where(RemoteComponent.stage == UPSTREAM, RemoteComponent.remote_id == upstream.remote_id)
            .distinct()
        )
        groups = sorted(set(session.execute(touched).tuples()))
        cell_ids = {g[0] for g in groups}
        names = {cid: name for cid, name in session.execute(select(Skycell.skycell_id, Skycell.name).where(Skycell.skycell_id.in_(cell_ids)))}
        out = Advance()
        for cell_id, flt in groups:
            warp_ids = list(session.scalars(
                select(Warp.warp_id).join(Exposure, Exposure.exp_id == Warp.exp_id)
                .where(Warp.skycell_id == cell_id, Exposure.filter == flt).order_by(Warp.warp_id)
            ))  # fmt: skip
            outcomes = work_outcomes(session, UPSTREAM, warp_ids)
            item = f"{names[cell_id]} filter {flt}"
            waiting = [o for o in outcomes.values() if o.state == "waiting"]
            if waiting:
                out.waiting.append(Blocked(cell_id, item, f"{len(waiting)} of its {len(warp_ids)} warps not done: {waiting[0].reason}"))
                continue
            good = [w for w in warp_ids if outcomes[w].state == "good"]
            if not good:
                first = next(iter(outcomes.values()))
                out.blocked.append(Blocked(cell_id, item, f"no good warp ({len(warp_ids)} failed: {first.reason})"))
                continue
            key = inputs_key(good)
            stack_id = session.scalar(select(Stack.stack_id).where(Stack.skycell_id == cell_id, Stack.filter == flt, Stack.inputs_key == key))
            if stack_id is None:
                stack_id = session.execute(
                    insert(Stack).values(skycell_id=cell_id, filter=flt, n_inputs=len(good), inputs_key=key).returning(Stack.stack_id)
                ).scalar_one()
                session.execute(insert(StackInput), [{"stack_id": stack_id, "warp_id": w} for w in good])
            out.ready.append(stack_id)
        return out

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput | BuildFailure]:
        jobs = _jobs(session, stage_ids)
        sizes = Sizes()
        pm, py = ctx.pathmap, ctx.python
        stack_py = f"{ctx.tools_dir}/sc_stack.py"
        counts = [len(j.warps) for j in jobs.values()]
        typical = statistics.median(counts) if counts else 1
        out: list[ComponentSpec | MissingInput | BuildFailure] = []
        for sid in stage_ids:
            j = jobs.get(sid)
            if j is None:
                out.append(MissingInput(sid, f"stack {sid} is not in the database"))
                continue
            if not j.warps:
                out.append(BuildFailure(sid, f"stack {sid} ({j.cell_name} {j.filter}) has no input warp", int(Fault.DATA)))
                continue
            no_result = next((w for w, image in j.warps if image is None), None)
            if no_result is not None:
                out.append(MissingInput(sid, f"image of warp {no_result} (no warp result)"))
                continue
            images = [image for _, image in j.warps if image]
            absent = sizes.first_missing(images)
            if absent is not None:
                out.append(MissingInput(sid, absent))
                continue
            image_l, stats_l = self.outputs(ctx.label, data_root(pm, images[0]), j.cell_name, j.filter, sid)
            image_r, stats_r = pm.to_remote(image_l), pm.to_remote(stats_l)
            inputs = tuple(Requirement(p, pm.to_remote(p), sizes(p) or 0) for p in images)
            out.append(
                ComponentSpec(
                    stage_id=sid,
                    inputs=inputs,
                    out_dirs=(posixpath.dirname(image_r),),
                    command=(py, "-S", stack_py, "combine", "--out", image_r, "--stats", stats_r,
                             *[w for r in inputs for w in ("--input", r.remote)]),
                    post=(py, "-S", stack_py, "dbinfo", "--stats", stats_r, "--stack-id", str(sid)),
                    products=((image_r, image_l), (stats_r, stats_l)),
                    cost=self.cost_seconds * len(images) / typical,
                )
            )  # fmt: skip
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        jobs = _jobs(session, [r.stage_id for r in records])
        rows = []
        for rec in records:
            j = jobs[rec.stage_id]
            first = next(image for _, image in j.warps if image)
            image_l, stats_l = self.outputs(run.label, data_root(ctx.pathmap, first), j.cell_name, j.filter, rec.stage_id)
            rows.append({"stack_id": rec.stage_id, "remote_id": run.remote_id, "image_uri": image_l, "stats_uri": stats_l,
                         **{c: rec.values.get(c) for c in STACK_COLUMNS}})  # fmt: skip
        upsert(session, StackResult, "stack_id", rows)
