"""The demo pipeline's warp stage: an exposure's mosaic (cam's permanent product) resampled
onto one sky cell it overlaps.

One component per (exposure, sky cell) pair: a row of the ``warp`` table (stage_id = warp_id),
created by advance from a full cam run for every sky cell of the catalog the exposure covers
enough of (geometry.MIN_OVERLAP). The local side computes the affine transform from the
exposure's pointing and the sky cell's place in its projection cell; sc_warp.py applies it.
"""

from __future__ import annotations

import posixpath
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError
from scbundle.core.states import Fault
from scbundle.db.models import (
    CamResult,
    Exposure,
    RemoteComponent,
    RemoteRun,
    Skycell,
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
from scbundle.stages.common import Sizes, chunks, data_root, fixed, not_in_a_run, upsert
from scbundle.stages.geometry import Pointing, SkyCell, overlapping, warp_affine

WARP_COLUMNS: dict[str, type] = {
    "npix": int,
    "coverage": float,
    "mean": float,
    "stdev": float,
    "median": float,
    "dtime_warp": float,
}

UPSTREAM = "cam"


def skycell_of(row: Skycell) -> SkyCell:
    return SkyCell(row.skycell_id, row.name, row.proj_ra_deg, row.proj_dec_deg, row.scale_arcsec, row.x0, row.y0, row.width, row.height)


def pointing_of(e: Exposure) -> Pointing | None:
    if e.ra_deg is None or e.dec_deg is None:
        return None
    return Pointing(e.ra_deg, e.dec_deg, e.rot_deg or 0.0)


@dataclass(frozen=True)
class _Job:
    warp_id: int
    exp_name: str
    pointing: Pointing | None
    cell: SkyCell
    mosaic: str | None  # local path (None: no cam result)
    mosaic_size: tuple[int, int] | None


def _jobs(session: Session, warp_ids: Sequence[int]) -> dict[int, _Job]:
    out = {}
    for chunk in chunks(warp_ids):
        q = (
            select(Warp.warp_id, Exposure, Skycell, CamResult.mosaic_uri, CamResult.width, CamResult.height)
            .join(Exposure, Exposure.exp_id == Warp.exp_id)
            .join(Skycell, Skycell.skycell_id == Warp.skycell_id)
            .join(CamResult, CamResult.exp_id == Warp.exp_id, isouter=True)
            .where(Warp.warp_id.in_(chunk))
        )
        for wid, e, cell, mosaic, w, h in session.execute(q):
            out[wid] = _Job(wid, e.exp_name, pointing_of(e), skycell_of(cell), mosaic, (w, h) if w and h else None)
    return out


class WarpStage(Stage):
    name = "warp"
    dbinfo_tables = {"warp_result": DbinfoTable(WarpResult, "warp_id", WARP_COLUMNS)}
    next_stage = "stack"

    def __init__(self, threads: int = 2, cost_seconds: float = 250.0) -> None:
        self.threads = threads
        self.cost_seconds = cost_seconds

    @staticmethod
    def outputs(label: str, root: str, cell_name: str, exp_name: str) -> tuple[str, str]:
        """Local paths of the warp image and its statistics (both permanent products)."""
        base = posixpath.join(root, "warp", label, cell_name, f"{exp_name}.{cell_name}.wrp")
        return base, base + ".stats.json"

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        """Queued warps (rows advance made from full cam runs) in no warp run yet."""
        return not_in_a_run(session, self.name, Warp.warp_id, limit)

    def queue_from(self, session: Session, upstream: RemoteRun) -> Advance:
        if upstream.stage != UPSTREAM:
            raise ConfigError(f"stage warp queues its work from {UPSTREAM} runs, not from {upstream.stage!r} (remote_id {upstream.remote_id})")
        exp_ids = list(session.scalars(
            select(RemoteComponent.stage_id).where(RemoteComponent.remote_id == upstream.remote_id, RemoteComponent.stage == UPSTREAM)
        ))  # fmt: skip
        outcomes = work_outcomes(session, UPSTREAM, exp_ids)
        cells = [skycell_of(c) for c in session.scalars(select(Skycell).order_by(Skycell.skycell_id))]
        out = Advance()
        wanted: list[dict] = []
        for chunk in chunks(exp_ids):
            for e in session.scalars(select(Exposure).where(Exposure.exp_id.in_(chunk)).order_by(Exposure.exp_id)):
                item, o = f"exposure {e.exp_name}", outcomes[e.exp_id]
                if o.state == "failed":
                    out.blocked.append(Blocked(e.exp_id, item, f"cam failed: {o.reason}"))
                    continue
                if o.state == "waiting":
                    out.waiting.append(Blocked(e.exp_id, item, o.reason))
                    continue
                p = pointing_of(e)
                if p is None:
                    out.blocked.append(Blocked(e.exp_id, item, "the exposure has no pointing (exposure.ra_deg / dec_deg)"))
                    continue
                hits = overlapping(p, cells)
                if not hits:
                    out.blocked.append(Blocked(e.exp_id, item, f"no sky cell of the catalog ({len(cells)} cells) overlaps it"))
                    continue
                wanted += [{"exp_id": e.exp_id, "skycell_id": c.skycell_id, "overlap": round(frac, 4)} for c, frac in hits]
        if wanted:
            have: dict[tuple[int, int], int] = {}
            for chunk in chunks(sorted({w["exp_id"] for w in wanted})):
                for wid, eid, cid in session.execute(select(Warp.warp_id, Warp.exp_id, Warp.skycell_id).where(Warp.exp_id.in_(chunk))):
                    have[(eid, cid)] = wid
            new = [w for w in wanted if (w["exp_id"], w["skycell_id"]) not in have]
            if new:
                session.execute(insert(Warp), new)
                for chunk in chunks(sorted({w["exp_id"] for w in new})):
                    for wid, eid, cid in session.execute(select(Warp.warp_id, Warp.exp_id, Warp.skycell_id).where(Warp.exp_id.in_(chunk))):
                        have[(eid, cid)] = wid
            out.ready.extend(sorted(have[(w["exp_id"], w["skycell_id"])] for w in wanted))
        return out

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput | BuildFailure]:
        jobs = _jobs(session, stage_ids)
        sizes = Sizes()
        pm, py = ctx.pathmap, ctx.python
        warp_py = f"{ctx.tools_dir}/sc_warp.py"
        areas = [j.cell.width * j.cell.height for j in jobs.values()]
        typical = statistics.median(areas) if areas else 1
        out: list[ComponentSpec | MissingInput | BuildFailure] = []
        for sid in stage_ids:
            j = jobs.get(sid)
            if j is None:
                out.append(MissingInput(sid, f"warp {sid} is not in the database"))
                continue
            if j.mosaic is None or j.mosaic_size is None:
                out.append(MissingInput(sid, f"mosaic of exposure {j.exp_name} (no cam result)"))
                continue
            if sizes(j.mosaic) is None:
                out.append(MissingInput(sid, j.mosaic))
                continue
            if j.pointing is None:
                out.append(BuildFailure(sid, f"exposure {j.exp_name} has no pointing", int(Fault.DATA)))
                continue
            affine = warp_affine(j.pointing, j.cell, j.mosaic_size)
            image_l, stats_l = self.outputs(ctx.label, data_root(pm, j.mosaic), j.cell.name, j.exp_name)
            mosaic_r, image_r, stats_r = (pm.to_remote(p) for p in (j.mosaic, image_l, stats_l))
            out.append(
                ComponentSpec(
                    stage_id=sid,
                    inputs=(Requirement(j.mosaic, mosaic_r, sizes(j.mosaic) or 0),),
                    out_dirs=(posixpath.dirname(image_r),),
                    command=(py, "-S", warp_py, "warp", "--in", mosaic_r, "--out", image_r, "--stats", stats_r,
                             "--width", str(j.cell.width), "--height", str(j.cell.height), "--affine", *map(fixed, affine)),
                    post=(py, "-S", warp_py, "dbinfo", "--stats", stats_r, "--warp-id", str(sid)),
                    products=((image_r, image_l), (stats_r, stats_l)),
                    cost=self.cost_seconds * j.cell.width * j.cell.height / typical,
                )
            )  # fmt: skip
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        jobs = _jobs(session, [r.stage_id for r in records])
        rows = []
        for rec in records:
            j = jobs[rec.stage_id]
            assert j.mosaic is not None  # the warp ran: its mosaic was there
            image_l, stats_l = self.outputs(run.label, data_root(ctx.pathmap, j.mosaic), j.cell.name, j.exp_name)
            rows.append({"warp_id": rec.stage_id, "remote_id": run.remote_id, "image_uri": image_l, "stats_uri": stats_l,
                         **{c: rec.values.get(c) for c in WARP_COLUMNS}})  # fmt: skip
        upsert(session, WarpResult, "warp_id", rows)
