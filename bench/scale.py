#!/usr/bin/env python3
"""Scale: define, prepare and replay of one 100,000-component and one 1,000,000-component chip
run, side by side: seconds and peak memory of each step (goal: under 2 GiB at 1,000,000).
A step's peak is its own (the peak is reset between steps); process_peak_mib is the highest
of them and of the seeding's (the reset clears ru_maxrss too, so it is tracked here).

Each size runs in its own process (peak memory is a process's own), on SQLite. The
data is bench/benchkit.py's (60 chips an exposure, 6-7 detrends each from the catalog); the
job's result files are written as the runner writes them, so no job runs.

    python bench/scale.py [--sizes 100000 1000000] [--one-flat]     (SCB_BENCH_DIR: where the data goes)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import (
    CatalogChipStage,
    Timer,
    make_app,
    peak_rss_mib,
    product_owners,
    reset_peak,
    rss_mib,
    seed,
    use_stage,
)
from replay import submitted, write_results

from scbundle.site.schedulers.base import JobState, JobStatus
from scbundle.stages.registry import get_stage
from scbundle.steps.collect import _components_index, apply_results
from scbundle.steps.define import define
from scbundle.steps.prepare import prepare
from scbundle.steps.replay import read_results


def one(n: int, one_flat: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="scb-scale-", dir=os.environ.get("SCB_BENCH_DIR")) as tmp:
        home = Path(tmp)
        app = make_app(home)
        clock = Timer()
        catalog = seed(app, home, n)
        out: dict = {"components": n, "seed_s": round(clock.lap(), 1)}
        if not one_flat:
            use_stage(app, CatalogChipStage(catalog))
        base_rss = rss_mib()
        peaks = [peak_rss_mib()]  # every peak before its reset: their max is the process's
        reset_peak()

        def step(name: str, seconds: float) -> None:  # this step's seconds and its own peak
            peaks.append(peak_rss_mib())
            out[f"{name}_s"] = round(seconds, 2)
            out[f"{name}_peak_mib"] = round(peaks[-1])
            reset_peak()

        d = define(app, label="scale", stage="chip", limit=None, site=None, job_policy=None)
        step("define", clock.lap())
        p = prepare(app, remote_id=d.remote_id, stage="chip")
        step("prepare", clock.lap())
        submitted(app, d.remote_id)
        path_base = Path(p.path_base)
        files = write_results(path_base, p.nranks)
        clock.lap()
        peaks.append(peak_rss_mib())
        reset_peak()
        results = read_results(files, get_stage("chip", app.config), _components_index(path_base))
        owners = product_owners(path_base)
        job = JobStatus("4242", "scb-chip", JobState.COMPLETED, 0, "COMPLETED")
        polled = apply_results(app, d.remote_id, results, set(range(len(owners))), owners, job=job, job_note="scale")
        step("replay", clock.lap())
        out.update(
            process_peak_mib=round(max(peaks)),
            state=polled.state, good=polled.n_good, nodes=p.nodes, hours=p.hours, configs=p.n_configs,
            bundle_mib=round(sum(f.stat().st_size for f in path_base.rglob("*") if f.is_file()) / 2**20),
            rss_after_seed_mib=round(base_rss), backend=app.db.backend,
        )  # fmt: skip
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--one-flat", action="store_true", help="the shipped chip stage: one flat a chip")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: run this size, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.one_flat)))
        return
    figures = []
    for n in args.sizes:
        argv = [sys.executable, __file__, "--one", str(n)] + (["--one-flat"] if args.one_flat else [])
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            print(f"{n} components: failed (exit {p.returncode})\n{p.stderr[-3000:]}", file=sys.stderr)
            sys.exit(1)
        figures.append(json.loads(p.stdout.strip().splitlines()[-1]))
    keys = [k for k in figures[0] if k != "components"]
    print(f"{'':>22} " + " ".join(f"{f['components']:>14,}" for f in figures))
    for k in keys:
        print(f"{k:>22} " + " ".join(f"{f[k]!s:>14}" for f in figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
