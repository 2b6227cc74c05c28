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


# ---- every value quoted for its context: a hostile job name, run directory, tools directory ----

HOSTILE = "x$(touch pwned)`touch pwned`'\"; touch pwned #"


@pytest.mark.parametrize("template", ["slurm/job.sh.j2", "moab/job.sh.j2"])
def test_a_hostile_job_name_never_reaches_a_directive(template, monkeypatch):
    import scbundle.bundle.build as build
    from scbundle.core.errors import BundleError, UnsafeNameError
    from scbundle.site.layout import job_name

    with pytest.raises(UnsafeNameError, match="stage name .* is refused"):
        job_name("x$(touch${IFS}pwned)", 7, 1, None)
    with pytest.raises(UnsafeNameError, match="stage name"):
        assemble(specs(1), REQ, BundlePlan(**{**plan(template).__dict__, "stage": "x$(touch${IFS}pwned)"}))
    # whatever builds the name (its format is changing), the template refuses one that sbatch or
    # msub would read otherwise: directive values are never escaped, only checked
    monkeypatch.setattr(build, "job_name", lambda *a: HOSTILE)
    with pytest.raises(BundleError, match="cannot go in a job script's directive or comment line"):
        assemble(specs(1), REQ, plan(template))


def test_the_job_body_keeps_every_value_one_shell_word(tmp_path):
    """steps.sh.j2 rendered with a hostile job name, run directory and tools directory: bash -n
    accepts it, and running it for real prints the name as it is and runs none of it."""
    import shutil
    import subprocess
    import sys

    from scbundle.bundle.render import render
    from scbundle.core.resources import boot_code, tool_digests

    tools = tmp_path / f"t{HOSTILE}" / "tools"
    shutil.copytree(remote_dir(), tools, ignore=shutil.ignore_patterns("__pycache__"))
    for d in (tools.parent, tools, tools / "bin"):
        d.chmod(0o755)
    run_dir = tmp_path / f"r{HOSTILE}"
    run_dir.mkdir()
    (run_dir / "pre.cmds").write_text("")
    (run_dir / "bundle.json").write_text('{"n_components": 0}')
    text = render("srun/steps.sh.j2", job_name=HOSTILE, remote_id=7, run_dir=str(run_dir), tools_dir=str(tools),
                  python=sys.executable, parts=[], threads=1, walltime_seconds=60, boot=boot_code(), digests=tool_digests())  # fmt: skip
    assert subprocess.run(["bash", "-n", "-c", text]).returncode == 0
    p = subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"scbundle job {HOSTILE} remote_id 7 starts" in p.stdout and f"scbundle job {HOSTILE} ends" in p.stdout
    assert (run_dir / "summary.json").is_file() and (run_dir / "job.exit").read_text().strip() == "0"
    assert not list(tmp_path.rglob("pwned"))
