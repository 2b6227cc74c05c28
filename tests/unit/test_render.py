"""Generated job scripts and multi-prog configs: checked against stored reference files, and
the configs parsed by the multi-prog parser the local site's srun uses."""

from __future__ import annotations

import importlib.util
import os
import shlex
from pathlib import Path

import pytest

from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.build import BundlePlan, assemble
from scbundle.core.resources import remote_dir
from scbundle.stages.base import ComponentSpec, Requirement

DATA = Path(__file__).parent.parent / "data"


def multiprog():
    spec = importlib.util.spec_from_file_location("multiprog_under_test", remote_dir() / "multiprog.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def specs(n, odd="a'; echo foo"):
    out = []
    for i in range(n):
        raw = f"/scratch/data/raw/{odd}/e{i // 4}/c{i}.fits"
        out.append(
            ComponentSpec(
                stage_id=100 + i,
                inputs=(Requirement(f"/data/raw/{odd}/c{i}.fits", raw, 10), Requirement("/data/det/flat.fits", "/scratch/data/det/flat.fits", 20)),
                out_dirs=(f"/scratch/data/chip/{odd}/e{i // 4}",),
                command=("python3", "-S", "/perm/tools/x/sc_chip.py", "process", "--raw", raw),
                post=("python3", "-S", "/perm/tools/x/sc_chip.py", "dbinfo", "--imfile-id", str(100 + i)),
                products=((f"/scratch/data/chip/{i}.stats", f"/data/chip/{i}.stats"),),
                cost=float(1 + i % 3),
            )
        )
    return out


def plan(template, run_dir="/perm/runs/chip.7.a1"):
    return BundlePlan(remote_id=7, stage="chip", attempt=1, run_dir=run_dir, tools_dir="/perm/tools/x",
                      python="python3", cores_per_node=24, job_template=template,
                      boot="<the bootstrap>", digests="sc_runner.py=<sha256>")  # fmt: skip  (stable reference files)


REQ = ResourceRequest(hours=2, nodes=1, nranks=3, threads=2)


@pytest.mark.parametrize("template", ["slurm/job.sh.j2", "moab/job.sh.j2"])
def test_job_script_matches_reference(template):
    files = assemble(specs(9), REQ, plan(template))
    ref = DATA / f"{template.split('/')[0]}-job.sh"
    if os.environ.get("SCBUNDLE_REGEN_REFERENCE"):
        ref.write_text(files["job.sh"])
    assert files["job.sh"] == ref.read_text()


def test_bundle_lists():
    files = assemble(specs(9), REQ, plan("slurm/job.sh.j2"))
    reqs = files["requirements.tsv"].splitlines()
    assert len(reqs) == 10  # 9 raw + the shared flat, listed once
    assert files["pre.cmds"].count("mkdir -p") == 3  # one per distinct output directory (e0, e1, e2)
    cmd = shlex.split(files["commands.cmds"].splitlines()[0])
    assert cmd[-1] == "/scratch/data/raw/a'; echo foo/e0/c0.fits"  # one argument, quote and ; kept
    assert len(files["products.tsv"].splitlines()) == 9


def test_configs_parse_like_srun_with_every_component_once():
    mp = multiprog()
    run_dir = "/perm/runs/chip 7.a1"  # a space: single-quoted in the config
    files = assemble(specs(40), ResourceRequest(hours=1, nodes=1, nranks=6, threads=1), plan("slurm/job.sh.j2", run_dir))
    confs = [v for k, v in sorted(files.items()) if k.startswith("multiprog/")]
    seen = []
    for text in confs:
        ntasks = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
        tasks = mp.parse_config(text, ntasks)
        for t, argv in enumerate(tasks):
            assert argv[:4] == ["python3", "-S", "/perm/tools/x/sc_runner.py", "run"]
            assert argv[4] == run_dir  # grouped by single quotes
            assert argv[argv.index("--rank") + 1] == str(t)  # %t substituted
            ids = argv[argv.index("--ids") + 1]
            for part in ids.split(","):
                a, _, b = part.partition("-")
                seen.extend(range(int(a), int(b or a) + 1))
    assert sorted(seen) == list(range(40))
