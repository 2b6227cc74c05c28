"""A real single-machine Slurm 22.05 (Debian's slurmctld + slurmd + munge) for the tests.

    from slurmkit import start_cluster
    cluster = start_cluster()          # needs root; ~2 s cold, ~0.1 s when one is already up
    try:
        p = cluster.run("sbatch", "--parsable", "--wrap", "hostname", user="scbkey", cwd=d)
        cluster.wait_job(p.stdout.strip(), {"COMPLETED"})
    finally:
        cluster.stop()

or, in a conftest.py: `slurm_cluster = cluster_fixture(scope="session")` (tests/conftest.py does).

What it runs, all as root (SlurmUser=root), configured by /etc/slurm/slurm.conf (written here, so
ANY user's sbatch/srun/squeue/scontrol/scancel finds it without SLURM_CONF, sshd sessions included):
- munged --force (Debian's key /etc/munge/munge.key; reused when a munged already answers);
- slurmctld -D and slurmd -D, state/spool/logs/pid files in STATE_DIR (/tmp/scb-slurm);
- one node named `hostname -s` that declares CPUS (64) CPUs whatever the machine has
  (SlurmdParameters=config_overrides), ProctrackType=proctrack/linuxproc, TaskPlugin=task/none;
- partitions `debug` (default, MaxTime 2:00:00) and `short` (MaxTime 0:05:00), EnforcePartLimits=ALL;
- no accounting (accounting_storage/none: slurmdbd would need MySQL), so --account is not checked;
- MinJobAge (default 30 s, SCBSLURM_MIN_JOB_AGE) and KillWait 5 s.

The daemons listen on ADDRESS (10.232.255.1), a /32 on the root netns' loopback, not on 127.0.0.1:
the ssh test site's front netns (tests/sitekit.py) reaches it through a veth of its own
(`cluster.attach_site(site)`), and slurmd/slurmstepd reach srun back over that veth.

Sharing: every live handle holds a shared flock on USERS_LOCK; stop() stops the daemons only when no
other handle (in this process or another) holds it, so parallel pytest sessions share one cluster.
SCBSLURM_KEEP=1 leaves the daemons running after the last stop() (the next start reuses them).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

SLURM_CONF = Path("/etc/slurm/slurm.conf")
STATE_DIR = Path(os.environ.get("SCBSLURM_DIR", "/tmp/scb-slurm"))
ADDRESS = "10.232.255.1"  # on lo of the root netns; the site's front routes it through a veth
CPUS = 64
REAL_MEMORY_MB = 1000
PARTITIONS = {"debug": "02:00:00", "short": "00:05:00"}  # the first is the default
MUNGE_RUN = Path("/run/munge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUTEX = "/run/lock/scb-slurm.lock"  # start and stop, one at a time on this machine
USERS_LOCK = "/run/lock/scb-slurm.users"  # shared by every live handle
INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-test-services.sh"
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_BINARIES = ("slurmctld", "slurmd", "slurmstepd", "sbatch", "srun", "squeue", "scontrol", "scancel",
             "sinfo", "munged", "munge", "unmunge", "ip")  # fmt: skip
_PROCS: dict[str, subprocess.Popen] = {}  # daemons this process started (to reap them)
_LIVE: list[SlurmCluster] = []


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (not root, or its packages are missing and cannot be installed)."""


class SlurmStartError(RuntimeError):
    """A daemon did not come up; the message carries the logs' tail."""


@dataclass
class SlurmCluster:
    node: str
    address: str
    conf: Path
    state_dir: Path
    min_job_age: int
    partitions: tuple[str, ...]
    started: tuple[str, ...]  # daemons this start launched; () when it reused a running cluster
    start_seconds: float = 0.0
    _users_fd: int | None = field(default=None, repr=False)

    @property
    def note(self) -> str:
        how = f"started {', '.join(self.started)}" if self.started else "reused the running daemons"
        return (f"slurm 22.05: node {self.node} ({CPUS} CPUs) at {self.address}, partitions "
                f"{'/'.join(self.partitions)}, MinJobAge {self.min_job_age}s; {how}")  # fmt: skip

    # -- commands ---------------------------------------------------------------------------
    def env(self, user: str | None = None) -> dict[str, str]:
        """A clean environment for Slurm commands: no inherited SLURM_* (a test run inside a job)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(_ENV, SLURM_CONF=str(self.conf))
        if user is not None:
            pw = pwd.getpwnam(user)
            env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user)
        return env

    def run(self, *cmd: str, user: str | None = None, cwd: Path | str | None = None, check: bool = True,
            timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        """Run a command (e.g. "sbatch", ...) as root or as `user`; failures carry stdout, stderr."""
        kw: dict = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input,
                           cwd=cwd, env=self.env(user), check=False, **kw)  # fmt: skip
        if check and p.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} (as {user or 'root'}) exited {p.returncode}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}\n{self.log_tail(15)}"
            )
        return p

    def sbatch(self, *args: str, user: str | None = None, cwd: Path | str | None = None) -> str:
        """`sbatch --parsable ARGS`; returns the job id."""
        return (
            self.run("sbatch", "--parsable", *args, user=user, cwd=cwd).stdout.strip().split(";")[0]
        )

    def job(self, job_id: str | int) -> dict[str, str] | None:
        """`scontrol show job -o ID` as a dict, None once the controller has forgotten the job."""
        p = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if p.returncode != 0:
            if "Invalid job id" in p.stderr:
                return None
            raise AssertionError(f"scontrol show job {job_id}: {p.returncode} {p.stderr}")
        return parse_show_line(p.stdout)

    def wait_job(
        self, job_id: str | int, states: Iterable[str], timeout: float = 60
    ) -> dict[str, str]:
        """Poll until the job's JobState is one of `states`; returns its fields."""
        want, last = set(states), None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.job(job_id)
            if last is not None and last.get("JobState") in want:
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"job {job_id} not in {sorted(want)} after {timeout}s: {last}\n{self.log_tail(15)}"
        )

    def wait_forgotten(self, job_id: str | int, timeout: float | None = None) -> float:
        """Until `scontrol show job` says "Invalid job id specified"; returns the seconds waited."""
        t0 = time.monotonic()
        limit = (
            timeout if timeout is not None else self.min_job_age + 90
        )  # the purge runs every 60 s
        while time.monotonic() - t0 < limit:
            if self.job(job_id) is None:
                return time.monotonic() - t0
            time.sleep(1)
        raise AssertionError(f"job {job_id} still known after {limit}s")

    def node_state(self) -> str:
        """sinfo's %T of the node: idle, mixed, allocated, down*, drained, idle* (not responding)..."""
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.strip()

    def jobs(self) -> list[str]:
        """Ids of every job the controller still holds (any state)."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i", check=False).stdout
        return out.split()

    def wait_idle(self, timeout: float = 30) -> None:
        """Until no job is pending, running or completing and the node is idle.

        The cluster is shared by every live handle (parallel sessions too): this waits for theirs.
        """
        deadline = time.monotonic() + timeout
        active = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")
        while time.monotonic() < deadline:
            busy = self.run(
                "squeue", "-h", "-t", ",".join(active), "-o", "%i", check=False
            ).stdout.split()
            if not busy and self.node_state() == "idle":
                return
            time.sleep(0.1)
        raise AssertionError(f"cluster not idle after {timeout}s: node {self.node_state()!r}, "
                             f"jobs {self.jobs()}\n{self.log_tail(15)}")  # fmt: skip

    def cancel_all(self, timeout: float = 30) -> None:
        """scancel every job still pending or running, then wait until the node is idle."""
        ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if ids:
            self.run("scancel", *ids, check=False)
        self.wait_idle(timeout)

    # -- the ssh test site ------------------------------------------------------------------
    def attach_site(self, site: object) -> str | None:
        """Let the site's front end (its netns) reach the daemons and be reached back.

        Returns the front's address on its Slurm link; None in sitekit's loopback mode, where the
        front shares the root netns and needs nothing.
        """
        from sitekit import route_front_to_host

        return route_front_to_host(site, self.address)

    # -- diagnostics ------------------------------------------------------------------------
    def log_tail(self, lines: int = 30) -> str:
        return log_tail(lines, self.state_dir)

    # -- end --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Release this handle; the last one cancels leftover jobs and stops the daemons. Idempotent."""
        if self._users_fd is None:
            return
        if self in _LIVE:
            _LIVE.remove(self)
        mutex = _lock(MUTEX, fcntl.LOCK_EX)
        try:
            os.close(self._users_fd)
            self._users_fd = None
            if not _sole_user() or os.environ.get("SCBSLURM_KEEP") == "1":
                return
            try:
                if _ctld_alive(self.state_dir):
                    self.cancel_all()
            except AssertionError as e:  # best effort: the daemons stop anyway
                print(
                    f"slurmkit: stopping with jobs not finished: {str(e).splitlines()[0]}",
                    file=sys.stderr,
                )
            finally:
                _stop_daemons(self.state_dir)
        finally:
            os.close(mutex)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------
# configuration


def node_name() -> str:
    """`hostname -s`."""
    return socket.gethostname().split(".")[0]


def render_conf(node: str, state_dir: Path, min_job_age: int, address: str = ADDRESS) -> str:
    """slurm.conf for one node on this machine (the facts from DESIGN.md "Real parts")."""
    lines = [
        "# scbundle tests: written by tests/slurmkit.py (a real single-machine Slurm for the tests)",
        "ClusterName=scbtest",
        f"SlurmctldHost={node}({address})",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={state_dir}/state",
        f"SlurmdSpoolDir={state_dir}/spool",
        f"SlurmctldPidFile={state_dir}/slurmctld.pid",
        f"SlurmdPidFile={state_dir}/slurmd.pid",
        f"SlurmctldLogFile={state_dir}/slurmctld.log",
        f"SlurmdLogFile={state_dir}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SlurmdParameters=config_overrides",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        f"MinJobAge={min_job_age}",
        "KillWait=5",
        "InactiveLimit=0",
        "ReturnToService=2",
        "EnforcePartLimits=ALL",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        f"NodeName={node} NodeAddr={address} CPUs={CPUS} RealMemory={REAL_MEMORY_MB} State=UNKNOWN",
    ]
    for i, (name, max_time) in enumerate(PARTITIONS.items()):
        default = "YES" if i == 0 else "NO"
        lines.append(
            f"PartitionName={name} Nodes={node} Default={default} MaxTime={max_time} State=UP"
        )
    return "\n".join(lines) + "\n"


def parse_show_line(text: str) -> dict[str, str]:
    """`scontrol show job -o` (one line of Key=Value words) as a dict; enough for the kit's waits."""
    fields: dict[str, str] = {}
    for word in text.strip().split(" "):
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return fields


# ----------------------------------------------------------------------------------------------
# starting


def prerequisites_missing() -> list[str]:
    """What the cluster needs from the system and does not find."""
    missing = [b for b in _BINARIES if shutil.which(b, path=_ENV["PATH"]) is None]
    if not MUNGE_KEY.exists() and shutil.which("mungekey", path=_ENV["PATH"]) is None:
        missing.append(f"{MUNGE_KEY} (or mungekey to create it)")
    return missing


def ensure_prerequisites(install: bool = True) -> None:
    missing = prerequisites_missing()
    if missing and install and os.geteuid() == 0 and INSTALL_SCRIPT.exists():
        print(f"slurmkit: missing {', '.join(missing)}; running {INSTALL_SCRIPT}", file=sys.stderr)
        p = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
        )
        if p.returncode != 0:
            raise SlurmUnavailable(
                f"{INSTALL_SCRIPT} failed ({p.returncode}):\n{p.stdout}{p.stderr}"
            )
        missing = prerequisites_missing()
    if missing:
        raise SlurmUnavailable(
            f"slurm needs {', '.join(missing)}: run scripts/install-test-services.sh as root"
        )


def start_cluster(min_job_age: int | None = None, timeout: float = 30) -> SlurmCluster:
    """Start (or reuse) the machine's test cluster and return a handle; call stop() on it."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test Slurm needs root (slurmd runs jobs as their users)")
    ensure_prerequisites()
    age = (
        min_job_age
        if min_job_age is not None
        else int(os.environ.get("SCBSLURM_MIN_JOB_AGE", "30"))
    )
    t0 = time.monotonic()
    node = node_name()
    mutex = _lock(MUTEX, fcntl.LOCK_EX)
    try:
        conf = render_conf(node, STATE_DIR, age)
        started = _bring_up(node, conf, timeout)
        users_fd = _lock(USERS_LOCK, fcntl.LOCK_SH)
    finally:
        os.close(mutex)
    cluster = SlurmCluster(node=node, address=ADDRESS, conf=SLURM_CONF, state_dir=STATE_DIR, min_job_age=age,
                           partitions=tuple(PARTITIONS), started=started, _users_fd=users_fd)  # fmt: skip
    cluster.start_seconds = time.monotonic() - t0
    _LIVE.append(cluster)
    return cluster


def _bring_up(node: str, conf: str, timeout: float) -> tuple[str, ...]:
    """Under the mutex: the running cluster if healthy and configured so, else a fresh start."""
    same_conf = SLURM_CONF.exists() and SLURM_CONF.read_text() == conf
    if same_conf and _healthy(node):
        return ()
    if not same_conf and _ctld_alive(STATE_DIR) and not _sole_user():
        raise SlurmStartError(f"a running test cluster with another {SLURM_CONF} is in use by another "
                              "process (different MinJobAge?); stop it first")  # fmt: skip
    _stop_daemons(STATE_DIR)  # stale or differently configured leftovers, ours by their pid files
    started = []
    _ensure_address(ADDRESS)
    if _start_munge():
        started.append("munged")
    for sub in ("state", "spool"):
        (STATE_DIR / sub).mkdir(parents=True, exist_ok=True)
    STATE_DIR.chmod(0o755)
    _write_conf(conf)
    _start_daemon("slurmctld", timeout, ready=_ctld_up)
    _start_daemon("slurmd", timeout, ready=lambda: _node_registered(node))
    started += ["slurmctld", "slurmd"]
    _cancel_leftovers()
    _resume_node(node, timeout)
    return tuple(started)


def _healthy(node: str) -> bool:
    if not (_ctld_alive(STATE_DIR) and _pid_alive(_read_pid(STATE_DIR / "slurmd.pid"))):
        return False
    if not (_munge_ok() and _ctld_up()):
        return False
    state = _sinfo_state(node)
    if state.endswith("*") or any(s in state for s in ("down", "drain", "fail")):
        _resume_node(node, 10)
    return True


def _write_conf(text: str) -> None:
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    tmp = SLURM_CONF.with_name(f".slurm.conf.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(SLURM_CONF)


def _ensure_address(address: str) -> None:
    """The daemons' address as a /32 on lo (no dummy interfaces on every kernel); kept afterwards."""
    have = _run(["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    if f" {address}/" not in have:
        _run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])


def _munge_ok() -> bool:
    try:
        cred = _run(["munge", "-n"], check=False, timeout=5)
        return (
            cred.returncode == 0
            and _run(["unmunge"], input=cred.stdout, check=False, timeout=5).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _start_munge() -> bool:
    """munged --force (after creating /run/munge) unless one answers already; True if started here."""
    if _munge_ok():
        return False
    MUNGE_RUN.mkdir(mode=0o755, parents=True, exist_ok=True)
    for d in (Path("/var/lib/munge"), Path("/var/log/munge")):
        d.mkdir(parents=True, exist_ok=True)
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _run(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)])
    (MUNGE_RUN / "munged.pid").unlink(missing_ok=True)
    p = _run(["munged", "--force"], check=False)  # forks; the parent returns once the socket is up
    deadline = time.monotonic() + 10
    while not _munge_ok():
        if time.monotonic() > deadline:
            raise SlurmStartError(
                f"munged --force: exit {p.returncode} {p.stderr.strip()}\n{log_tail(20)}"
            )
        time.sleep(0.05)
    pid = _read_pid(MUNGE_RUN / "munged.pid")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "munged.ours").write_text(f"{pid}\n")  # stop() ends only the munged started here
    return True


def _start_daemon(name: str, timeout: float, ready: Callable[[], bool]) -> None:
    """`name -D` in its own session (it outlives this process for reuse), then wait for `ready`."""
    (STATE_DIR / f"{name}.pid").unlink(missing_ok=True)
    with open(STATE_DIR / f"{name}.stderr", "wb") as err:
        proc = subprocess.Popen([name, "-D"], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_ENV,
                                cwd=STATE_DIR, start_new_session=True, close_fds=True)  # fmt: skip
    _PROCS[name] = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SlurmStartError(f"{name} exited with {proc.returncode} at start\n{log_tail(30)}")
        if ready():
            if _read_pid(STATE_DIR / f"{name}.pid") is None:
                (STATE_DIR / f"{name}.pid").write_text(f"{proc.pid}\n")
            return
        time.sleep(0.05)
    raise SlurmStartError(f"{name} not ready after {timeout}s\n{log_tail(30)}")


def _ctld_up() -> bool:
    p = _run(["scontrol", "ping"], check=False, timeout=15)
    return p.returncode == 0 and "is UP" in p.stdout


def _sinfo_state(node: str) -> str:
    return _run(["sinfo", "-h", "-n", node, "-o", "%T"], check=False, timeout=15).stdout.strip()


def _node_registered(node: str) -> bool:
    """slurmd has registered: the node answers (no '*') whatever its state."""
    state = _sinfo_state(node)
    return bool(state) and not state.endswith("*") and state not in ("unknown", "not_responding")


def _resume_node(node: str, timeout: float) -> None:
    """A node left DOWN or DRAINED by a crash comes back: `scontrol update ... state=resume`."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _sinfo_state(node)
        if state in ("idle", "mixed", "allocated", "completing"):
            return
        if any(s in state for s in ("down", "drain", "fail")):
            _run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
        time.sleep(0.1)
    raise SlurmStartError(f"node {node} is {state!r}, not idle, after {timeout}s\n{log_tail(30)}")


def _cancel_leftovers() -> None:
    """Jobs a crashed session left in the saved state: cancelled, never run again."""
    ids = _run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
    if ids:
        _run(["scancel", *ids], check=False)


# ----------------------------------------------------------------------------------------------
# stopping


def _stop_daemons(state_dir: Path) -> None:
    """slurmd, slurmctld and (if started here) munged, found by their pid files."""
    for name in ("slurmd", "slurmctld"):
        _terminate(name, _read_pid(state_dir / f"{name}.pid"), timeout=10)
    ours = state_dir / "munged.ours"
    pid = _read_pid(ours)
    if pid is not None and pid == _read_pid(MUNGE_RUN / "munged.pid"):
        _terminate("munged", pid, timeout=5)
    ours.unlink(missing_ok=True)


def _terminate(name: str, pid: int | None, timeout: float) -> None:
    if pid is None or not _pid_alive(pid) or _comm(pid) != name:
        return
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(name)
        time.sleep(0.05)
    if _pid_alive(pid):
        _signal(pid, signal.SIGKILL)
    _reap(name)


def _reap(name: str) -> None:
    proc = _PROCS.get(name)
    if proc is not None and proc.poll() is not None:
        _PROCS.pop(name, None)


# ----------------------------------------------------------------------------------------------
# logs


def log_tail(lines: int = 30, state_dir: Path = STATE_DIR) -> str:
    """The last lines of every daemon log and stderr file (for failure messages)."""
    paths = [state_dir / f"{n}.{s}" for n in ("slurmctld", "slurmd") for s in ("log", "stderr")]
    paths.append(Path("/var/log/munge/munged.log"))
    out = []
    for path in paths:
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# small helpers


def _run(cmd: list[str], check: bool = True, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:  # fmt: skip
    env = dict(_ENV, SLURM_CONF=str(SLURM_CONF))
    return subprocess.run(
        cmd, input=input, capture_output=True, text=True, check=check, timeout=timeout, env=env
    )


def _lock(path: str, how: int) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, how)
    return fd


def _sole_user() -> bool:
    """No live handle anywhere holds USERS_LOCK (call with the mutex held)."""
    fd = os.open(USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's lock
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: int | None) -> bool:
    """Running, not a zombie (the machine's init reaps orphans when it likes)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ctld_alive(state_dir: Path) -> bool:
    pid = _read_pid(state_dir / "slurmctld.pid")
    return _pid_alive(pid) and _comm(pid) == "slurmctld"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------------------------
# pytest


def cluster_fixture(scope: str = "session", name: str = "slurm_cluster") -> Callable:
    """A pytest fixture that yields a started SlurmCluster and always releases it.

    Skips only when not root; a cluster that fails to start is an ERROR carrying the logs' tail.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _cluster(pytestconfig: pytest.Config) -> Iterator[SlurmCluster]:
        if os.geteuid() != 0:
            pytest.skip("the test Slurm needs root")
        cluster = start_cluster()
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capman = pytestconfig.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capman is not None:
            with capman.global_and_fixture_disabled():  # shown even under -q and capture
                reporter.write_line(f"\nslurm: {cluster.note} ({cluster.start_seconds:.2f}s)")
        try:
            yield cluster
        finally:
            cluster.stop()

    return _cluster


@atexit.register
def _stop_all() -> None:
    for cluster in _LIVE.copy():  # stop() removes it from _LIVE
        try:
            cluster.stop()
        except (
            OSError,
            RuntimeError,
            AssertionError,
            subprocess.SubprocessError,
        ) as e:  # best effort
            print(f"slurmkit: stopping the cluster at exit failed: {e}", file=sys.stderr)
