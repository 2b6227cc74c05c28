"""What the benchmarks share: an App on a throwaway database, the chip data of a GPC1-like night
(60 chips an exposure), a detrend catalog, and memory figures. Not a test helper: nothing here
asserts anything about time.

The catalog is what the field notes' chip stage picks from: for every chip (class_id) and
epoch, bias, dark, mask, nonlin and linearity frames (any filter), a flat per filter, and a
fringe frame for the red filters (i, z, y): 3,120 frames for 4 epochs. An imfile needs 6
detrends (7 in i, z, y): those of its chip and filter valid at its exposure's date.

scbundle's demo chip stage applies one flat (imfile.det_id); ``CatalogChipStage`` is the same
stage with the other catalog frames of the imfile added to its requirements, the shape of the
real chip stage's bundle (each frame a file the site must have), to measure prepare at that
shape.
"""

from __future__ import annotations

import bisect
import os
import resource
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy import insert, select

from scbundle.core.app import App
from scbundle.core.config import config_from_dict
from scbundle.db.migrate import upgrade
from scbundle.db.models import Detrend, Exposure, Imfile
from scbundle.db.session import Database
from scbundle.stages.base import BuildContext, ComponentSpec, MissingInput, Requirement
from scbundle.stages.chip import ChipStage
from scbundle.stages.registry import STAGES

CLASS_IDS = [f"xy{n:02d}" for n in range(60)]  # 60 chips an exposure, as GPC1's OTAs
FILTERS = ["g", "r", "i", "z", "y"]
ANY_FILTER_KINDS = ["bias", "dark", "mask", "nonlin", "linearity"]
FRINGE_FILTERS = {"i", "z", "y"}
EPOCHS = [datetime(2014, 1, 1) + timedelta(days=30 * k) for k in range(4)]
NIGHT0 = datetime(2014, 1, 2)


def make_app(home: Path, url: str | None = None, **site: object) -> App:
    """An App on ``url`` (default: SQLite under ``home``), one local-link site "mustang"."""
    cfg = config_from_dict(
        {
            "database": url or f"sqlite:///{home / 'bench.db'}",
            "workdir": str(home / "work"),
            "sites": {
                "mustang": {
                    "link": "local", "scheduler": "local",
                    "remote_root": "/scratch3/ipp", "permanent_root": "/usr/projects/ps1",
                    "paths": [{"local": str(home / "data"), "remote": "/scratch3/ipp/data"}],
                    "cores_per_node": 24, "max_nodes": 1000, "fill_factor": 0.8, "max_walltime": "16:00:00",
                    **site,
                }
            },
            "default_site": "mustang",
            "stages": {"chip": {"threads": 2, "cost_seconds": 150}},
        },
        "bench",
    )  # fmt: skip
    db = Database(cfg.database)
    upgrade(db)
    return App(cfg, db)


@dataclass
class Catalog:
    """The detrend catalog: (kind, filter or "", class_id) -> [(valid_from, det_id, path)], oldest first."""

    frames: dict[tuple[str, str, str], list[tuple[datetime, int, str]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.frames.values())

    def pick(self, kind: str, filt: str, class_id: str, when: datetime) -> tuple[int, str]:
        rows = self.frames[(kind, filt, class_id)]
        i = bisect.bisect_right([r[0] for r in rows], when) - 1
        _, det_id, path = rows[max(i, 0)]
        return det_id, path

    def kinds(self, filt: str) -> list[tuple[str, str]]:
        """(kind, filter key) of every frame an imfile in ``filt`` needs besides its flat."""
        out = [(k, "") for k in ANY_FILTER_KINDS]
        if filt in FRINGE_FILTERS:
            out.append(("fringe", filt))
        return out


def _touch(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def seed(app: App, home: Path, n_imfiles: int, *, first_exp: int = 1, first_imfile: int = 1, catalog: Catalog | None = None) -> Catalog:
    """``n_imfiles`` raw chip files and rows (60 a exposure, filters in blocks, dates across the
    epochs), and the detrend catalog (built once; pass it back to seed more)."""
    data = home / "data"
    rows_det = []
    if catalog is None:
        catalog = Catalog()
        det_dir = data / "detrend"
        det_dir.mkdir(parents=True, exist_ok=True)
        det_id = 0
        for e, since in enumerate(EPOCHS):
            for cid in CLASS_IDS:
                keys = [(k, "") for k in ANY_FILTER_KINDS] + [("flat", f) for f in FILTERS] + [("fringe", f) for f in sorted(FRINGE_FILTERS)]
                for kind, filt in keys:
                    det_id += 1
                    path = det_dir / f"{kind}.{filt or 'any'}.{cid}.e{e}.fits"
                    _touch(path, b"SCFLAT1 64 64 100.0\n" + bytes(64 * 64 * 4) if kind == "flat" else b"SCDET1\n")
                    catalog.frames.setdefault((kind, filt, cid), []).append((since, det_id, str(path)))
                    rows_det.append({"det_id": det_id, "kind": kind, "filter": filt or "any", "class_id": cid, "uri": str(path)})
    raw_dir = data / "raw"
    n_exp = -(-n_imfiles // len(CLASS_IDS))
    span = (EPOCHS[-1] + timedelta(days=30) - NIGHT0).total_seconds()
    exps, ims = [], []
    for e in range(n_exp):
        exp_id = first_exp + e
        name = f"o{5300 + exp_id // 10000}g{exp_id % 10000:04d}o"
        filt = FILTERS[(exp_id // 20) % len(FILTERS)]  # 20 exposures in a row in one filter
        when = NIGHT0 + timedelta(seconds=span * ((exp_id * 7919) % 1000) / 1000)
        exps.append({"exp_id": exp_id, "exp_name": name, "filter": filt, "dateobs": when})
        d = raw_dir / name
        d.mkdir(parents=True, exist_ok=True)
        for k, cid in enumerate(CLASS_IDS):
            if len(ims) == n_imfiles:
                break
            p = d / f"{name}.{cid}.fits"
            _touch(p, b"SCRAW1 64 64\n")
            flat_id, _ = catalog.pick("flat", filt, cid, when)
            ims.append({"imfile_id": first_imfile + len(ims), "exp_id": exp_id, "class_id": cid, "uri": str(p),
                        "det_id": flat_id, "npix": 4096 + 64 * (k % 7)})  # fmt: skip
    with app.db.session() as s:
        if rows_det:
            s.execute(insert(Detrend), rows_det)
        for start in range(0, len(exps), 20000):
            s.execute(insert(Exposure), exps[start : start + 20000])
        for start in range(0, len(ims), 20000):
            s.execute(insert(Imfile), ims[start : start + 20000])
    return catalog


class CatalogChipStage(ChipStage):
    """The chip stage with every catalog frame of the imfile as a requirement (6 or 7 a chip)."""

    def __init__(self, catalog: Catalog, threads: int = 2, cost_seconds: float = 150.0) -> None:
        super().__init__(threads, cost_seconds)
        self.catalog = catalog

    def build(self, session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput]:
        built = super().build(session, stage_ids, ctx)
        facts: dict[int, tuple[str, str, datetime]] = {}
        ids = list(stage_ids)
        for start in range(0, len(ids), 5000):
            q = (
                select(Imfile.imfile_id, Imfile.class_id, Exposure.filter, Exposure.dateobs)
                .join(Exposure, Imfile.exp_id == Exposure.exp_id)
                .where(Imfile.imfile_id.in_(ids[start : start + 5000]))
            )
            facts.update((i, (c, f, d)) for i, c, f, d in session.execute(q))
        reqs: dict[str, Requirement] = {}  # one Requirement (and one stat) a frame
        sets: dict[tuple, tuple[Requirement, ...]] = {}

        def requirement(path: str) -> Requirement:
            if path not in reqs:
                reqs[path] = Requirement(path, ctx.pathmap.to_remote(path), os.stat(path).st_size)
            return reqs[path]

        out: list[ComponentSpec | MissingInput] = []
        for b in built:
            if isinstance(b, ComponentSpec):
                class_id, filt, when = facts[b.stage_id]
                key = (class_id, filt, bisect.bisect_right(EPOCHS, when))  # the frames valid then
                if key not in sets:
                    sets[key] = tuple(requirement(self.catalog.pick(k, f, class_id, when)[1]) for k, f in self.catalog.kinds(filt))
                b = replace(b, inputs=b.inputs + sets[key])
            out.append(b)
        return out


def use_stage(app: App, stage: ChipStage) -> None:
    """Make the stage registry answer ``stage`` (the bench's variant) for "chip" in this process."""
    STAGES.use("chip", lambda: stage)


def product_owners(path_base: Path) -> array:
    """The component index of each products.tsv row: what poll's pull_results hands
    apply_results, read here from the bundle since no pull runs in a bench."""
    text = (path_base / "products.tsv").read_text()
    return array("q", (int(line.split("\t", 1)[0]) for line in text.splitlines()))


def peak_rss_mib() -> float:
    """This process's peak resident memory since the start or the last reset_peak() (VmHWM on
    Linux; elsewhere ru_maxrss, which no reset touches)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start the next peak_rss_mib() from the memory in use now (Linux >= 4.0: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        t, self.t0 = time.perf_counter() - self.t0, time.perf_counter()
        return t
