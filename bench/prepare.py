#!/usr/bin/env python3
"""Prepare speed: components per second for a 37,200-component chip bundle on SQLite.

The field notes' prepare took ~0.2 s per component (about 2 hours for SAS); the goal for
the spine is the whole 37,200-component bundle in under 10 s on a 2-core machine.
Prints figures; asserts nothing about time.

    python bench/prepare.py [--components 37200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert

from scbundle.app import App
from scbundle.config import config_from_dict
from scbundle.db.migrate import upgrade
from scbundle.db.models import Detrend, Exposure, Imfile
from scbundle.db.session import Database
from scbundle.define import define
from scbundle.prepare import prepare

CLASS_IDS = [f"xy{n:02d}" for n in range(60)]  # 60 chips an exposure, as GPC1's OTAs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=37200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scb-bench-") as tmp:
        home = Path(tmp)
        cfg = config_from_dict(
            {
                "database": f"sqlite:///{home / 'bench.db'}",
                "workdir": str(home / "work"),
                "sites": {
                    "mustang": {
                        "link": "local", "scheduler": "local",
                        "remote_root": "/scratch3/ipp", "permanent_root": "/usr/projects/ps1",
                        "paths": [{"local": str(home / "data"), "remote": "/scratch3/ipp/data"}],
                        "cores_per_node": 24, "max_nodes": 1000, "fill_factor": 0.8, "max_walltime": "16:00:00",
                    }
                },
                "default_site": "mustang",
                "stages": {"chip": {"threads": 2, "cost_seconds": 150}},
            },
            "bench",
        )  # fmt: skip
        db = Database(cfg.database)
        upgrade(db)
        app = App(cfg, db)
        t0 = time.perf_counter()
        n = args.components
        n_exp = -(-n // len(CLASS_IDS))
        raw_dir = home / "data" / "raw"
        det_dir = home / "data" / "detrend"
        det_dir.mkdir(parents=True)
        dets = []
        for k, cid in enumerate(CLASS_IDS):
            p = det_dir / f"flat.r.{cid}.fits"
            p.write_bytes(b"SCFLAT1 64 64 100.0\n" + bytes(64 * 64 * 4))
            dets.append({"det_id": k + 1, "kind": "flat", "filter": "r", "class_id": cid, "uri": str(p)})
        exps, ims = [], []
        for e in range(n_exp):
            name = f"o5303g{e:04d}o"
            d = raw_dir / name
            d.mkdir(parents=True)
            exps.append({"exp_id": e + 1, "exp_name": name, "filter": "r", "dateobs": datetime(2014, 3, 18)})
            for k, cid in enumerate(CLASS_IDS):
                if len(ims) == n:
                    break
                p = d / f"{name}.{cid}.fits"
                p.write_bytes(b"SCRAW1 64 64\n")
                ims.append({"imfile_id": len(ims) + 1, "exp_id": e + 1, "class_id": cid, "uri": str(p), "det_id": k + 1, "npix": 4096 + 64 * (k % 7)})
        with db.session() as s:
            s.execute(insert(Detrend), dets)
            s.execute(insert(Exposure), exps)
            s.execute(insert(Imfile), ims)
        t_seed = time.perf_counter() - t0
        t1 = time.perf_counter()
        d = define(app, label="bench", stage="chip", limit=None, site=None, job_policy=None)
        t_define = time.perf_counter() - t1
        t2 = time.perf_counter()
        p = prepare(app, remote_id=d.remote_id, stage="chip")
        t_prepare = time.perf_counter() - t2
        base = Path(p.path_base)
        confs = sorted((base / "multiprog").glob("*.conf"))
        out = {
            "components": p.n_components,
            "define_s": round(t_define, 3),
            "prepare_s": round(t_prepare, 3),
            "components_per_s": round(p.n_components / t_prepare),
            "s_per_component": f"{t_prepare / p.n_components:.2e}",
            "field_notes_s_per_component": 0.2,
            "speedup_vs_field_notes": round(0.2 / (t_prepare / p.n_components)),
            "request": f"{p.nodes} nodes x {p.hours} h, {p.nranks} ranks",
            "configs": len(confs),
            "largest_config_bytes": max(c.stat().st_size for c in confs),
            "requirements": sum(1 for _ in open(base / "requirements.tsv")),
            "pre_mkdirs": sum(1 for _ in open(base / "pre.cmds")),
            "seed_data_s": round(t_seed, 2),
        }
        for k, v in out.items():
            print(f"{k:>30}: {v}")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
