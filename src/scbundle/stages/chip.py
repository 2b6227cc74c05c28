"""The demo pipeline's chip stage: detrend raw chip images with their flat field."""

from __future__ import annotations

import os
import posixpath
import statistics
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.db.models import ChipResult, Detrend, Exposure, Imfile, RemoteRun
from scbundle.stages.base import (
    BuildContext,
    ComponentSpec,
    DbinfoRecord,
    DbinfoTable,
    MissingInput,
    Requirement,
    Stage,
)
from scbundle.stages.common import data_root_of, not_in_a_run, upsert

CHIP_COLUMNS: dict[str, type] = {
    "mean": float,
    "stdev": float,
    "median": float,
    "npix": int,
    "nsat": int,
    "bg_min": float,
    "bg_max": float,
    "dtime_chip": float,
}


class ChipStage(Stage):
    name = "chip"
    dbinfo_tables = {"chip_result": DbinfoTable(ChipResult, "imfile_id", CHIP_COLUMNS)}
    next_stage = "cam"

    def __init__(self, threads: int = 2, cost_seconds: float = 150.0) -> None:
        self.threads = threads
        self.cost_seconds = cost_seconds

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        return not_in_a_run(session, self.name, Imfile.imfile_id, limit)

    @staticmethod
    def outputs(label: str, data_root: str, exp_name: str, class_id: str) -> tuple[str, str]:
        """Local paths of the processed image and the statistics file."""
        base = posixpath.join(data_root, "chip", label, exp_name, f"{exp_name}.{class_id}")
        return base + ".ch.proc", base + ".ch.stats.json"

    @staticmethod
    def binned_output(processed: str) -> str:
        """Local path of the 2x2-binned image beside the processed one (a permanent product: cam reads it)."""
        return processed.removesuffix(".ch.proc") + ".ch.b2"

    def _rows(self, session: Session, stage_ids: Sequence[int]):
        rows = {}
        ids = list(stage_ids)
        for start in range(0, len(ids), 5000):  # stay under SQL parameter limits
            chunk = ids[start : start + 5000]
            q = (
                select(Imfile.imfile_id, Imfile.uri, Imfile.class_id, Imfile.npix, Exposure.exp_name, Detrend.uri)
                .join(Exposure, Imfile.exp_id == Exposure.exp_id)
                .join(Detrend, Imfile.det_id == Detrend.det_id)
                .where(Imfile.imfile_id.in_(chunk))
            )
            for row in session.execute(q):
                rows[row[0]] = row
        return rows

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput]:
        rows = self._rows(session, stage_ids)
        sizes: dict[str, int | None] = {}  # in-memory catalog: each detrend stat'ed once

        def size_of(path: str) -> int | None:
            if path not in sizes:
                try:
                    sizes[path] = os.stat(path).st_size
                except OSError:
                    sizes[path] = None
            return sizes[path]

        npix_all = [rows[i][3] for i in stage_ids if i in rows]
        typical = statistics.median(npix_all) if npix_all else 1
        out: list[ComponentSpec | MissingInput] = []
        tools, py, pm = ctx.tools_dir, ctx.python, ctx.pathmap
        chip_py = f"{tools}/sc_chip.py"
        root_of = data_root_of(pm)
        for sid in stage_ids:
            row = rows.get(sid)
            if row is None:
                out.append(MissingInput(sid, f"imfile {sid} is not in the database"))
                continue
            _, raw, class_id, npix, exp_name, flat = row
            missing = next((p for p in (raw, flat) if size_of(p) is None), None)
            if missing is not None:
                out.append(MissingInput(sid, missing))
                continue
            proc_l, stats_l = self.outputs(ctx.label, root_of(raw), exp_name, class_id)
            bin_l = self.binned_output(proc_l)
            raw_r, flat_r, proc_r, stats_r, bin_r = (pm.to_remote(p) for p in (raw, flat, proc_l, stats_l, bin_l))
            out.append(
                ComponentSpec(
                    stage_id=sid,
                    inputs=(Requirement(raw, raw_r, size_of(raw) or 0), Requirement(flat, flat_r, size_of(flat) or 0)),
                    out_dirs=(posixpath.dirname(proc_r),),
                    command=(py, "-S", chip_py, "process", "--raw", raw_r, "--detrend", flat_r, "--out", proc_r, "--stats", stats_r, "--binned", bin_r),
                    post=(py, "-S", chip_py, "dbinfo", "--stats", stats_r, "--imfile-id", str(sid)),
                    products=((stats_r, stats_l), (bin_r, bin_l)),
                    cost=self.cost_seconds * npix / typical,
                )
            )
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        if not records:
            return
        rows = self._rows(session, [r.stage_id for r in records])
        root_of = data_root_of(ctx.pathmap)
        results = []
        for rec in records:
            _, raw, class_id, _npix, exp_name, _flat = rows[rec.stage_id]
            proc_l, stats_l = self.outputs(run.label, root_of(raw), exp_name, class_id)
            results.append({
                "imfile_id": rec.stage_id,
                "remote_id": run.remote_id,
                "stats_uri": stats_l,
                "processed_uri": ctx.pathmap.to_remote(proc_l),
                "binned_uri": self.binned_output(proc_l),
                **{c: rec.values.get(c) for c in CHIP_COLUMNS},
            })  # fmt: skip
        upsert(session, ChipResult, "imfile_id", results)
