#!/usr/bin/env python3
"""sc_sched.py: the remote half of talking to a scheduler (Python 3 standard library only).

    python3 sc_sched.py submit RUN -- ARGV...
    python3 sc_sched.py status RUN [-- ARGV...]

The local side builds the scheduler's own commands (sbatch, msub, squeue, checkjob, ...)
and parses their text; this tool only runs them next to the run directory and adds what
only the remote side knows.

submit: runs ARGV (the scheduler's submit command) with RUN as working directory, at most
once per run directory. Under an exclusive lock on RUN/.submit.lock it looks for
RUN/job.submitted; if present, the job was already submitted (say by an exec that was
killed before it recorded the job id) and its recorded stdout is printed again without
submitting. Otherwise ARGV runs with SIGHUP, SIGINT and SIGPIPE ignored (a dropped link
must not cut the window between the scheduler accepting the job and the record being
written) and, when it exits 0, its stdout is written to RUN/job.submitted (temp file +
rename) before anything is printed.

Prints one JSON object on stdout:
    {"rc": N, "stdout": "...", "stderr": "...", "reused": true|false}
and exits 0, whatever the scheduler said: the local side reads rc and the scheduler's own
message. Exit 2 for a usage error or an unusable RUN.

status: prints {"exit_marker": "<RUN/job.exit content>" or null, "exit_marker_age": seconds
since it was written or null, "summary": true|false, "owner": whose job ran in RUN or null,
"rc": N, "stdout": "...", "stderr": "..."} where rc/stdout/stderr are those of ARGV (the
scheduler's status command, run with a 60 s limit; rc null when no ARGV is given). The
job's own exit marker is the first truth about a job; the scheduler's word is second
(squeue forgets finished jobs after MinJobAge). "owner" is {"installation", "remote_id",
"attempt", "job_name"} as the last job that ran in RUN wrote them (results/pre.json at its
start, else summary.json), null when neither holds a JSON object: poll takes no results from
a run directory whose owner is another run's.
"""

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_protocol as P  # noqa: E402  (remote/sc_protocol.py: the protocol, written once)

STDERR_KEEP = 8000
STATUS_TIMEOUT = 60


def _write_atomic(path, text):
    P.write_atomic(path, text)


def _run(argv, cwd, timeout=None):
    try:
        p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    except FileNotFoundError as e:
        return 127, "", "cannot run %s: %s" % (argv[0], e.strerror or e)
    except subprocess.TimeoutExpired:
        return 124, "", "%s did not answer within %d s" % (argv[0], timeout)
    except OSError as e:
        return 126, "", "cannot run %s: %s" % (argv[0], e)


def _reply(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


def cmd_submit(run, argv):
    if not argv:
        raise SystemExit("sc_sched.py submit: no submit command given after --")
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    with open(os.path.join(run, ".submit.lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        record = os.path.join(run, "job.submitted")
        try:
            with open(record, encoding="utf-8") as f:
                return _reply({"rc": 0, "stdout": f.read(), "stderr": "", "reused": True})
        except FileNotFoundError:
            pass
        rc, out, err = _run(argv, run)
        if rc == 0:
            _write_atomic(record, out)
        return _reply({"rc": rc, "stdout": out, "stderr": err[-STDERR_KEEP:], "reused": False})


OWNER_FIELDS = ("installation", "remote_id", "attempt", "job_name")
OWNER_READ_LIMIT = 1 << 20  # pre.json is small; a summary.json this large is read no further


def _owner(run):
    for rel in ("results/pre.json", "summary.json"):
        try:
            with open(os.path.join(run, rel), "rb") as f:
                doc = json.loads(f.read(OWNER_READ_LIMIT + 1)[:OWNER_READ_LIMIT])
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            return {k: doc.get(k) for k in OWNER_FIELDS}
    return None


def cmd_status(run, argv):
    age = None
    try:
        with open(os.path.join(run, "job.exit"), encoding="utf-8") as f:
            marker = f.read().strip()
            age = max(0.0, time.time() - os.fstat(f.fileno()).st_mtime)
    except OSError:
        marker = None
    reply = {"exit_marker": marker, "exit_marker_age": age,
             "summary": os.path.isfile(os.path.join(run, "summary.json")),
             "owner": _owner(run),
             "rc": None, "stdout": "", "stderr": ""}
    if argv:
        rc, out, err = _run(argv, run, timeout=STATUS_TIMEOUT)
        reply.update(rc=rc, stdout=out, stderr=err[-STDERR_KEEP:])
    return _reply(reply)


def main(args=None):
    args = list(sys.argv[1:] if args is None else args)
    argv = []
    if "--" in args:
        k = args.index("--")
        args, argv = args[:k], args[k + 1:]
    p = argparse.ArgumentParser(prog="sc_sched.py", description=__doc__.split("\n")[0])
    p.add_argument("cmd", choices=["submit", "status"])
    p.add_argument("run", metavar="RUN")
    a = p.parse_args(args)
    run = os.path.abspath(a.run)
    if not os.path.isdir(run):
        sys.stderr.write("sc_sched.py %s: run directory %s does not exist\n" % (a.cmd, run))
        return 2
    return cmd_submit(run, argv) if a.cmd == "submit" else cmd_status(run, argv)


if __name__ == "__main__":
    sys.exit(main())
