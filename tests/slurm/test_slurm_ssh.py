"""The remote case: scbundle over the link (a one-time-password login through the bastion
of tests/sitekit.py) to a front end whose jobs go to the real Slurm (tests/slurmkit.py).
sbatch, scontrol and srun run on the front end, inside its network namespace, as the site
user; nothing on the local side talks to Slurm."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "link"))
from linkkit import ssh_env


@pytest.fixture
def slurm_ssh(slurm_site, tmp_path):
    with ssh_env(slurm_site, tmp_path, scheduler="slurm", cores_per_node=8) as e:
        yield e


def test_chip_bundle_through_the_bastion_runs_as_a_real_slurm_job(slurm_ssh, slurm_cluster):
    e = slurm_ssh
    e.link_start()
    e.cli("demo-data", "--images", "40")
    rid = json.loads(e.cli("define", "--label", "s", "--stage", "chip", "--json").stdout)["remote_id"]
    e.cli("prepare", "chip", "--remote-id", str(rid))
    # exec killed right after Slurm accepted the job, before the job id reached the database
    assert e.cli("exec", "--remote-id", str(rid), failpoint="exec.submitted", check=False).returncode == -9
    assert e.q("select state, job_id from remote_run") == [("pending", None)]
    ex = json.loads(e.cli("exec", "--remote-id", str(rid), "--json").stdout)[0]
    assert ex["job_id"] and ex["invocations"] <= 7
    (run_dir,) = e.permanent.glob(f"runs/*/chip.{rid}.a1")  # runs/<installation id>/
    ((name,),) = e.q("select job_name from remote_run")
    scripts = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%o").stdout.split()
    assert scripts.count(str(run_dir / "job.sh")) == 1  # the second exec found the job, it did not submit again
    job = slurm_cluster.job(ex["job_id"])
    assert job is not None and job["JobName"] == name and name.startswith(f"scb-chip-{rid}-a1-") and job["UserId"].startswith(e.user)
    e.cli("poll", "--remote-id", str(rid), "--wait", "240")
    assert e.q("select state from remote_run") == [("full",)]
    assert e.q("select count(*) from chip_result") == [(40,)]
    assert e.q("select sched_state from remote_run")[0][0] in ("COMPLETED", "(forgotten)")
    out = (run_dir / "job.out").read_text()
    assert f"scbundle job {name}" in out and "error" not in out.lower()
    assert (run_dir / "job.submitted").read_text().strip() == ex["job_id"]  # sbatch --parsable's answer, kept
    st = json.loads(e.cli("status", "--remote-id", str(rid), "--json").stdout)["runs"][0]
    assert st["usage"]["fill"] is not None and st["usage"]["requested_core_h"] > 0
