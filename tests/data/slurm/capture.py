"""Re-capture the real Slurm outputs in this directory (see README.md): `python tests/data/slurm/capture.py`.

Needs root; starts (or reuses) the test cluster of tests/slurmkit.py and submits everything as the
ordinary user scbkey from /tmp/scb-capture, as the front end's users do. Takes about two minutes
(a --time=1 job must time out, and a finished job must be forgotten after MinJobAge).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for slurmkit

from slurmkit import SlurmCluster, start_cluster

USER = "scbkey"
WORK = Path("/tmp/scb-capture")
NEVER_ISSUED = "999999"
SQUEUE_FORMAT = "%i|%j|%T|%r"


class Capture:
    def __init__(self, cluster: SlurmCluster) -> None:
        self.c = cluster

    def run(self, *cmd: str, cwd: Path = WORK) -> subprocess.CompletedProcess:
        return self.c.run(*cmd, user=USER, cwd=cwd, check=False)

    def save(self, name: str, text: str) -> None:
        (HERE / name).write_text(text)
        print(f"  {name}: {text.strip()[:150]!r}")

    def save_result(self, base: str, p: subprocess.CompletedProcess, stdout: bool = True) -> None:
        if stdout:
            self.save(f"{base}.stdout", p.stdout)
        self.save(f"{base}.stderr", p.stderr)
        self.save(f"{base}.rc", f"{p.returncode}\n")

    def submit(self, name: str, *args: str) -> str:
        p = self.run("sbatch", "--parsable", "-J", f"scb-capture-{name}", *args)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch {name}: {p.returncode} {p.stderr}")
        return p.stdout.strip()

    def show(self, job: str) -> str:
        return self.run("scontrol", "show", "job", "-o", job).stdout

    def squeue(self, job: str) -> str:
        return self.run("squeue", "-h", "-t", "all", "-j", job, "-o", SQUEUE_FORMAT).stdout

    def wait(self, job: str, state: str, timeout: float = 300) -> None:
        self.c.wait_job(job, {state}, timeout=timeout)


def refusals(cap: Capture) -> None:
    print("sbatch refusals")
    cases = {
        "sbatch-bad-partition": ["-p", "nosuchpart"],
        "sbatch-bad-account": ["-A", "nosuchaccount"],
        "sbatch-bad-qos": ["--qos", "nosuchqos"],
        "sbatch-too-many-nodes": ["-N", "2"],
        "sbatch-time-over-partition-limit": ["-p", "short", "--time", "10"],
    }
    for base, args in cases.items():
        p = cap.run("sbatch", "-J", f"scb-capture-{base}", *args, "--wrap", "true")
        cap.save_result(base, p)
        if p.returncode == 0:  # accepted (no accounting): do not leave it behind
            job = p.stdout.split()[-1]
            cap.wait(job, "COMPLETED")


def unknown_ids(cap: Capture, job: str, tag: str) -> None:
    cap.save_result(f"scontrol-{tag}", cap.run("scontrol", "show", "job", "-o", job))
    cap.save_result(
        f"squeue-{tag}", cap.run("squeue", "-h", "-t", "all", "-j", job, "-o", SQUEUE_FORMAT)
    )
    cap.save_result(f"scancel-{tag}", cap.run("scancel", job))


def multiprog(cap: Capture) -> None:
    """srun --multi-prog refusals inside a batch job (as scbundle runs it), one file per case."""
    print("srun --multi-prog")
    filler = "* echo " + "x" * 92 + "\n"  # 100 bytes a line
    ok = (filler * 600)[:59999] + "\n"
    configs = {
        "srun-multiprog-60000-bytes": ok,
        "srun-multiprog-too-large": ok[:-1] + "x\n",  # 60001 bytes
        "srun-multiprog-line-too-long": "0-1 echo "
        + "y" * (16382 - 9)
        + "\n",  # 16382 chars + newline
        "srun-multiprog-line-16381": "0-1 echo " + "y" * (16381 - 9) + "\n",
        "srun-multiprog-unterminated-double-quote": '0-1 echo "unterminated\n',
        "srun-multiprog-unterminated-single-quote": "0-1 echo 'unterminated\n",
    }
    lines = []
    for base, text in configs.items():
        (WORK / f"{base}.conf").write_text(text)
        lines.append(
            f"srun -n 2 --multi-prog {base}.conf > {base}.out 2> {base}.err; echo $? > {base}.code"
        )
    job = cap.submit("multiprog", "-n", "2", "-o", "multiprog-job.out", "--wrap", "\n".join(lines))
    cap.c.wait_job(job, {"COMPLETED", "FAILED"}, timeout=120)
    for base in configs:
        out = (WORK / f"{base}.out").read_text()
        cap.save(f"{base}.stderr", (WORK / f"{base}.err").read_text())
        cap.save(f"{base}.rc", (WORK / f"{base}.code").read_text())
        if base.startswith("srun-multiprog-unterminated"):
            cap.save(f"{base}.stdout", out)
        else:
            print(f"  ({base}: {len(out.splitlines())} lines of task output)")
    log = (cap.c.state_dir / "slurmd.log").read_text(errors="replace").splitlines()
    stepd = [line for line in log if "format invalid" in line or "No executable program" in line]
    cap.save("slurmd-multiprog-unterminated-single-quote.log", "\n".join(stepd[-2:]) + "\n")


def main() -> None:
    cluster = start_cluster()
    cap = Capture(cluster)
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        sys.exit(
            f"user {USER} missing: run the site tests once (tests/sitekit.py creates it) or useradd it"
        )
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    os.chown(WORK, pw.pw_uid, pw.pw_gid)
    try:
        print(cluster.note)
        print(cap.run("sbatch", "--version").stdout.strip())
        # a --time=1 job first: the limit check runs about every 30 s, then KillWait
        timeout_job = cap.submit("timeout", "--time", "1", "--wrap", "sleep 300")

        print("normal submission, COMPLETED, FAILED")
        p = cap.run("sbatch", "--parsable", "-J", "scb-capture-completed", "--wrap", "echo done")
        cap.save_result("sbatch-parsable", p, stdout=True)
        completed = p.stdout.strip()
        failed = cap.submit("failed", "--wrap", "echo failing; exit 3")
        cap.wait(completed, "COMPLETED")
        cap.save("scontrol-completed.txt", cap.show(completed))
        cap.save("squeue-completed.txt", cap.squeue(completed))
        end_time = cluster.job(completed)["EndTime"]
        forgotten_at: list[float] = []

        def watch() -> None:  # polls once a second until "Invalid job id specified"
            cluster.wait_forgotten(completed, timeout=cluster.min_job_age + 300)
            forgotten_at.append(time.time())

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        cap.wait(failed, "FAILED")
        cap.save("scontrol-failed.txt", cap.show(failed))

        print("RUNNING, PENDING (dependency, begin time, held), CANCELLED")
        running = cap.submit("running", "--wrap", "sleep 300")
        cap.wait(running, "RUNNING")
        cap.save("scontrol-running.txt", cap.show(running))
        cap.save("squeue-running.txt", cap.squeue(running))
        # pending jobs that never hold back anyone else's (the cluster is shared by parallel sessions)
        pending = {
            "": cap.submit("pending", f"--dependency=afterok:{running}", "--wrap", "true"),
            "-begin": cap.submit("pending-begin", "--begin=now+1hour", "--wrap", "true"),
            "-held": cap.submit("pending-held", "--hold", "--wrap", "true"),
        }
        time.sleep(3)  # a scheduling pass, so that Reason is the scheduler's word
        for tag, job in pending.items():
            cap.save(f"scontrol-pending{tag}.txt", cap.show(job))
            cap.save(f"squeue-pending{tag}.txt", cap.squeue(job))
        cap.save_result("scancel-running", cap.run("scancel", running))
        cap.wait(running, "CANCELLED")
        cap.save("scontrol-cancelled.txt", cap.show(running))
        cap.save("squeue-cancelled.txt", cap.squeue(running))
        # the dependent job can never run now: Slurm says so (DependencyNeverSatisfied)
        cap.c.wait_job(pending[""], {"PENDING", "CANCELLED"}, timeout=10)
        time.sleep(3)
        cap.save("scontrol-pending-dependency-never.txt", cap.show(pending[""]))
        cap.run("scancel", *pending.values())

        refusals(cap)
        multiprog(cap)

        print("TIMEOUT")
        cap.wait(timeout_job, "TIMEOUT", timeout=240)
        cap.save("scontrol-timeout.txt", cap.show(timeout_job))
        cap.save("squeue-timeout.txt", cap.squeue(timeout_job))

        print("unknown and forgotten job ids")
        unknown_ids(cap, NEVER_ISSUED, "never-issued")
        watcher.join()
        unknown_ids(cap, completed, "forgotten")
        ended = time.mktime(time.strptime(end_time, "%Y-%m-%dT%H:%M:%S"))
        print(f"job {completed} (EndTime={end_time}) forgotten {forgotten_at[0] - ended:.0f}s after it ended "
              f"(MinJobAge={cluster.min_job_age}, polled once a second)")  # fmt: skip
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
