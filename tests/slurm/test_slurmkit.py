"""The real Slurm of the tests (tests/slurmkit.py): jobs, multi-prog steps, users, and the site's front end."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sitekit import TestSite
from slurmkit import SlurmCluster, start_cluster

KEY_USER = "scbkey"


def user_dir(parent: Path, user: str, name: str) -> Path:
    """A fresh directory owned by `user` (a job's working directory must be writable by it)."""
    d = parent / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    pw = pwd.getpwnam(user)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -eu\n" + body)
    path.chmod(0o755)
    return path


def test_cluster_starts_and_a_second_start_reuses_it(slurm_cluster: SlurmCluster) -> None:
    print(slurm_cluster.note)
    assert slurm_cluster.start_seconds < 30
    assert "is UP" in slurm_cluster.run("scontrol", "ping").stdout
    parts = slurm_cluster.run("sinfo", "-h", "-o", "%P %a %l %D").stdout.split("\n")
    assert parts[0].split() == ["debug*", "up", "2:00:00", "1"]
    cpus = slurm_cluster.run("sinfo", "-h", "-N", "-p", "debug", "-o", "%N %c").stdout.split()
    assert cpus == [slurm_cluster.node, "64"]
    again = start_cluster()
    try:
        assert again.started == () and again.start_seconds < 5
    finally:
        again.stop()  # another handle still holds it: the daemons stay
    assert "is UP" in slurm_cluster.run("scontrol", "ping").stdout


def test_sbatch_wrap_completes_with_its_output(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = slurm_cluster.sbatch("-J", "scb-wrap", "-o", str(tmp_path / "out-%j.txt"),
                               "--wrap", "echo hello from $SLURM_JOB_ID on $(hostname -s)", cwd=tmp_path)  # fmt: skip
    info = slurm_cluster.wait_job(job, {"COMPLETED", "FAILED", "CANCELLED"})
    assert (info["JobState"], info["ExitCode"], info["JobName"]) == ("COMPLETED", "0:0", "scb-wrap")
    text = (tmp_path / f"out-{job}.txt").read_text()
    assert text == f"hello from {job} on {slurm_cluster.node}\n"


def test_multiprog_runs_four_ranks_with_t_substituted(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    conf = tmp_path / "mp.conf"
    task = script(
        tmp_path / "task.sh", f"echo rank=$1 procid=$SLURM_PROCID pid=$$ > {tmp_path}/rank-$1.txt\n"
    )
    conf.write_text(f"0-3 {task} %t\n")
    job_sh = script(tmp_path / "job.sh", f"srun -n 4 --multi-prog {conf}\n")
    job = slurm_cluster.sbatch(
        "-n", "4", "-o", str(tmp_path / "job.out"), str(job_sh), cwd=tmp_path
    )
    info = slurm_cluster.wait_job(job, {"COMPLETED", "FAILED"})
    assert info["JobState"] == "COMPLETED", (tmp_path / "job.out").read_text()
    lines = {p.name: p.read_text().split() for p in tmp_path.glob("rank-*.txt")}
    assert sorted(lines) == [f"rank-{r}.txt" for r in range(4)]
    for name, (rank, procid, _pid) in lines.items():
        assert rank == f"rank={name[5]}" and procid == f"procid={name[5]}"  # %t is the task's rank
    assert len({words[2] for words in lines.values()}) == 4  # four separate tasks


def _two_steps(cluster: SlurmCluster, tmp_path: Path, exact: bool) -> list[tuple[float, float]]:
    """Two `srun -n 2` steps started together in one 4-task job; each task writes start/end times."""
    flag = "--exact " if exact else ""
    task = script(tmp_path / "task.sh", 'date +%s.%N > "$1/$SLURM_STEP_ID-$SLURM_PROCID.start"\n'
                                        'sleep 2\ndate +%s.%N > "$1/$SLURM_STEP_ID-$SLURM_PROCID.end"\n')  # fmt: skip
    out = tmp_path / "stamps"
    out.mkdir()
    body = f"srun {flag}-n 2 {task} {out} &\nsrun {flag}-n 2 {task} {out} &\nwait\n"
    job = cluster.sbatch("-n", "4", "-o", str(tmp_path / "job.out"), str(script(tmp_path / "job.sh", body)),
                         cwd=tmp_path)  # fmt: skip
    info = cluster.wait_job(job, {"COMPLETED", "FAILED"}, timeout=90)
    assert info["JobState"] == "COMPLETED", (tmp_path / "job.out").read_text()
    steps = []
    for step in ("0", "1"):
        starts = [float(p.read_text()) for p in out.glob(f"{step}-*.start")]
        ends = [float(p.read_text()) for p in out.glob(f"{step}-*.end")]
        assert len(starts) == len(ends) == 2, sorted(os.listdir(out))
        steps.append((min(starts), max(ends)))
    return steps


def test_concurrent_exact_steps_overlap(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (s0, e0), (s1, e1) = _two_steps(slurm_cluster, tmp_path, exact=True)
    assert max(s0, s1) < min(e0, e1), "the two --exact steps did not run at the same time"


def test_steps_without_exact_run_one_after_another(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """DESIGN.md: on 22.05 each step without --exact takes all the job's CPUs."""
    (_, first_end), (second_start, _) = sorted(_two_steps(slurm_cluster, tmp_path, exact=False))
    assert first_end <= second_start, "steps without --exact overlapped"
    assert "step creation temporarily disabled" in (tmp_path / "job.out").read_text()


def test_job_as_an_ordinary_user(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    ensure_user(KEY_USER)
    d = user_dir(Path("/tmp"), KEY_USER, f"scb-slurm-{KEY_USER}-{os.getpid()}")
    try:
        job = slurm_cluster.sbatch(
            "-n", "2", "--wrap", "id -un; srun -n 2 hostname -s", user=KEY_USER, cwd=d
        )
        info = slurm_cluster.wait_job(job, {"COMPLETED", "FAILED"})
        assert info["JobState"] == "COMPLETED"
        assert info["UserId"].startswith(f"{KEY_USER}(")
        out = (d / f"slurm-{job}.out").read_text().split()
        assert out == [KEY_USER, slurm_cluster.node, slurm_cluster.node]
        assert (d / f"slurm-{job}.out").stat().st_uid == pwd.getpwnam(KEY_USER).pw_uid
        # the user's own srun outside a batch job (an interactive allocation)
        p = slurm_cluster.run("srun", "-n", "2", "id", "-un", user=KEY_USER, cwd=d)
        assert p.stdout.split() == [KEY_USER, KEY_USER]
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_bad_partition_is_refused_by_slurm(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    p = slurm_cluster.run("sbatch", "-p", "nosuchpart", "--wrap", "true", cwd=tmp_path, check=False)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [
        "sbatch: error: invalid partition specified: nosuchpart",
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
    ]


def test_front_end_submits_through_the_bastion(slurm_cluster: SlurmCluster, slurm_site: TestSite,
                                               tmp_path: Path) -> None:  # fmt: skip
    """As scbkey over ssh (bastion -> front netns): sbatch, squeue, scontrol and srun reach the daemons."""
    site = slurm_site
    cfg = site.write_ssh_config(tmp_path / "ssh_config", KEY_USER)
    d = user_dir(site.remote_root, KEY_USER, f"slurm-{os.getpid()}")

    def ssh(cmd: str) -> subprocess.CompletedProcess:
        p = subprocess.run(["ssh", "-F", str(cfg), site.front_alias, cmd], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        assert p.returncode == 0, (
            f"{cmd}: {p.returncode}\n{p.stdout}\n{p.stderr}\n{slurm_cluster.log_tail(10)}"
        )
        return p

    job = ssh(f"cd {d} && sbatch --parsable --wrap hostname").stdout.strip()
    info = slurm_cluster.wait_job(job, {"COMPLETED", "FAILED"})
    assert info["JobState"] == "COMPLETED" and info["UserId"].startswith(f"{KEY_USER}(")
    assert (d / f"slurm-{job}.out").read_text().strip() == slurm_cluster.node
    assert "JobState=COMPLETED" in ssh(f"scontrol show job -o {job}").stdout
    assert ssh(f"squeue -h -t all -j {job} -o '%i|%T'").stdout.strip() == f"{job}|COMPLETED"
    # srun from the front: slurmstepd in the root netns connects back to srun's ports in the front netns
    assert ssh(f"cd {d} && srun -n 2 hostname").stdout.split() == [slurm_cluster.node] * 2
    if site.namespaces:
        assert site.front_ns and site.host_routes[slurm_cluster.address]
        # ... and the root netns still reaches the front's ssh only through the bastion
        t0 = time.monotonic()
        for host in (site.front_host, site.host_routes[slurm_cluster.address]):
            with pytest.raises(OSError):
                socket.create_connection((host, site.front_port), timeout=2).close()
        assert time.monotonic() - t0 < 4
