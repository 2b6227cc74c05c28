"""The demo pipeline's data (raw chip images and shared flat fields, made locally, rows in
the exposure / detrend / imfile tables, each exposure's pointing, the sky-cell catalog) which
`scbundle demo` (cli/democmd.py) carries through chip -> cam -> warp -> stack on the embedded
default. Real (small) images, read by remote/sc_chip.py and its siblings."""

from __future__ import annotations

import importlib.util
import zlib
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from types import ModuleType

from sqlalchemy import func, insert, select

from scbundle.core.app import App
from scbundle.core.resources import remote_dir
from scbundle.db.models import Detrend, Exposure, Imfile, Skycell
from scbundle.stages.geometry import DEMO_TESS, Tessellation, demo_pointing

FILTERS = ("g", "r", "i", "z")
CLASS_IDS = tuple(f"xy{n:02d}" for n in range(1, 9))
#: chips differ in size, so their costs differ and dealing by cost matters
CHIP_SHAPE = {cid: (48 + 8 * (n % 5), 48 + 8 * (n % 3)) for n, cid in enumerate(CLASS_IDS)}


@cache
def sc_chip() -> ModuleType:
    """The remote chip program, imported so the demo data and the program share one format."""
    path = remote_dir() / "sc_chip.py"
    spec = importlib.util.spec_from_file_location("scbundle_remote_sc_chip", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def data_root(app: App, site: str | None = None) -> Path:
    rules = app.site(site or app.config.default_site).paths
    if not rules:
        raise ValueError("the site has no path rules: the demo needs one local data root")
    return Path(rules[0].local)


def ensure_skycells(session, tess: Tessellation = DEMO_TESS) -> int:
    """Put the tessellation's sky cells in the catalog (those not there yet); returns how many."""
    have = set(session.scalars(select(Skycell.skycell_id)))
    rows = [
        {"skycell_id": c.skycell_id, "name": c.name, "tess": tess.name, "proj_ra_deg": c.proj_ra, "proj_dec_deg": c.proj_dec,
         "scale_arcsec": c.scale_arcsec, "x0": c.x0, "y0": c.y0, "width": c.width, "height": c.height}
        for c in tess.skycells() if c.skycell_id not in have
    ]  # fmt: skip
    if rows:
        session.execute(insert(Skycell), rows)
    return len(rows)


def seed_demo(app: App, n_images: int, *, site: str | None = None, seed: int = 1) -> int:
    """Add exposures (8 chips each, pointed by the demo's dither pattern) until ``n_images``
    new imfiles exist, and the demo sky-cell catalog; returns how many imfiles."""
    chip = sc_chip()
    root = data_root(app, site)
    n_exp = -(-n_images // len(CLASS_IDS))
    with app.db.session() as s:
        first_exp = (s.scalar(select(func.max(Exposure.exp_id))) or 0) + 1
        first_imfile = (s.scalar(select(func.max(Imfile.imfile_id))) or 0) + 1
        flats = {(d.filter, d.class_id): d.det_id for d in s.scalars(select(Detrend))}
        next_det = (s.scalar(select(func.max(Detrend.det_id))) or 0) + 1
        new_flats = []
        for f in FILTERS:
            for cid in CLASS_IDS:
                if (f, cid) in flats:
                    continue
                w, h = CHIP_SHAPE[cid]
                path = root / "detrend" / f"flat.{f}.{cid}.fits"
                path.parent.mkdir(parents=True, exist_ok=True)
                chip.make_demo_flat(
                    str(path), w, h, seed=zlib.crc32(f"{f}.{cid}".encode()) & 0xFFFF
                )
                flats[(f, cid)] = next_det
                new_flats.append(
                    {
                        "det_id": next_det,
                        "kind": "flat",
                        "filter": f,
                        "class_id": cid,
                        "uri": str(path),
                    }
                )
                next_det += 1
        if new_flats:
            s.execute(insert(Detrend), new_flats)
        exposures, imfiles = [], []
        t0 = datetime(2014, 3, 18, 20, 0, 0)
        made = 0
        for e in range(n_exp):
            exp_id = first_exp + e
            name = f"o{5300 + exp_id // 1000}g{exp_id % 1000:04d}o"
            f = FILTERS[((exp_id - 1) // 4) % len(FILTERS)]  # a filter for 4 exposures in a row
            p = demo_pointing(exp_id)
            exposures.append({"exp_id": exp_id, "exp_name": name, "filter": f, "dateobs": t0 + timedelta(minutes=exp_id),
                              "ra_deg": p.ra_deg, "dec_deg": p.dec_deg, "rot_deg": p.rot_deg})  # fmt: skip
            for cid in CLASS_IDS:
                if made >= n_images:
                    break
                w, h = CHIP_SHAPE[cid]
                path = root / "raw" / name / f"{name}.{cid}.fits"
                path.parent.mkdir(parents=True, exist_ok=True)
                chip.make_demo_raw(
                    str(path), w, h, seed=seed * 100003 + exp_id * 17 + CLASS_IDS.index(cid)
                )
                imfiles.append(
                    {"imfile_id": first_imfile + made, "exp_id": exp_id, "class_id": cid, "uri": str(path),
                     "det_id": flats[(f, cid)], "npix": w * h}
                )  # fmt: skip
                made += 1
        s.execute(insert(Exposure), exposures)
        s.execute(insert(Imfile), imfiles)
        ensure_skycells(s)
    return made
