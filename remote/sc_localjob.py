#!/usr/bin/env python3
"""sc_localjob.py: the job launcher of the ``local`` site's scheduler.

Python 3 standard library only (3.9+), one file.

    python3 sc_localjob.py submit --registry DIR --name NAME --workdir RUN --output FILE
                                  [--path-prepend DIR] -- ARGV...
    python3 sc_localjob.py status --registry DIR [--name NAME ...] [--job JOBID ...]
    python3 sc_localjob.py cancel --registry DIR [--grace SECONDS] [--name NAME] JOBID

The registry DIR holds, per job NAME:

* ``NAME.job``: created empty with O_EXCL by ``submit`` (this is what makes submit
  idempotent by name), then replaced atomically (temp file + rename) by the full
  record ``{"job_id", "name", "pid", "submitted", "start_ticks", "boot_id",
  "supervisor_pid", "supervisor_start_ticks", "workdir", "output", "argv"}``.
* ``NAME.exit``: ``{"exit": code, "ended": epoch}`` written atomically by the
  job's supervisor when the job ends; ``code`` is negative (-signal) when the job
  was killed by a signal.

The job runs detached: ``submit`` forks, the child calls setsid() and forks the
supervisor, then exits; the supervisor (reparented to init, stdio on /dev/null)
starts ARGV as the leader of its own session and process group (stdin /dev/null,
stdout+stderr to FILE, cwd RUN, ``--path-prepend`` first on PATH), writes the
record, waits for it and writes the exit record.  The job id is the job process's
pid, which is also its process group id.  A job is RUNNING only if that pid is
alive *and* its start time (field 22 of /proc/PID/stat, recorded at submit, plus
the kernel boot id) still matches, so a reused pid is not taken for the job.

A job id is a pid, and a month of jobs reuses pids: the local side asks for a job by its
name (unique: it carries the database's installation id, remote_id and attempt), and a job
asked for by id alone is the record submitted last among those holding that id.

Exit codes: 0 ok; 1 submit failed to start the job; 2 usage error (bad workdir
or output directory); 3 a refused job name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_protocol as P  # noqa: E402  (remote/sc_protocol.py: the protocol, written once)

NAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")
MAX_NAME = 200
EMPTY_RECORD_WAIT = 5.0  # how long a reader waits for a record being written
SUBMIT_REPLY_WAIT = 30.0  # how long submit waits for the supervisor's word
FINISH_WAIT = 2.0  # job gone, supervisor alive: wait this long for the exit record
DEFAULT_GRACE = 10.0  # cancel: SIGTERM, then SIGKILL after this many seconds

EXIT_START_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_NAME = 3


def _err(msg: str) -> None:
    sys.stderr.write("sc_localjob: %s\n" % msg)
    sys.stderr.flush()


# -------------------------------------------------------------------------------------
# process facts
# -------------------------------------------------------------------------------------


def _have_procfs() -> bool:
    return os.path.exists("/proc/self/stat")


def _proc_stat(pid):
    """(state, start_ticks) of a process from /proc/PID/stat, or None if absent."""
    try:
        with open("/proc/%d/stat" % int(pid), "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    close = data.rfind(")")
    if close < 0:
        return None
    fields = data[close + 1 :].split()
    try:
        return fields[0], int(fields[19])  # field 3 is state, field 22 starttime
    except (IndexError, ValueError):
        return None


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _alive(pid, start_ticks, boot_id) -> bool:
    """True if process pid runs and is the one recorded (same start time, same boot)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if boot_id and _boot_id() and boot_id != _boot_id():
        return False
    if _have_procfs():
        st = _proc_stat(pid)
        if st is None:
            return False
        state, ticks = st
        if state in ("Z", "X", "x"):
            return False
        if start_ticks is not None and ticks != start_ticks:
            return False
        return True
    try:  # no procfs: the best we can do
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    """True while the process group has a member that is not a zombie (an orphaned
    zombie stays until init reaps it, which can take a while in a container)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _have_procfs():
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                data = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = data[data.rfind(")") + 1 :].split()
        try:
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X", "x"):
                return True
        except (IndexError, ValueError):
            continue
    return False


# -------------------------------------------------------------------------------------
# registry files
# -------------------------------------------------------------------------------------


def _job_path(reg: str, name: str) -> str:
    return os.path.join(reg, name + ".job")


def _exit_path(reg: str, name: str) -> str:
    return os.path.join(reg, name + ".exit")


def _atomic_write_json(path: str, obj) -> None:
    P.write_json_atomic(path, obj)


def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    if not data.strip():
        return {}
    try:
        obj = json.loads(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _read_job(reg: str, name: str, wait: float = EMPTY_RECORD_WAIT):
    """The job record; None if no such job; {} if the file stays empty (a submit
    in flight, or one that died before starting the job)."""
    deadline = time.monotonic() + wait
    while True:
        rec = _read_json(_job_path(reg, name))
        if rec is None or rec.get("job_id"):
            return rec
        if time.monotonic() >= deadline:
            return rec
        time.sleep(0.02)


def _read_exit(reg: str, name: str):
    rec = _read_json(_exit_path(reg, name))
    if rec and "exit" in rec:
        return rec
    return None


def _job_names(reg: str):
    try:
        entries = os.listdir(reg)
    except OSError:
        return []
    return sorted(e[: -len(".job")] for e in entries if e.endswith(".job") and len(e) > 4)


def _find_by_id(reg: str, job_id: str, name=None):
    """The record of job JOBID (named NAME, when given). A job id is a pid, and pids are
    reused: among several records holding it, the one submitted last is the job asked for
    (the older ones ended long ago); with NAME, only that name's record can be."""
    job_id = str(job_id).strip()
    if name is not None:
        rec = _read_job(reg, name, wait=0.0) if _valid_name(name) else None
        return (name, rec) if rec and str(rec.get("job_id")) == job_id else (None, None)
    found = (None, None)
    for name in _job_names(reg):
        rec = _read_job(reg, name, wait=0.0)
        if rec and str(rec.get("job_id")) == job_id:
            if found[1] is None or _submitted(rec) >= _submitted(found[1]):
                found = (name, rec)
    return found


def _submitted(rec) -> float:
    t = rec.get("submitted")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0


def _valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and len(name) <= MAX_NAME


# -------------------------------------------------------------------------------------
# submit
# -------------------------------------------------------------------------------------


def _close_fds_except(keep) -> None:
    keep = set(keep)
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _noop_handler(signum, frame) -> None:
    pass


def _supervise(status_w: int, reg: str, name: str, workdir: str, output: str,
               path_prepend, argv, submitted: float) -> None:
    """Runs in the detached grandchild; never returns."""
    import subprocess

    def reply(text: str) -> None:
        try:
            os.write(status_w, (text + "\n").encode("utf-8", "replace"))
        except OSError:  # submit died: the registry holds the truth
            pass

    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        _close_fds_except({status_w})
        # Handlers, not SIG_IGN: dispositions set to SIG_IGN would be inherited
        # across exec by the job, and cancel's SIGTERM must reach it.
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _noop_handler)

        env = dict(os.environ)
        if path_prepend:
            env["PATH"] = os.pathsep.join(
                [os.path.abspath(p) for p in path_prepend] + [env.get("PATH", os.defpath)]
            )
        try:
            out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            _unlink_quiet(_job_path(reg, name))
            reply("ERR cannot open output %s: %s" % (output, e.strerror))
            os._exit(1)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=out_fd,
                start_new_session=True,  # session + process group leader: pgid == pid
                close_fds=True,
            )
        except OSError as e:
            msg = "cannot start %s: %s" % (argv[0], e.strerror or e)
            try:
                os.write(out_fd, ("sc_localjob: %s\n" % msg).encode("utf-8", "replace"))
            except OSError:
                pass
            _unlink_quiet(_job_path(reg, name))
            reply("ERR " + msg)
            os._exit(1)
        os.close(out_fd)

        me = _proc_stat(os.getpid())
        st = _proc_stat(proc.pid)
        rec = {
            "job_id": str(proc.pid),
            "name": name,
            "pid": proc.pid,
            "submitted": submitted,
            "start_ticks": st[1] if st else None,
            "boot_id": _boot_id(),
            "supervisor_pid": os.getpid(),
            "supervisor_start_ticks": me[1] if me else None,
            "workdir": workdir,
            "output": output,
            "argv": list(argv),
        }
        _atomic_write_json(_job_path(reg, name), rec)
        reply("OK %d" % proc.pid)
        try:
            os.close(status_w)
        except OSError:
            pass

        rc = proc.wait()
        _atomic_write_json(_exit_path(reg, name), {"exit": rc, "ended": time.time()})
    except BaseException:
        pass
    finally:
        os._exit(0)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _print_existing(reg: str, name: str) -> int:
    rec = _read_job(reg, name)
    if rec and rec.get("job_id"):
        print(rec["job_id"])
        return 0
    if rec is None:  # vanished: a submit that failed to start the job removed it
        _err("job %s was being submitted by another process, which failed" % name)
        return EXIT_START_FAILED
    _err(
        "%s exists but holds no job record (a submit still in progress, or one that "
        "died before starting the job); remove it to submit %s again"
        % (_job_path(reg, name), name)
    )
    return EXIT_START_FAILED


def cmd_submit(a) -> int:
    name = a.name
    if not _valid_name(name):
        _err("refused job name %r: names are [A-Za-z0-9._-]+, at most %d characters"
             % (name, MAX_NAME))
        return EXIT_BAD_NAME
    argv = list(a.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _err("submit: no command given after --")
        return EXIT_USAGE
    reg = os.path.abspath(a.registry)
    os.makedirs(reg, exist_ok=True)
    path = _job_path(reg, name)
    if os.path.exists(path):
        return _print_existing(reg, name)

    workdir = os.path.abspath(a.workdir)
    output = os.path.abspath(a.output)
    if not os.path.isdir(workdir):
        _err("workdir %s is not a directory" % workdir)
        return EXIT_USAGE
    if not os.path.isdir(os.path.dirname(output)):
        _err("the directory of output file %s does not exist" % output)
        return EXIT_USAGE

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return _print_existing(reg, name)
    os.close(fd)

    submitted = time.time()
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # first child: new session, fork the supervisor, leave
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                _supervise(w, reg, name, workdir, output, a.path_prepend, argv, submitted)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)

    reply = b""
    deadline = time.monotonic() + SUBMIT_REPLY_WAIT
    import select

    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(r, 4096)
        if not chunk:
            break
        reply += chunk
        if b"\n" in reply:
            break
    os.close(r)
    line = reply.decode("utf-8", "replace").strip()
    if line.startswith("OK "):
        print(line[3:].strip())
        return 0
    if line.startswith("ERR "):
        _err("submit %s: %s" % (name, line[4:]))
        return EXIT_START_FAILED
    # no word from the supervisor: trust the registry
    rec = _read_job(reg, name)
    if rec and rec.get("job_id"):
        print(rec["job_id"])
        return 0
    _err("submit %s: the supervisor did not report a started job" % name)
    return EXIT_START_FAILED


# -------------------------------------------------------------------------------------
# status
# -------------------------------------------------------------------------------------


def job_state(reg: str, name: str, rec: dict):
    """(STATE, EXIT) of a recorded job."""
    boot = rec.get("boot_id")
    ex = _read_exit(reg, name)
    if ex is None:
        if _alive(rec.get("pid"), rec.get("start_ticks"), boot):
            return "RUNNING", ""
        ex = _read_exit(reg, name)
    if ex is None:
        # The job process is gone; a live supervisor is about to write the record.
        sup = (rec.get("supervisor_pid"), rec.get("supervisor_start_ticks"), boot)
        deadline = time.monotonic() + FINISH_WAIT
        while ex is None and _alive(*sup) and time.monotonic() < deadline:
            time.sleep(0.02)
            ex = _read_exit(reg, name)
        if ex is None:
            return ("RUNNING" if _alive(*sup) else "UNKNOWN"), ""
    code = ex.get("exit")
    return ("COMPLETED" if code == 0 else "FAILED"), str(code)


def _status_line(reg: str, name: str, rec) -> str:
    if rec is None:
        return "|%s||" % name
    if not rec.get("job_id"):
        return "|%s|UNKNOWN|" % name  # an empty record: a submit in flight or one that died
    state, code = job_state(reg, name, rec)
    return "%s|%s|%s|%s" % (rec["job_id"], name, state, code)


class _Append(argparse.Action):
    """Keep --name and --job in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, "asked", None) or []
        items.append((self.dest, values))
        namespace.asked = items


def cmd_status(a) -> int:
    reg = os.path.abspath(a.registry)
    asked = a.asked or [("name", n) for n in _job_names(reg)]
    for kind, value in asked:
        if kind == "name":
            rec = _read_job(reg, value) if _valid_name(value) else None
            print(_status_line(reg, value, rec))
        else:
            name, rec = _find_by_id(reg, value)
            if rec is None:
                print("%s|||" % value)
            else:
                print(_status_line(reg, name, rec))
        sys.stdout.flush()
    return 0


# -------------------------------------------------------------------------------------
# cancel
# -------------------------------------------------------------------------------------


def cmd_cancel(a) -> int:
    reg = os.path.abspath(a.registry)
    name, rec = _find_by_id(reg, a.jobid, a.name)
    if rec is None:
        _err("cancel: no job %s%s in %s" % (a.jobid, " named %s" % a.name if a.name else "", reg))
        return 0  # like scancel of an unknown job
    pid = int(rec["pid"])
    if not _alive(pid, rec.get("start_ticks"), rec.get("boot_id")):
        return 0  # already ended
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + max(0.0, a.grace)
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5.0
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    # let the supervisor record the end, so a status right after sees it
    sup = (rec.get("supervisor_pid"), rec.get("supervisor_start_ticks"), rec.get("boot_id"))
    deadline = time.monotonic() + FINISH_WAIT
    while _read_exit(reg, name) is None and _alive(*sup) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 0


# -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sc_localjob.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd")
    sub.required = True

    s = sub.add_parser("submit", help="start ARGV detached, once per NAME")
    s.add_argument("--registry", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--workdir", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--path-prepend", action="append", default=[])
    s.add_argument("argv", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_submit)

    t = sub.add_parser("status", help="JOBID|NAME|STATE|EXIT per job")
    t.add_argument("--registry", required=True)
    t.add_argument("--name", dest="name", action=_Append)
    t.add_argument("--job", dest="job", action=_Append)
    t.set_defaults(func=cmd_status, asked=None)

    c = sub.add_parser("cancel", help="kill a job's process group")
    c.add_argument("--registry", required=True)
    c.add_argument("--grace", type=float, default=DEFAULT_GRACE)
    c.add_argument("--name", default=None, help="the job's name: only its record is looked at")
    c.add_argument("jobid")
    c.set_defaults(func=cmd_cancel)
    return p


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
