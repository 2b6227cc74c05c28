#!/usr/bin/env python3
"""sc_task.py: one task of the `commands` stage (Python 3 standard library only).

    python3 sc_task.py run --task-id N --result FILE -- ARGV...
    cat FILE                                   (the task's post: its dbinfo record)
    python3 sc_task.py dbinfo --task-id N --result FILE

run: runs ARGV (no shell), its stdout copied through to this process's stdout (the rank's
log) and its last non-empty line kept; writes FILE (temp file + rename) with the task's
dbinfo record, one line:
{"table": "commands_result", "key": {"task_id": N}, "values": {"output": <that line as a JSON
object, or null>}}, and exits with ARGV's own exit code (killed by a signal: the same signal,
so the runner records -N). A program that cannot be started exits 127 (not found) or 126, as
a shell does. The record is whole in FILE, so the post is a plain `cat`: one Python start a
task, not two (a task file of thousands of tasks pays it thousands of times).

dbinfo: prints the record from FILE; for bundles made before run wrote whole records (FILE
then holds {"output": ...}).
"""

import argparse
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_protocol as P  # noqa: E402  (remote/sc_protocol.py: the protocol, written once)

LAST_LINE_LIMIT = 16 * 1024  # the one-line JSON result a task may print last


def _last_json(line: bytes):
    if not line or len(line) > LAST_LINE_LIMIT:
        return None
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=lambda name: None)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _write_atomic(path, obj):
    P.write_json_atomic(path, obj, fsync=False)  # read back by this task's own post, on this node


def record(task_id, output):
    return {"table": "commands_result", "key": {"task_id": task_id}, "values": {"output": output}}


def cmd_run(result, argv, task_id=None) -> int:
    if not argv:
        sys.stderr.write("sc_task.py run: no command after --\n")
        return 2
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    except FileNotFoundError as e:
        sys.stderr.write("sc_task.py: cannot run %s: %s\n" % (argv[0], e.strerror or e))
        _write_atomic(result, _result(task_id, None))
        return 127
    except OSError as e:
        sys.stderr.write("sc_task.py: cannot run %s: %s\n" % (argv[0], e.strerror or e))
        _write_atomic(result, _result(task_id, None))
        return 126
    last = b""
    out = sys.stdout.buffer
    for line in proc.stdout:
        out.write(line)
        if line.strip():
            last = line.strip() if len(line) <= LAST_LINE_LIMIT + 2 else b""
    out.flush()
    code = proc.wait()
    _write_atomic(result, _result(task_id, _last_json(last) if code == 0 else None))
    if code < 0:  # killed by a signal: die of it too, so the runner sees the same
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def _result(task_id, output):
    """What run writes: the whole record (a post of `cat`), or for an older bundle's
    `run` without --task-id the output alone."""
    return {"output": output} if task_id is None else record(task_id, output)


def cmd_dbinfo(task_id, result) -> int:
    try:
        with open(result, encoding="utf-8") as f:
            got = json.load(f)
        output = got["values"]["output"] if "values" in got else got.get("output")
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as e:
        sys.stderr.write("sc_task.py dbinfo: cannot read %s: %s\n" % (result, e))
        return 5
    print(json.dumps(record(task_id, output)))
    return 0


def main(args=None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    argv = []
    if "--" in args:
        k = args.index("--")
        args, argv = args[:k], args[k + 1:]
    p = argparse.ArgumentParser(prog="sc_task.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--result", required=True)
    r.add_argument("--task-id", type=int)
    d = sub.add_parser("dbinfo")
    d.add_argument("--task-id", type=int, required=True)
    d.add_argument("--result", required=True)
    a = p.parse_args(args)
    if a.cmd == "run":
        return cmd_run(a.result, argv, a.task_id)
    return cmd_dbinfo(a.task_id, a.result)


if __name__ == "__main__":
    sys.exit(main())
