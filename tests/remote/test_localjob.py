"""remote/sc_localjob.py, the `local` site's scheduler, run as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOCALJOB = Path(__file__).resolve().parents[2] / "remote" / "sc_localjob.py"
PY = sys.executable


def lj(*args, timeout=15):
    return subprocess.run(
        [PY, str(LOCALJOB), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def start_ticks(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def live_members(pgid):
    """Pids of the process group that are not zombies (an orphaned zombie waits for
    init to reap it)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def wait_for(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


class Site:
    def __init__(self, root: Path):
        self.root = root
        self.reg = root / "jobs"
        self.run = root / "run"
        self.run.mkdir()

    def submit(self, name, script, *extra):
        path = self.run / f"{name}.sh"
        path.write_text(script)
        return lj("submit", "--registry", self.reg, "--name", name, "--workdir", self.run,
                  "--output", self.run / f"{name}.out", *extra, "--", "sh", path)

    def status(self, *args):
        r = lj("status", "--registry", self.reg, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    def state(self, name):
        return self.status("--name", name)[0].split("|")

    def wait_state(self, name, states=("COMPLETED", "FAILED"), timeout=5.0):
        return wait_for(lambda: self.state(name)[2] in states and self.state(name), timeout)


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    # never leave a job behind
    for rec_path in s.reg.glob("*.job") if s.reg.exists() else ():
        if rec_path.with_suffix(".exit").exists():
            continue
        try:
            rec = json.loads(rec_path.read_text() or "{}")
            pid = int(rec["pid"])
            if pid != os.getpid() and start_ticks(pid) == rec.get("start_ticks"):
                os.killpg(pid, signal.SIGKILL)
        except (ValueError, KeyError, TypeError, OSError):
            pass


def test_submit_runs_detached_then_completes(site):
    script = (
        'echo "path=$PATH"; echo "cwd=$(pwd)"\n'
        "i=0; while [ ! -e go ] && [ $i -lt 250 ]; do sleep 0.02; i=$((i+1)); done\n"
        "echo done\n"
    )
    bindir = site.root / "bin"
    bindir.mkdir()
    r = site.submit("job-1", script, "--path-prepend", bindir)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.isdigit()
    pid = int(job_id)
    assert os.getpgid(pid) == pid  # its own process group, the job id
    assert os.getsid(pid) == pid  # and its own session: detached from the submitter

    assert site.state("job-1") == [job_id, "job-1", "RUNNING", ""]
    (site.run / "go").touch()
    assert site.wait_state("job-1") == [job_id, "job-1", "COMPLETED", "0"]

    out = (site.run / "job-1.out").read_text().splitlines()
    assert out[0].startswith(f"path={bindir}:")
    assert out[1] == f"cwd={site.run}"
    assert out[-1] == "done"
    exit_rec = json.loads((site.reg / "job-1.exit").read_text())
    assert exit_rec["exit"] == 0 and exit_rec["ended"] > 0
    job_rec = json.loads((site.reg / "job-1.job").read_text())
    assert job_rec["job_id"] == job_id and job_rec["name"] == "job-1" and job_rec["pid"] == pid


def test_failing_job_is_failed_with_its_code(site):
    r = site.submit("bad", "echo oops >&2; exit 7\n")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert site.wait_state("bad") == [job_id, "bad", "FAILED", "7"]
    assert (site.run / "bad.out").read_text() == "oops\n"
    assert site.status("--job", job_id) == [f"{job_id}|bad|FAILED|7"]


def test_same_name_submitted_twice_at_once_starts_one_job(site):
    script = "echo x >> counter\n"
    path = site.run / "once.sh"
    path.write_text(script)
    cmd = [PY, str(LOCALJOB), "submit", "--registry", str(site.reg), "--name", "once",
           "--workdir", str(site.run), "--output", str(site.run / "once.out"), "--", "sh",
           str(path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=15) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    ids = {o.strip() for o, _ in outs}
    assert len(ids) == 1
    job_id = ids.pop()
    assert site.wait_state("once")[2] == "COMPLETED"
    again = lj(*cmd[2:])  # a re-run exec after the end: same id, nothing started
    assert again.returncode == 0 and again.stdout.strip() == job_id
    time.sleep(0.1)
    assert (site.run / "counter").read_text() == "x\n"


def test_cancel_kills_the_process_group(site):
    r = site.submit("long", "sleep 30 &\nwait\n")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert site.state("long")[2] == "RUNNING"
    t0 = time.monotonic()
    c = lj("cancel", "--registry", site.reg, job_id)
    assert c.returncode == 0, c.stderr
    assert time.monotonic() - t0 < 2
    assert site.state("long") == [job_id, "long", "FAILED", str(-signal.SIGTERM)]
    assert live_members(int(job_id)) == []  # the background sleep went too
    # cancelling an ended or unknown job is harmless
    assert lj("cancel", "--registry", site.reg, job_id).returncode == 0
    assert lj("cancel", "--registry", site.reg, "999999999").returncode == 0


def _fake_record(site, name, pid, start_ticks):
    site.reg.mkdir(exist_ok=True)
    rec = {"job_id": str(pid), "name": name, "pid": pid, "submitted": time.time() - 60,
           "start_ticks": start_ticks, "boot_id": None, "supervisor_pid": pid,
           "supervisor_start_ticks": start_ticks}
    (site.reg / f"{name}.job").write_text(json.dumps(rec))


def test_dead_pid_without_exit_record_is_unknown(site):
    p = subprocess.Popen(["true"])
    p.wait()
    _fake_record(site, "gone", p.pid, 12345)
    assert site.status("--name", "gone") == [f"{p.pid}|gone|UNKNOWN|"]


def test_reused_pid_is_not_taken_for_the_job(site):
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    # a live process (this one) whose start time is not the recorded one
    mine = start_ticks(os.getpid())
    _fake_record(site, "reused", os.getpid(), mine + 1)
    assert site.status("--name", "reused") == [f"{os.getpid()}|reused|UNKNOWN|"]
    # and cancel leaves it alone
    assert lj("cancel", "--registry", site.reg, os.getpid()).returncode == 0


def test_a_reused_job_id_is_the_job_submitted_last_and_a_name_pins_it(site):
    """Job ids are pids and pids come round again: an old record (a job that ended long ago,
    of this or an earlier database) holding the same id is not the job asked for."""
    r = site.submit("scb-new", "sleep 30\n")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    _fake_record(site, "scb-aaa-old", int(job_id), 1)  # sorts first, submitted a minute earlier
    (site.reg / "scb-aaa-old.exit").write_text(json.dumps({"exit": 3, "ended": time.time() - 50}))
    assert site.status("--job", job_id) == [f"{job_id}|scb-new|RUNNING|"]
    assert site.status("--name", "scb-aaa-old") == [f"{job_id}|scb-aaa-old|FAILED|3"]
    # cancel of the old one by name leaves the running job alone; by its own name, it goes
    assert lj("cancel", "--registry", site.reg, "--name", "scb-aaa-old", job_id).returncode == 0
    assert site.state("scb-new")[2] == "RUNNING"
    assert lj("cancel", "--registry", site.reg, "--name", "scb-new", job_id).returncode == 0
    assert site.wait_state("scb-new")[2] == "FAILED"


def test_unknown_names_and_ids(site):
    site.reg.mkdir()
    assert site.status("--name", "nope", "--job", "424242") == ["|nope||", "424242|||"]


@pytest.mark.parametrize("name", ["a/b", "../x", "has space", "", "x;y", "é"])
def test_bad_names_are_refused(site, name):
    r = lj("submit", "--registry", site.reg, "--name", name, "--workdir", site.run,
           "--output", site.run / "o", "--", "true")
    assert r.returncode == 3
    assert "refused job name" in r.stderr
    assert not (site.run / "o").exists()


def test_program_that_cannot_start_is_a_failed_submit(site):
    r = lj("submit", "--registry", site.reg, "--name", "nostart", "--workdir", site.run,
           "--output", site.run / "o", "--", "no-such-program-xyz")
    assert r.returncode == 1
    assert "no-such-program-xyz" in r.stderr
    assert not (site.reg / "nostart.job").exists()  # the name can be submitted again
