#!/usr/bin/env python3
"""Replay speed: poll's last step for a finished 37,200-component chip job on SQLite: read and
validate the per-rank result files (dbinfo records), then the one transaction that writes the
component states, the chip_result rows and the run's state. Goal: under 3 s.

The job's result files are written here as the runner writes them (one JSON line a component,
one file a rank), so no job runs. Prints figures; asserts nothing about time.

    python bench/replay.py [--components 37200] [--database URL | --backend mariadb] [--profile]

SCBUNDLE_BENCH_NO_JOURNAL=1 (read here only): the same replay with the journal's event not
written, to measure what the journal costs (one event a run transition, none a component).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import random
import sys
import tempfile
from pathlib import Path

from benchkit import Timer, make_app, peak_rss_mib, product_owners, seed
from sqlalchemy import func, select, update

from scbundle.core.states import ComponentState, RunState
from scbundle.db import journal
from scbundle.db.models import ChipResult, RemoteComponent, RemoteRun
from scbundle.site.schedulers.base import JobState, JobStatus
from scbundle.stages.registry import get_stage
from scbundle.steps.collect import _components_index, apply_results
from scbundle.steps.define import define
from scbundle.steps.prepare import prepare
from scbundle.steps.replay import read_results


def submitted(app, remote_id: int) -> None:
    """What exec's transition does: the run and its components in state run."""
    with app.db.session() as s:
        s.execute(update(RemoteRun).where(RemoteRun.remote_id == remote_id).values(state=RunState.RUN, job_id="4242"))
        s.execute(
            update(RemoteComponent)
            .where(RemoteComponent.remote_id == remote_id)
            .values(state=ComponentState.RUN, attempts=RemoteComponent.attempts + 1)
        )


def write_results(path_base: Path, nranks: int) -> list[Path]:
    """One rank-NNNNN.jsonl a rank, a line a component, as remote/sc_runner.py writes them
    (component i on rank i % nranks); a file at a time, so a million records are never all in
    memory here."""
    rng = random.Random(5303)
    out = path_base / "returned" / "results"
    out.mkdir(parents=True, exist_ok=True)
    index = _components_index(path_base)
    n = len(index)
    files = []
    for rank in range(min(nranks, n)):
        lines = []
        for idx in range(rank, n, nranks):
            sid = index[idx]
            t0 = 1_700_000_000 + rng.random() * 3000
            values = {
                "mean": rng.gauss(1000, 30), "stdev": rng.gauss(25, 2), "median": rng.gauss(1000, 30),
                "npix": 4096, "nsat": rng.randrange(10), "bg_min": rng.gauss(900, 10), "bg_max": rng.gauss(1100, 10),
                "dtime_chip": rng.uniform(100, 200),
            }  # fmt: skip
            rec = {
                "index": idx, "stage_id": sid, "rank": rank, "host": f"nid{rank // 24:05d}", "attempts": 1, "exit": 0,
                "phase": "command", "start": t0, "end": t0 + values["dtime_chip"], "error": None,
                "dbinfo": {"table": "chip_result", "key": {"imfile_id": sid}, "values": values},
            }  # fmt: skip
            lines.append(json.dumps(rec))
        p = out / f"rank-{rank:05d}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        files.append(p)
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=37200)
    ap.add_argument("--database", default=None, help="a SQLAlchemy URL (default: SQLite in a temporary directory)")
    ap.add_argument("--backend", choices=["postgresql", "mariadb"], default=None,
                    help="a private server of this kind (tests/pgkit.py, tests/mariakit.py) instead of --database")
    ap.add_argument("--profile", action="store_true", help="print where the replay spends its time")
    ap.add_argument("--sort", default="cumulative", help="profile order (cumulative, tottime)")
    args = ap.parse_args()
    server = None
    if args.backend is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        kit = importlib.import_module("mariakit" if args.backend == "mariadb" else "pgkit")
        server = kit.start_server()
        args.database = server.url
    try:
        run(args)
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace) -> None:
    journaled = os.environ.get("SCBUNDLE_BENCH_NO_JOURNAL", "") in ("", "0")
    if not journaled:
        journal.record = lambda *a, **k: None  # type: ignore[assignment]  # the bench's switch only
    with tempfile.TemporaryDirectory(prefix="scb-bench-") as tmp:
        home = Path(tmp)
        app = make_app(home, args.database)
        seed(app, home, args.components)
        d = define(app, label="bench", stage="chip", limit=None, site=None, job_policy=None)
        p = prepare(app, remote_id=d.remote_id, stage="chip")
        submitted(app, d.remote_id)
        base = Path(p.path_base)
        files = write_results(base, p.nranks)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        clock = Timer()
        results = read_results(files, get_stage("chip", app.config), _components_index(base))
        t_read = clock.lap()
        owners = product_owners(base)
        job = JobStatus("4242", "scb-chip", JobState.COMPLETED, 0, "COMPLETED")
        polled = apply_results(app, d.remote_id, results, set(range(len(owners))), owners, job=job, job_note="job 4242 completed")
        t_apply = clock.lap()
        if prof:
            prof.disable()
        with app.db.read_session() as s:
            n_rows = s.scalar(select(func.count()).select_from(ChipResult))
            states = dict(s.execute(select(RemoteComponent.state, func.count()).group_by(RemoteComponent.state)).all())
        out = {
            "components": p.n_components,
            "backend": app.db.backend,
            "journal": journaled,
            "result_files": len(files),
            "read_validate_s": round(t_read, 3),
            "apply_transaction_s": round(t_apply, 3),
            "replay_s": round(t_read + t_apply, 3),
            "goal_s": 3.0,
            "records_per_s": round(p.n_components / (t_read + t_apply)),
            "run_state": polled.state,
            "chip_result_rows": n_rows,
            "component_states": states,
            "peak_rss_mib": round(peak_rss_mib()),
        }
        with app.db.read_session() as s:
            out["journal_events"] = len(journal.events(s))
        for k, v in out.items():
            print(f"{k:>22}: {v}")
        print(json.dumps(out))
        if prof:
            pstats.Stats(prof).sort_stats(args.sort).print_stats(30)


if __name__ == "__main__":
    main()
