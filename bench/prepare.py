#!/usr/bin/env python3
"""Prepare speed and memory: the 37,200-component chip bundle (620 exposures x 60 chips, each
with 6-7 detrend frames picked from a catalog of 3,120) on SQLite.

The field notes' prepare took ~0.2 s per component (about 2 hours for SAS); the goal is the
whole bundle in under 5 s on a 2-core machine. Prints figures; asserts nothing about time.

    python bench/prepare.py [--components 37200] [--one-flat] [--database URL]

--one-flat prepares with scbundle's demo chip stage as shipped (one flat a chip) instead of
the catalog shape (see bench/benchkit.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchkit import CatalogChipStage, Timer, make_app, peak_rss_mib, rss_mib, seed, use_stage

from scbundle.steps.define import define
from scbundle.steps.prepare import prepare


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=37200)
    ap.add_argument("--one-flat", action="store_true", help="the shipped chip stage: one flat a chip")
    ap.add_argument("--database", default=None, help="a SQLAlchemy URL (default: SQLite in a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="scb-bench-") as tmp:
        home = Path(tmp)
        app = make_app(home, args.database)
        clock = Timer()
        catalog = seed(app, home, args.components)
        t_seed = clock.lap()
        if not args.one_flat:
            use_stage(app, CatalogChipStage(catalog))
        d = define(app, label="bench", stage="chip", limit=None, site=None, job_policy=None)
        t_define = clock.lap()
        rss_before = rss_mib()
        p = prepare(app, remote_id=d.remote_id, stage="chip")
        t_prepare = clock.lap()
        base = Path(p.path_base)
        confs = sorted((base / "multiprog").glob("*.conf"))
        reqs = (base / "requirements.tsv").read_text().splitlines()
        out = {
            "components": p.n_components,
            "shape": "one flat a chip" if args.one_flat else f"6-7 detrends a chip from a catalog of {len(catalog)}",
            "define_s": round(t_define, 3),
            "prepare_s": round(t_prepare, 3),
            "components_per_s": round(p.n_components / t_prepare),
            "s_per_component": f"{t_prepare / p.n_components:.2e}",
            "field_notes_s_per_component": 0.2,
            "speedup_vs_field_notes": round(0.2 / (t_prepare / p.n_components)),
            "request": f"{p.nodes} nodes x {p.hours} h, {p.nranks} ranks",
            "configs": len(confs),
            "largest_config_bytes": max(c.stat().st_size for c in confs),
            "requirements": len(reqs),
            "detrend_files": sum(1 for r in reqs if "/detrend/" in r),
            "pre_mkdirs": (base / "pre.cmds").read_text().count("\n"),
            "rss_before_prepare_mib": round(rss_before),
            "peak_rss_mib": round(peak_rss_mib()),
            "seed_data_s": round(t_seed, 2),
        }
        for k, v in out.items():
            print(f"{k:>30}: {v}")
        print(json.dumps(out))


if __name__ == "__main__":
    main()
