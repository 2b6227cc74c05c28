#!/usr/bin/env python3
"""Fill on the real Slurm: busy core-seconds / allocated core-seconds, longest-first (LPT)
dealing against round-robin, side by side; and the largest bundle that still runs as one job.

    sudo .venv/bin/python bench/fill.py [--commands 300] [--ranks 24] [--seed 1]

Needs root: it starts the test Slurm (tests/slurmkit.py). Each command sleeps a known, uneven
time (1-10 s, so the commands cost no CPU on this 2-core machine and the figure measures the
packing, not CPU contention). Both bundles run through scbundle's real prepare / exec / poll
and the real runner; round-robin is obtained by swapping the dealing function (the only
difference between the two runs). Fill = busy core-seconds (sum of the components' measured
seconds) / (allocated cores x the job's own wall time); "time used" = the job's wall time /
the walltime asked for.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "slurm")]

from probe import Probe, probe_app  # noqa: E402
from slurmkit import start_cluster  # noqa: E402

import scbundle.bundle.build as build  # noqa: E402
from scbundle.bundle.allocation import resource_request  # noqa: E402
from scbundle.bundle.build import BundlePlan, assemble  # noqa: E402
from scbundle.stages.base import ComponentSpec  # noqa: E402
from scbundle.steps.define import define  # noqa: E402
from scbundle.steps.exec import exec_runs  # noqa: E402
from scbundle.steps.poll import poll_runs  # noqa: E402
from scbundle.steps.prepare import prepare  # noqa: E402
from scbundle.steps.status import run_statuses  # noqa: E402

LPT = build.deal_by_cost


def round_robin(costs, nranks):
    ranks = [[] for _ in range(nranks)]
    for i in range(len(costs)):
        ranks[i % nranks].append(i)
    return [r for r in ranks if r]


def run_once(tmp: Path, seconds: list[float], ranks: int, dealing) -> dict:
    probes = {i + 1: Probe("ok", s) for i, s in enumerate(seconds)}
    app = probe_app(tmp, probes, cores_per_node=ranks)
    build.deal_by_cost = dealing
    try:
        rid = define(app, label="fill", stage="probe", limit=None, site=None, job_policy=None).remote_id
        prepare(app, remote_id=rid)
    finally:
        build.deal_by_cost = LPT
    exec_runs(app, remote_id=rid, progress=False)
    while poll_runs(app, remote_id=rid).results[0].state == "run":
        time.sleep(1)
    (st,) = run_statuses(app, remote_id=rid)
    u = st.usage
    assert u is not None and st.ngood == len(seconds), st
    return {"fill": u.fill, "job_s": u.job_s, "busy_core_s": u.busy_core_s, "cores": u.cores, "time_used": u.time_used}


def largest_one_job(cost_s: float = 150.0, threads: int = 2, cores: int = 24, max_nodes: int = 1000,
                    max_walltime_s: int = 12 * 3600, fill: float = 0.8) -> tuple[int, int, int, int]:  # fmt: skip
    """The most commands one job can hold on the field notes' site, and its srun steps (pure)."""

    def fits(n: int) -> bool:
        try:
            resource_request(n, threads=threads, cost_seconds=cost_s, cores_per_node=cores, fill_factor=fill,
                             max_nodes=max_nodes, max_walltime_seconds=max_walltime_s)  # fmt: skip
            return True
        except Exception:
            return False

    lo, hi = 1, 10_000_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    req = resource_request(lo, threads=threads, cost_seconds=cost_s, cores_per_node=cores, fill_factor=fill,
                           max_nodes=max_nodes, max_walltime_seconds=max_walltime_s)  # fmt: skip
    specs = [ComponentSpec(i, (), (), ("/bin/true",), ("/bin/true",), (), cost_s) for i in range(lo)]
    plan = BundlePlan(1, "chip", 1, "/lustre/scratch/project/permanent/runs/chip.1.a1",
                      "/lustre/scratch/project/permanent/tools/0123456789abcdef", "python3", cores, "slurm/job.sh.j2")  # fmt: skip
    files = assemble(specs, req, plan)
    steps = sum(1 for k in files if k.startswith("multiprog/"))
    return lo, req.nodes, req.hours, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commands", type=int, default=300)
    ap.add_argument("--ranks", type=int, default=24, help="one 24-core node of the field notes' site")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    seconds = [round(rng.uniform(1, 10), 2) for _ in range(a.commands)]
    ideal = sum(seconds) / a.ranks
    cluster = start_cluster()
    print(f"# {cluster.note}")
    print(f"{a.commands} commands of 1-10 s (sum {sum(seconds):.0f} s) on {a.ranks} ranks: ideal {ideal:.1f} s a rank")
    print(f"{'dealing':<12} {'job s':>7} {'busy core-s':>12} {'alloc core-s':>13} {'fill':>6}")
    try:
        for name, dealing in (("longest-1st", LPT), ("round-robin", round_robin)):
            with tempfile.TemporaryDirectory(prefix=f"scb-fill-{name}-") as tmp:
                r = run_once(Path(tmp), seconds, a.ranks, dealing)
            print(f"{name:<12} {r['job_s']:>7.1f} {r['busy_core_s']:>12.0f} {r['cores'] * r['job_s']:>13.0f} {r['fill']:>6.3f}")
    finally:
        cluster.stop()
    n, nodes, hours, steps = largest_one_job()
    print(f"largest bundle one job holds on the field notes' site (150 s x 2 threads, 24-core nodes, 1000 nodes, "
          f"12 h, fill 0.8): {n:,} commands -> {nodes} nodes x {hours} h, {steps} srun steps (configs under 60000 bytes)")  # fmt: skip


if __name__ == "__main__":
    main()
