"""MoabScheduler end to end through the Moab stand-ins (tests/moabshim: msub, checkjob,
canceljob, showq translate to the real Slurm of tests/slurmkit.py, as Moab ran over Slurm at
LANL). The job scripts' #MSUB lines are rendered from templates/moab/job.sh.j2; MoabScheduler
builds every command and parses every answer, exactly as exec and poll would.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from slurmkit import SlurmCluster

from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.build import BundlePlan, assemble
from scbundle.site.schedulers.base import JobState, JobStatus, SubmitContext
from scbundle.site.schedulers.moab import MoabScheduler
from scbundle.stages.base import ComponentSpec

SHIM = Path(__file__).resolve().parents[1] / "moabshim"
MOAB = MoabScheduler()
JOB_NAME = "scb-chip-7-a1"


@dataclass
class Moab:
    """The stand-in commands first on PATH, against the test Slurm."""

    cluster: SlurmCluster
    env: dict[str, str] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)

    def run(self, argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=60, check=False)

    def submit(self, script: Path) -> str:
        p = self.run(MOAB.submit_argv(ctx(script)), cwd=script.parent)
        assert p.returncode == 0, f"msub: {p.returncode}\n{p.stdout}\n{p.stderr}"
        job_id = MOAB.parse_submit(p.stdout)
        self.submitted.append(job_id)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        p = self.run(MOAB.status_argv(ctx(), [job_id]))
        return MOAB.parse_status(p.stdout, p.stderr, p.returncode, [job_id])[job_id]

    def wait(self, job_id: str, states: set[JobState], timeout: float = 180) -> JobStatus:
        """Generous: the test Slurm is shared with other sessions, whose jobs may hold the node."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status(job_id)
            if last.state in states:
                return last
            time.sleep(0.2)
        queue = self.cluster.run("squeue", "-o", "%i %u %T %C %l %r %j", check=False).stdout
        raise AssertionError(f"{job_id} not in {states} after {timeout}s: {last}\nqueue:\n{queue}")

    def slurm_fields(self, job_id: str) -> dict[str, str]:
        fields = self.cluster.job(job_id.removeprefix("Moab."))
        assert fields is not None
        return fields


def ctx(script: Path | None = None) -> SubmitContext:
    run_dir = str(script.parent) if script else "/nonexistent"
    return SubmitContext(JOB_NAME, run_dir, str(script or "job.sh"), "/nonexistent", "python3", "")


def msub_header(run_dir: Path, **plan: str) -> str:
    """The #! and #MSUB lines of templates/moab/job.sh.j2, rendered for run_dir."""
    spec = ComponentSpec(1, (), (str(run_dir / "out"),), ("true",), ("true",), (), 1.0)
    bp = BundlePlan(remote_id=7, stage="chip", attempt=1, run_dir=str(run_dir), tools_dir="/nonexistent",
                    python="python3", cores_per_node=4, job_template="moab/job.sh.j2", **plan)  # fmt: skip
    text = assemble([spec], ResourceRequest(hours=1, nodes=1, nranks=1, threads=1), bp)["job.sh"]
    lines = []
    for line in text.splitlines():
        if not line.startswith(("#!", "#MSUB")):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def job_script(tmp_path: Path, body: str, **plan: str) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = run_dir / "job.sh"
    script.write_text(msub_header(run_dir, **plan) + body + "\n")
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module")
def moab(slurm_cluster: SlurmCluster) -> Iterator[Moab]:
    env = slurm_cluster.env()
    env["PATH"] = f"{SHIM}:{env['PATH']}"
    m = Moab(slurm_cluster, env)
    yield m
    for job_id in m.submitted:  # what a failed test left queued or running (ours only)
        if m.status(job_id).state in (JobState.PENDING, JobState.RUNNING):
            m.run(MOAB.cancel_argv(ctx(), job_id))


# ---- a job that runs out of wallclock time: started first, read last --------------------


@dataclass
class Watched:
    job_id: str
    seen: list[JobStatus] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module", autouse=True)
def timeout_job(moab: Moab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    """A job with a one-minute walltime that sleeps ten; Slurm kills it at its limit (~1-1.5 min).

    Submitted before the other tests and watched by a thread (checkjob every second), so its
    final answer is caught before Slurm forgets the job (MinJobAge) and the wait overlaps the
    other tests. The template cannot ask for less than an hour: this script is written by hand.
    """
    d = tmp_path_factory.mktemp("timeout")
    script = d / "job.sh"
    script.write_text(f"#!/bin/bash\n#MSUB -N scb-timeout\n#MSUB -l nodes=1:ppn=1,walltime=00:01:00\n"
                      f"#MSUB -j oe\n#MSUB -o {d}/job.out\nsleep 600\n")  # fmt: skip
    watched = Watched(moab.submit(script))
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 420  # a minute's run, after a wait for the shared node
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                s = moab.status(watched.job_id)
                watched.seen.append(s)
                if s.state.finished:
                    break
                time.sleep(1)
        finally:
            watched.done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield watched
    stop.set()
    thread.join(10)


# ---- the cases --------------------------------------------------------------------------


def test_msub_translates_the_templates_directives(moab: Moab, tmp_path: Path) -> None:
    script = job_script(tmp_path, "echo done", account="w23_ps1", partition="debug")
    assert "#MSUB -A w23_ps1\n#MSUB -q debug\n" in script.read_text()
    job_id = moab.submit(script)
    assert job_id.startswith("Moab.")
    f = moab.slurm_fields(job_id)
    assert (f["JobName"], f["Account"], f["Partition"]) == (JOB_NAME, "w23_ps1", "debug")
    assert f["NumNodes"] in ("1", "1-1")  # "min-max" while pending
    assert (f["TimeLimit"], f["StdOut"]) == ("01:00:00", str(script.parent / "job.out"))
    assert f["NumTasks"] == "4"  # ppn=4 -> --ntasks-per-node=4
    s = moab.wait(job_id, {JobState.COMPLETED, JobState.FAILED})
    assert (s.state, s.exit_code, s.raw, s.name) == (JobState.COMPLETED, 0, "Completed", JOB_NAME)
    assert s.elapsed_s is not None and s.elapsed_s < 60
    assert (script.parent / "job.out").read_text() == "done\n"


def test_a_failing_job_is_failed_with_its_exit_code(moab: Moab, tmp_path: Path) -> None:
    job_id = moab.submit(job_script(tmp_path, "echo about to fail; exit 7"))
    s = moab.wait(job_id, {JobState.COMPLETED, JobState.FAILED})
    assert (s.state, s.exit_code, s.raw) == (JobState.FAILED, 7, "Completed")


def test_a_cancelled_job_is_cancelled(moab: Moab, tmp_path: Path) -> None:
    job_id = moab.submit(job_script(tmp_path, "sleep 300"))
    s = moab.wait(job_id, {JobState.RUNNING})
    assert s.raw == "Running"
    queue = moab.run(["showq"]).stdout
    assert any(line.split()[:3] == [job_id, "root", "Running"] for line in queue.splitlines())
    p = moab.run(MOAB.cancel_argv(ctx(), job_id))
    assert (p.returncode, p.stdout) == (0, f"job '{job_id}' cancelled\n")
    s = moab.wait(job_id, {JobState.CANCELLED, JobState.TIMEOUT, JobState.FAILED, JobState.COMPLETED})
    assert (s.state, s.raw) == (JobState.CANCELLED, "Removed")


def test_a_job_moab_does_not_know_is_unknown(moab: Moab) -> None:
    p = moab.run(MOAB.status_argv(ctx(), ["Moab.999999999"]))
    assert (p.returncode, p.stderr) == (153, "ERROR:  cannot locate job 'Moab.999999999'\n")
    s = MOAB.parse_status(p.stdout, p.stderr, p.returncode, ["Moab.999999999"])["Moab.999999999"]
    assert (s.state, s.raw) == (JobState.UNKNOWN, "(cannot locate job)")


def test_several_ids_in_one_call(moab: Moab, tmp_path: Path) -> None:
    done = moab.submit(job_script(tmp_path, "true"))
    moab.wait(done, {JobState.COMPLETED})
    ids = [done, "Moab.999999998"]
    p = moab.run(MOAB.status_argv(ctx(), ids))
    got = MOAB.parse_status(p.stdout, p.stderr, p.returncode, ids)
    assert (got[done].state, got["Moab.999999998"].state) == (JobState.COMPLETED, JobState.UNKNOWN)


def test_a_refused_job_passes_sbatchs_message_through(moab: Moab, tmp_path: Path) -> None:
    script = job_script(tmp_path, "true", partition="nosuchpart")
    p = moab.run(MOAB.submit_argv(ctx(script)), cwd=script.parent)
    assert p.returncode == 1 and p.stdout == ""
    assert "invalid partition specified: nosuchpart" in p.stderr


def test_a_job_past_its_wallclock_is_timeout(moab: Moab, timeout_job: Watched) -> None:
    assert timeout_job.done.wait(420), f"no final answer: {timeout_job.seen[-3:]}"
    final = timeout_job.seen[-1]
    assert JobState.RUNNING in {s.state for s in timeout_job.seen}
    assert (final.state, final.raw) == (JobState.TIMEOUT, "Removed"), timeout_job.seen[-3:]
    assert final.elapsed_s is not None and final.elapsed_s >= 60
    assert final.reason.startswith("wallclock used ")
