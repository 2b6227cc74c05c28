"""The demo pipeline's cam stage: an exposure's chips (their 2x2-binned images, permanent
products of chip) combined into one background-subtracted mosaic, with its statistics.

One component per exposure (stage_id = exp_id). An exposure is cam work once every one of its
imfiles has a full chip component; one chip that failed for good blocks it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.errors import ConfigError
from scbundle.core.states import ComponentState, Fault
from scbundle.db.models import CamResult, ChipResult, Exposure, Imfile, RemoteComponent, RemoteRun
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
from scbundle.stages.common import Sizes, chunks, data_root, upsert
from scbundle.stages.geometry import MOSAIC_SIZE, chip_origin

CAM_COLUMNS: dict[str, type] = {
    "n_chips": int,
    "npix": int,
    "mean": float,
    "stdev": float,
    "median": float,
    "sky": float,
    "sky_spread": float,
    "width": int,
    "height": int,
    "dtime_cam": float,
}

UPSTREAM = "chip"


@dataclass(frozen=True)
class _Chip:
    imfile_id: int
    class_id: str
    binned: str | None  # local path of the chip's binned image (None: no chip result)


@dataclass(frozen=True)
class _Exposure:
    exp_id: int
    name: str
    chips: tuple[_Chip, ...]


def _exposures(session: Session, exp_ids: Sequence[int]) -> dict[int, _Exposure]:
    chips: dict[int, list[_Chip]] = {}
    names: dict[int, str] = {}
    for chunk in chunks(exp_ids):
        q = (
            select(Exposure.exp_id, Exposure.exp_name, Imfile.imfile_id, Imfile.class_id, ChipResult.binned_uri)
            .join(Imfile, Imfile.exp_id == Exposure.exp_id, isouter=True)
            .join(ChipResult, ChipResult.imfile_id == Imfile.imfile_id, isouter=True)
            .where(Exposure.exp_id.in_(chunk))
            .order_by(Exposure.exp_id, Imfile.class_id)
        )
        for exp_id, name, imfile_id, class_id, binned in session.execute(q):
            names[exp_id] = name
            chips.setdefault(exp_id, [])
            if imfile_id is not None:
                chips[exp_id].append(_Chip(imfile_id, class_id, binned))
    return {e: _Exposure(e, names[e], tuple(chips[e])) for e in names}


class CamStage(Stage):
    name = "cam"
    dbinfo_tables = {"cam_result": DbinfoTable(CamResult, "exp_id", CAM_COLUMNS)}
    next_stage = "warp"

    def __init__(self, threads: int = 1, cost_seconds: float = 60.0) -> None:
        self.threads = threads
        self.cost_seconds = cost_seconds

    @staticmethod
    def outputs(label: str, root: str, exp_name: str) -> tuple[str, str]:
        """Local paths of the mosaic and its statistics (both permanent products)."""
        base = posixpath.join(root, "cam", label, exp_name, f"{exp_name}.cm")
        return base + ".mosaic", base + ".stats.json"

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        """Exposures whose chips are all full, in no cam run yet."""
        chip_full = select(RemoteComponent.stage_id).where(RemoteComponent.stage == UPSTREAM, RemoteComponent.state == ComponentState.FULL)
        not_done = select(Imfile.exp_id).where(Imfile.imfile_id.not_in(chip_full))
        taken = select(RemoteComponent.stage_id).where(RemoteComponent.stage == self.name)
        q = (
            select(Exposure.exp_id)
            .where(Exposure.exp_id.in_(select(Imfile.exp_id)), Exposure.exp_id.not_in(not_done), Exposure.exp_id.not_in(taken))
            .order_by(Exposure.exp_id)
        )
        if limit is not None:
            q = q.limit(limit)
        return list(session.scalars(q))

    def queue_from(self, session: Session, upstream: RemoteRun) -> Advance:
        if upstream.stage != UPSTREAM:
            raise ConfigError(f"stage cam queues its work from {UPSTREAM} runs, not from {upstream.stage!r} (remote_id {upstream.remote_id})")
        touched = select(Imfile.exp_id).join(RemoteComponent, RemoteComponent.stage_id == Imfile.imfile_id).where(
            RemoteComponent.stage == UPSTREAM, RemoteComponent.remote_id == upstream.remote_id
        )
        exposures = _exposures(session, sorted(set(session.scalars(touched))))
        outcomes = work_outcomes(session, UPSTREAM, [c.imfile_id for e in exposures.values() for c in e.chips])
        out = Advance()
        for e in exposures.values():
            failed = [(c, outcomes[c.imfile_id]) for c in e.chips if outcomes[c.imfile_id].state == "failed"]
            waiting = [(c, outcomes[c.imfile_id]) for c in e.chips if outcomes[c.imfile_id].state == "waiting"]
            item = f"exposure {e.name}"
            if failed:
                c, o = failed[0]
                more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
                out.blocked.append(Blocked(e.exp_id, item, f"{len(failed)} of {len(e.chips)} chips failed: chip {c.class_id} {o.reason}{more}"))
            elif waiting:
                out.waiting.append(Blocked(e.exp_id, item, f"{len(waiting)} of {len(e.chips)} chips not done: {waiting[0][1].reason}"))
            else:
                out.ready.append(e.exp_id)
        return out

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput | BuildFailure]:
        exposures = _exposures(session, stage_ids)
        sizes = Sizes()
        pm, tools, py = ctx.pathmap, ctx.tools_dir, ctx.python
        cam_py = f"{tools}/sc_cam.py"
        width, height = MOSAIC_SIZE
        out: list[ComponentSpec | MissingInput | BuildFailure] = []
        for sid in stage_ids:
            e = exposures.get(sid)
            if e is None:
                out.append(MissingInput(sid, f"exposure {sid} is not in the database"))
                continue
            if not e.chips:
                out.append(BuildFailure(sid, f"exposure {e.name} has no imfiles", int(Fault.DATA)))
                continue
            no_result = next((c for c in e.chips if c.binned is None), None)
            if no_result is not None:
                out.append(MissingInput(sid, f"binned image of chip {no_result.class_id} (imfile {no_result.imfile_id}: no chip result)"))
                continue
            binned = [c.binned for c in e.chips if c.binned]
            absent = sizes.first_missing(binned)
            if absent is not None:
                out.append(MissingInput(sid, absent))
                continue
            try:
                origins = [chip_origin(c.class_id) for c in e.chips]
            except ValueError as err:
                out.append(BuildFailure(sid, f"exposure {e.name}: {err}", int(Fault.DATA)))
                continue
            mosaic_l, stats_l = self.outputs(ctx.label, data_root(pm, binned[0]), e.name)
            mosaic_r, stats_r = pm.to_remote(mosaic_l), pm.to_remote(stats_l)
            chip_args: list[str] = []
            inputs = []
            for (x0, y0), path in zip(origins, binned, strict=True):
                remote = pm.to_remote(path)
                inputs.append(Requirement(path, remote, sizes(path) or 0))
                chip_args += ["--chip", str(x0), str(y0), remote]
            out.append(
                ComponentSpec(
                    stage_id=sid,
                    inputs=tuple(inputs),
                    out_dirs=(posixpath.dirname(mosaic_r),),
                    command=(py, "-S", cam_py, "mosaic", "--out", mosaic_r, "--stats", stats_r,
                             "--width", str(width), "--height", str(height), *chip_args),
                    post=(py, "-S", cam_py, "dbinfo", "--stats", stats_r, "--exp-id", str(sid)),
                    products=((mosaic_r, mosaic_l), (stats_r, stats_l)),
                    cost=self.cost_seconds * len(e.chips) / 8,
                )
            )  # fmt: skip
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        exposures = _exposures(session, [r.stage_id for r in records])
        rows = []
        for rec in records:
            e = exposures[rec.stage_id]
            first = next(c.binned for c in e.chips if c.binned)
            mosaic_l, stats_l = self.outputs(run.label, data_root(ctx.pathmap, first), e.name)
            rows.append({"exp_id": rec.stage_id, "remote_id": run.remote_id, "mosaic_uri": mosaic_l, "stats_uri": stats_l,
                         **{c: rec.values.get(c) for c in CAM_COLUMNS}})  # fmt: skip
        upsert(session, CamResult, "exp_id", rows)
