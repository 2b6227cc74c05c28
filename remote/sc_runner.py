#!/usr/bin/env python3
"""Run a bundle's commands on the remote side (Python 3 standard library only).

    python3 sc_runner.py pre RUN
    python3 sc_runner.py run RUN --rank R --offset K --ids SPEC
    python3 sc_runner.py summarize RUN

See docs/remote-protocol.md ("sc_runner.py") for the contract. Commands are never run
through a shell: each line of a .cmds file is split with shlex.split and run as an argv,
with stdin from /dev/null and the run directory as working directory.
"""

import argparse
import json
import os
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_protocol as P  # noqa: E402  (the protocol's names, fields, codes: remote/sc_protocol.py)

# How much of a failing program's stderr is kept in a record (bytes, from the end).
TAIL_BYTES = 2000
# A post command's stdout is one small JSON object; more than this is not read.
POST_STDOUT_LIMIT = 16 * 1024 * 1024
# Largest number of indices one SPEC may name (guards against "0-999999999999").
MAX_SPEC_INDICES = 10_000_000
# Exit codes recorded when a command cannot be started at all (as a POSIX shell does).
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_BAD_LINE = 2

# Default tries of a failing command inside one job (bundle.json "attempts" overrides).
DEFAULT_ATTEMPTS = 2
# Seconds kept free before the job's deadline: no component starts inside this margin.
DEADLINE_MARGIN = 20
# After SIGTERM to a command's process group, SIGKILL follows this many seconds later.
KILL_GRACE = 5
# Exit codes recorded for a command stopped by a time limit, and for a component not started
# because an input is gone (the system fault: revertable, exec pushes the file again).
EXIT_TIMEOUT, EXIT_INPUT = P.EXIT_TIMEOUT, P.EXIT_INPUT

_NUM = re.compile(r"[0-9]+\Z")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)\Z")


class RunDirError(Exception):
    """The run directory cannot be used at all (exit 2)."""


class Terminated(Exception):
    """The rank was told to stop (SIGTERM from the scheduler: walltime, scancel)."""


# SIGTERM handling: while a command runs, the handler raises Terminated at once (the command
# is then stopped and recorded); elsewhere it only sets the flag, checked between components,
# so a record line is never cut in half.
_STOP = {"requested": False, "armed": False}


def _on_term(signum, frame):
    _STOP["requested"] = True
    if _STOP["armed"]:
        _STOP["armed"] = False
        raise Terminated()


# ---------------------------------------------------------------------------------------
# Pure helpers


def parse_ids(spec: str) -> "list[int]":
    """Parse a SPEC such as ``"0,5-9,12"`` into indices, in order.

    Items are non-negative decimal integers or inclusive ranges ``a-b`` with ``a <= b``,
    separated by commas; blanks around an item are allowed. Empty items, signs, reversed
    ranges, duplicates and an empty SPEC raise ValueError.
    """
    if not isinstance(spec, str):
        raise ValueError("SPEC must be a string")
    if not spec.strip():
        raise ValueError("empty SPEC")
    out = []
    seen = set()
    for raw in spec.split(","):
        item = raw.strip()
        m = _RANGE.match(item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError("reversed range %r in SPEC" % item)
            if hi - lo + 1 + len(out) > MAX_SPEC_INDICES:
                raise ValueError("SPEC names more than %d indices" % MAX_SPEC_INDICES)
            values = range(lo, hi + 1)
        elif _NUM.match(item):
            values = (int(item),)
        else:
            raise ValueError("bad item %r in SPEC %r" % (item, spec))
        for v in values:
            if v in seen:
                raise ValueError("index %d appears twice in SPEC" % v)
            seen.add(v)
            out.append(v)
        if len(out) > MAX_SPEC_INDICES:
            raise ValueError("SPEC names more than %d indices" % MAX_SPEC_INDICES)
    return out


def split_lines(text: str) -> "list[str]":
    """Split a .cmds file into lines on '\\n' only.

    str.splitlines() would also split on '\\r', '\\x0b', '\\x1c', '\\u2028', ... which may
    legitimately appear inside a quoted argument.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def mkdir_dirs(argv: "list[str]"):
    """The directories of a line that is exactly ``mkdir -p DIR...``, else None.

    Lines with any other option (or a directory name starting with '-') go to the real
    mkdir, so the in-process fast path never changes a line's meaning.
    """
    if len(argv) < 3 or argv[0] != "mkdir" or argv[1] != "-p":
        return None
    dirs = argv[2:]
    if any(d == "" or d.startswith("-") for d in dirs):
        return None
    return dirs


def median(values):
    s = sorted(values)
    n = len(s)
    if n == 0:
        return None
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def _reject_constant(name):
    raise ValueError("non-standard JSON constant %s" % name)


def parse_dbinfo(data: bytes) -> dict:
    """A post command's stdout as exactly one JSON object (ValueError otherwise)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError("post stdout is not UTF-8: %s" % e)
    if not text.strip():
        raise ValueError("post stdout is empty, expected one JSON object")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as e:
        raise ValueError("post stdout is not one JSON object: %s" % e)
    except RecursionError:
        raise ValueError("post stdout is JSON nested too deep")
    if not isinstance(obj, dict):
        raise ValueError("post stdout is JSON %s, not an object" % type(obj).__name__)
    return obj


# ---------------------------------------------------------------------------------------
# Files of the run directory


def _read_text(path: str) -> str:
    with open(path, "r", encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read()


def check_run_dir(run: str) -> None:
    if not os.path.isdir(run):
        raise RunDirError("run directory %s does not exist or is not a directory" % run)


def load_cmds(run: str, name: str) -> "list[str]":
    path = os.path.join(run, name)
    try:
        return split_lines(_read_text(path))
    except OSError as e:
        raise RunDirError("cannot read %s: %s" % (path, e.strerror or e))


def load_bundle(run: str) -> dict:
    path = os.path.join(run, P.BUNDLE_JSON)
    try:
        data = json.loads(_read_text(path))
    except OSError as e:
        raise RunDirError("cannot read %s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise RunDirError("%s is not valid JSON: %s" % (path, e))
    if not isinstance(data, dict):
        raise RunDirError("%s does not hold a JSON object" % path)
    n = data.get("n_components")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise RunDirError("%s: n_components must be a non-negative integer" % path)
    return data


IDENTITY = ("installation", "remote_id", "attempt", "job_name")


def run_identity(bundle) -> dict:
    """Whose run this job is (bundle.json's installation, remote_id, attempt, job_name): the
    job's pre.json and summary.json carry it, so poll knows the job is its own."""
    bundle = bundle if isinstance(bundle, dict) else {}
    return {k: bundle.get(k) for k in IDENTITY}


def _bundle_or_empty(run: str) -> dict:
    try:
        data = json.loads(_read_text(os.path.join(run, P.BUNDLE_JSON)))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_stage_ids(run: str) -> dict:
    """components.tsv as {index: stage_id}; stage_id is an int when it is decimal."""
    path = os.path.join(run, P.COMPONENTS_TSV)
    out = {}
    try:
        text = _read_text(path)
    except OSError as e:
        raise RunDirError("cannot read %s: %s" % (path, e.strerror or e))
    for lineno, line in enumerate(split_lines(text)):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t", 1)
        if len(parts) != 2 or not _NUM.match(parts[0]):
            raise RunDirError("%s line %d: expected 'index<TAB>stage_id'" % (path, lineno + 1))
        sid = parts[1]
        out[int(parts[0])] = int(sid) if _NUM.match(sid) else sid
    return out


class Inputs:
    """Each component's inputs: inputs.tsv (prepare; line i: ``i<TAB>n,n,...``) names lines
    of input-files.tsv (exec; line n: ``remote_path<TAB>size<TAB>sha256``, what exec checked
    and pushed). Lines are parsed only for the components this rank runs."""

    def __init__(self, components, files):
        self.components = components
        self.files = files

    @classmethod
    def load(cls, run: str):
        """None when the bundle lists no inputs (one prepared by an older scbundle)."""
        paths = [os.path.join(run, n) for n in (P.INPUTS_TSV, P.INPUT_FILES_TSV)]
        if not all(os.path.exists(p) for p in paths):
            return None
        try:
            return cls(*(split_lines(_read_text(p)) for p in paths))
        except OSError as e:
            raise RunDirError("cannot read the inputs of %s: %s" % (run, e.strerror or e))

    def of(self, i: int) -> "list[tuple[str, int]]":
        """(remote path, size) of component i's inputs; ValueError when the lines are bad."""
        if i >= len(self.components):
            raise ValueError("inputs.tsv has no line %d" % i)
        index, sep, refs = self.components[i].partition("\t")
        if not sep or index != str(i):
            raise ValueError("inputs.tsv line %d is not '%d<TAB>n,n,...'" % (i + 1, i))
        out = []
        for ref in refs.split(",") if refs else ():
            n = int(ref)
            if not 0 <= n < len(self.files):
                raise ValueError("inputs.tsv line %d names input %d, input-files.tsv has %d"
                                 % (i + 1, n, len(self.files)))
            path, size, _ = self.files[n].rsplit("\t", 2)
            out.append((path, int(size)))
        return out


def input_problem(inputs) -> "str | None":
    """Why a component cannot start (an input gone or of another size), or None. A stat a
    file: the content was checked by exec; this catches a purge or a delete since."""
    for path, size in inputs:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "input %s is missing on the site" % path
        except OSError as e:
            return "input %s cannot be checked: %s" % (path, e.strerror or e)
        if not stat.S_ISREG(st.st_mode):
            return "input %s is not a regular file" % path
        if st.st_size != size:
            return "input %s has %d bytes on the site, %d were pushed" % (path, st.st_size, size)
    return None


def write_json_atomic(path: str, obj) -> None:
    P.write_json_atomic(path, obj, indent=1)


# ---------------------------------------------------------------------------------------
# Running one argv


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def _tail(f) -> str:
    """The last TAIL_BYTES of an open binary temp file, decoded."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - TAIL_BYTES))
    data = f.read()
    return data.decode("utf-8", "replace").strip()


def _copy_to_log(src, log) -> None:
    src.seek(0)
    last = b"\n"
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            break
        log.write(chunk)
        last = chunk[-1:]
    if last != b"\n":
        log.write(b"\n")


def wait_for(proc, timeout):
    """proc's exit code, raising subprocess.TimeoutExpired after ``timeout`` seconds.

    Popen.wait(timeout) polls with sleeps of up to 50 ms, which added ~25 ms to every
    command; a pidfd (Linux 5.3+, Python 3.9+) wakes at the exit itself. Elsewhere, the poll.
    """
    if timeout is None:
        return proc.wait()
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout=timeout)
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()


def _stop_group(proc) -> None:
    """SIGTERM the command's process group, SIGKILL it after KILL_GRACE seconds."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_argv(argv, log, cwd, header, capture_stdout=False, limit=None):
    """Run argv (no shell), appending its output to the binary log file `log`.

    Returns (exit_code, stdout_bytes_or_None, stderr_tail, stopped). stdout goes straight to
    the log unless capture_stdout (then it is read back, up to POST_STDOUT_LIMIT, and also
    copied to the log). stderr is kept apart so a failure carries its own tail, then
    appended to the log after the program ends. The command runs in its own process group;
    past ``limit`` seconds the group is stopped and the result is (EXIT_TIMEOUT, ..., "limit").
    A SIGTERM to this process stops the group too and raises Terminated after logging.
    """
    log.write(("=== %s %s\n" % (_stamp(), header)).encode("utf-8", "surrogateescape"))
    log.flush()
    t0 = time.time()
    out_data = None
    stopped = None
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        tail = None
        proc = None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out if capture_stdout else log,
                stderr=err,
                cwd=cwd,
                start_new_session=True,
            )
            _STOP["armed"] = True
            if _STOP["requested"]:
                _STOP["armed"] = False
                raise Terminated()
            try:
                code = wait_for(proc, limit)
            except subprocess.TimeoutExpired:
                _STOP["armed"] = False
                _stop_group(proc)
                code, stopped = EXIT_TIMEOUT, "limit"
                tail = "stopped after its time limit of %.0f s" % limit
            _STOP["armed"] = False
        except Terminated:
            _STOP["armed"] = False
            if proc is not None:
                _stop_group(proc)
            log.write(("=== terminated by SIGTERM after %.3fs\n" % (time.time() - t0)).encode())
            log.flush()
            raise
        except FileNotFoundError as e:
            code, tail = EXIT_NOT_FOUND, "cannot run %s: %s" % (argv[0], e.strerror or e)
        except PermissionError as e:
            code, tail = EXIT_CANNOT_EXECUTE, "cannot run %s: %s" % (argv[0], e.strerror or e)
        except (OSError, ValueError) as e:  # ValueError: embedded NUL byte
            code, tail = EXIT_CANNOT_EXECUTE, "cannot run %s: %s" % (argv[0], e)
        if capture_stdout:
            out.seek(0)
            out_data = out.read(POST_STDOUT_LIMIT + 1)
            _copy_to_log(out, log)
        if os.fstat(err.fileno()).st_size:
            log.write(b"--- stderr ---\n")
            _copy_to_log(err, log)
            if tail is None:
                tail = _tail(err)
        elif tail:  # the program could not be started, or was stopped
            log.write(("--- %s\n" % tail).encode("utf-8", "surrogateescape"))
    log.write(("=== exit %d after %.3fs\n" % (code, time.time() - t0)).encode())
    log.flush()
    return code, out_data, (tail or ""), stopped


def run_line(line, log, cwd, header, capture_stdout=False, limit=None):
    """Split one .cmds line and run it; a line that does not split is exit 2."""
    try:
        argv = shlex.split(line)
    except ValueError as e:
        msg = "cannot split command line: %s" % e
        log.write(("=== %s %s\n--- %s\n" % (_stamp(), header, msg)).encode(
            "utf-8", "surrogateescape"))
        log.flush()
        return EXIT_BAD_LINE, None, msg, None
    if not argv:
        msg = "empty command line"
        log.write(("=== %s %s\n--- %s\n" % (_stamp(), header, msg)).encode())
        log.flush()
        return EXIT_BAD_LINE, None, msg, None
    return run_argv(argv, log, cwd, header + ": " + line, capture_stdout, limit)


# ---------------------------------------------------------------------------------------
# Subcommands


def cmd_pre(args) -> int:
    run = os.path.abspath(args.run)
    check_run_dir(run)
    lines = load_cmds(run, P.PRE_CMDS)
    results = os.path.join(run, P.RESULTS_DIR)
    logs = os.path.join(run, P.LOGS_DIR)
    try:
        os.makedirs(results, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
    except OSError as e:
        raise RunDirError("cannot create results/logs in %s: %s" % (run, e))
    t0 = time.time()
    failed = []
    n = 0
    with open(os.path.join(logs, "pre.log"), "ab") as log:
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            n += 1
            try:
                argv = shlex.split(line)
            except ValueError:
                argv = None
            dirs = mkdir_dirs(argv) if argv else None
            if dirs is not None:
                errors = []
                for d in dirs:
                    try:
                        os.makedirs(os.path.join(run, d), exist_ok=True)
                    except OSError as e:
                        errors.append("mkdir: cannot create directory %r: %s"
                                      % (d, e.strerror or e))
                if errors:
                    text = "\n".join(errors)
                    log.write(("=== %s pre line %d: %s\n%s\n=== exit 1\n"
                               % (_stamp(), i, line, text)).encode("utf-8", "surrogateescape"))
                    failed.append({"line": i, "exit": 1, "stderr": text[-TAIL_BYTES:]})
                continue
            code, _, tail, _ = run_line(line, log, run, "pre line %d" % i)
            if code != 0:
                failed.append({"line": i, "exit": code, "stderr": tail})
        log.flush()
    summary = {"n": n, "failed": failed, "seconds": round(time.time() - t0, 6)}
    summary.update(run_identity(_bundle_or_empty(run)))
    try:
        write_json_atomic(os.path.join(results, "pre.json"), summary)
    except OSError as e:
        raise RunDirError("cannot write %s: %s" % (os.path.join(results, "pre.json"), e))
    return 0


def run_policy(bundle: dict, environ=None) -> dict:
    """How a rank runs its components: tries per command, a per-command limit, a deadline.

    attempts (bundle.json "attempts", default 2): tries of a failing command inside the job.
    limit (bundle.json "command_timeout", seconds or null): a command running longer is
    stopped and recorded with exit 124 and phase "limit" (not retried).
    deadline (environment SCB_DEADLINE, epoch seconds, exported by the job script from the
    job's walltime): no component starts within DEADLINE_MARGIN seconds of it, and a running
    command is stopped at that point; both are recorded with phase "deadline".
    """
    env = os.environ if environ is None else environ
    attempts = bundle.get("attempts", DEFAULT_ATTEMPTS)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise RunDirError("bundle.json: attempts must be a positive integer")
    limit = bundle.get("command_timeout")
    if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
        raise RunDirError("bundle.json: command_timeout must be a positive number or null")
    fault_map = bundle.get("fault_map")  # absent (an older bundle): every failure is tried again
    if fault_map is not None:
        if not isinstance(fault_map, dict) or not all(
                isinstance(k, str) and re.fullmatch(r"-?[0-9]{1,4}", k) and _is_int(v) for k, v in fault_map.items()):
            raise RunDirError("bundle.json: fault_map must map exit codes to fault codes")
        fault_map = {int(k): v for k, v in fault_map.items()}
    retry_faults = bundle.get("retry_faults", [])
    if not isinstance(retry_faults, list) or not all(_is_int(f) for f in retry_faults):
        raise RunDirError("bundle.json: retry_faults must be a list of fault codes")
    deadline = None
    raw = env.get("SCB_DEADLINE", "")
    if raw:
        try:
            deadline = float(raw)
        except ValueError:
            raise RunDirError("SCB_DEADLINE=%r is not a number" % raw)
    return {"attempts": attempts, "limit": limit, "deadline": deadline,
            "fault_map": fault_map, "retry_faults": frozenset(retry_faults)}


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def cmd_run(args) -> int:
    run = os.path.abspath(args.run)
    if args.rank < 0 or args.offset < 0:
        raise RunDirError("--rank and --offset must be non-negative")
    grank = args.offset + args.rank
    check_run_dir(run)
    signal.signal(signal.SIGTERM, _on_term)
    results = os.path.join(run, P.RESULTS_DIR)
    logs = os.path.join(run, P.LOGS_DIR)
    try:
        os.makedirs(results, exist_ok=True)
        os.makedirs(logs, exist_ok=True)
        # Truncated first thing: a re-run job never duplicates (or keeps stale) records.
        res = open(os.path.join(results, "rank-%05d.jsonl" % grank), "w", encoding="utf-8")
    except OSError as e:
        raise RunDirError("cannot open the results of rank %d in %s: %s" % (grank, run, e))
    with res:
        try:
            ids = parse_ids(args.ids)
        except ValueError as e:
            raise RunDirError("bad --ids: %s" % e)
        policy = run_policy(load_bundle(run))
        commands = load_cmds(run, P.COMMANDS_CMDS)
        posts = load_cmds(run, P.POST_CMDS)
        stage_ids = load_stage_ids(run)
        inputs = Inputs.load(run)
        bad = [i for i in ids if i >= len(commands)]
        if bad:
            raise RunDirError("--ids names component %d but commands.cmds has %d lines"
                              % (bad[0], len(commands)))
        host = socket.gethostname()
        try:
            log = open(os.path.join(logs, "rank-%05d.log" % grank), "ab")
        except OSError as e:
            raise RunDirError("cannot open the log of rank %d: %s" % (grank, e))
        with log:
            stop = None  # why the rest of the list is not started: "deadline" or "signal"
            for i in ids:
                if stop is None and _STOP["requested"]:
                    stop = _why_terminated(policy)
                if stop is None and policy["deadline"] is not None \
                        and time.time() >= policy["deadline"] - DEADLINE_MARGIN:
                    stop = "deadline"
                why = None if stop is not None or inputs is None else _inputs_problem(inputs, i)
                if stop is not None:
                    rec = unstarted(i, stage_ids.get(i), grank, host, stop)
                elif why is not None:
                    rec = input_missing(i, stage_ids.get(i), grank, host, why)
                else:
                    rec = run_component(run, i, commands[i], posts[i] if i < len(posts) else "",
                                        stage_ids.get(i), grank, host, log, policy)
                    if rec["phase"] in ("signal", "deadline"):
                        stop = rec["phase"]
                res.write(json.dumps(rec, sort_keys=True) + "\n")
                res.flush()
    return 0


def _why_terminated(policy) -> str:
    """A SIGTERM near the job's deadline is the walltime ("deadline"); earlier, a cancel or a
    preemption ("signal")."""
    deadline = policy.get("deadline")
    if deadline is not None and time.time() >= deadline - DEADLINE_MARGIN:
        return "deadline"
    return "signal"


def _inputs_problem(inputs, i):
    try:
        return input_problem(inputs.of(i))
    except ValueError as e:
        return "bad input list: %s" % e


def input_missing(i, stage_id, grank, host, why) -> dict:
    now = time.time()
    return P.result_record(i, stage_id, grank, host, 0, EXIT_INPUT, "input", now, now, None, "not started: %s" % why)


def unstarted(i, stage_id, grank, host, why) -> dict:
    now = time.time()
    return P.result_record(i, stage_id, grank, host, 0, EXIT_TIMEOUT, why, now, now, None, "not started: %s" % (
        "the job's walltime ran out" if why == "deadline" else "the job was told to stop (SIGTERM)"))


def _limit_now(policy):
    """Seconds the next command may run: the per-command limit, capped by the deadline."""
    limit = policy["limit"]
    if policy["deadline"] is not None:
        left = max(1.0, policy["deadline"] - DEADLINE_MARGIN / 2 - time.time())
        if limit is None or left < limit:
            return left, "deadline"
    return limit, "limit"


def retried(policy, code) -> bool:
    """Whether a command that exited ``code`` is tried again: its fault (bundle.json's
    fault_map, the stage's; 1 for a code it does not name) is one of retry_faults. A bundle
    without a fault_map (older scbundle) tries every failure again."""
    fault_map = policy.get("fault_map")
    if fault_map is None:
        return True
    return fault_map.get(code, P.FAULT_UNKNOWN) in policy.get("retry_faults", ())


def run_component(run, i, command, post, stage_id, grank, host, log, policy=None) -> dict:
    policy = policy or {"attempts": DEFAULT_ATTEMPTS, "limit": None, "deadline": None,
                        "fault_map": None, "retry_faults": frozenset()}
    start = time.time()
    attempts = 0
    code, error = 0, None
    phase = "command"
    try:
        for attempt in range(1, policy["attempts"] + 1):
            attempts = attempt
            limit, why = _limit_now(policy)
            code, _, tail, stopped = run_line(command, log, run, "index %d stage_id %s attempt %d command"
                                              % (i, stage_id, attempt), limit=limit)
            if code == 0:
                break
            error = tail or ("exit code %d" % code)
            if stopped:  # a command that ran out of time is not tried again
                phase = why
                break
            if not retried(policy, code):  # the stage's fault for this code is not worth a retry
                break
        dbinfo = None
        if code == 0:
            error = None
            if post.strip():
                limit, why = _limit_now(policy)
                pcode, out, tail, stopped = run_line(post, log, run, "index %d stage_id %s post"
                                                     % (i, stage_id), capture_stdout=True, limit=limit)
                if stopped:
                    code, error, phase = pcode, tail, why
                elif pcode != 0:
                    code, error, phase = pcode, tail or ("post exit code %d" % pcode), "post"
                elif out is not None and len(out) > POST_STDOUT_LIMIT:
                    code, error, phase = 1, "post stdout is larger than %d bytes" % POST_STDOUT_LIMIT, "post"
                else:
                    try:
                        dbinfo = parse_dbinfo(out or b"")
                    except ValueError as e:
                        code, error, phase = 1, str(e), "post"
                        log.write(("--- %s\n" % e).encode("utf-8", "replace"))
                        log.flush()
    except Terminated:
        phase = _why_terminated(policy)
        code, error, dbinfo = EXIT_TIMEOUT, "stopped by SIGTERM (%s)" % (
            "the job's walltime ran out" if phase == "deadline" else "cancelled or preempted"), None
    return P.result_record(i, stage_id, grank, host, attempts, code, phase, start, time.time(), dbinfo, error)


def _read_records(results_dir):
    """Every well-formed record of results/rank-*.jsonl, and the number of rank files."""
    try:
        names = sorted(n for n in os.listdir(results_dir)
                       if re.match(r"rank-[0-9]+\.jsonl\Z", n))
    except FileNotFoundError:
        return [], 0
    records = []
    for name in names:
        try:
            text = _read_text(os.path.join(results_dir, name))
        except OSError:
            continue
        for line in split_lines(text):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # e.g. a last line cut short by a node failure
            if isinstance(rec, dict):
                records.append(rec)
    return records, len(names)


def _env_float(name):
    try:
        return float(os.environ[name])
    except (KeyError, ValueError):
        return None


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def summarize(run: str) -> dict:
    bundle = load_bundle(run)
    n = bundle["n_components"]
    records, nranks = _read_records(os.path.join(run, P.RESULTS_DIR))
    best = {}
    for rec in records:
        i = rec.get("index")
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            continue
        good = rec.get("exit") == 0
        prev = best.get(i)
        # A good record wins over a failed one; otherwise the later record wins.
        if prev is None or good or prev.get("exit") != 0:
            best[i] = rec
    n_good = sum(1 for r in best.values() if r.get("exit") == 0)
    starts = [r["start"] for r in best.values() if _num(r.get("start"))]
    ends = [r["end"] for r in best.values() if _num(r.get("end"))]
    secs = [r["end"] - r["start"] for r in best.values()
            if _num(r.get("start")) and _num(r.get("end"))]
    return {
        **run_identity(bundle),
        "n_components": n,
        "n_good": n_good,
        "n_failed": len(best) - n_good,
        "n_missing": n - len(best),
        "missing": [i for i in range(n) if i not in best],
        "failed": sorted(i for i, r in best.items() if r.get("exit") != 0),
        "started": min(starts) if starts else None,
        "ended": max(ends) if ends else None,
        "ranks": nranks,
        "command_seconds": {
            "mean": (sum(secs) / len(secs)) if secs else None,
            "median": median(secs),
            "max": max(secs) if secs else None,
        },
        # each component's measured seconds (index -> seconds), and their sum: the busy time
        "component_seconds": {str(i): round(r["end"] - r["start"], 3) for i, r in sorted(best.items())
                              if _num(r.get("start")) and _num(r.get("end"))},
        "busy_seconds": round(sum(secs), 3),
        "stopped": sorted(i for i, r in best.items() if r.get("phase") in ("deadline", "signal", "limit")),
        "job_start": _env_float("SCB_JOB_START"),
        "job_end": time.time(),
    }


def cmd_summarize(args) -> int:
    run = os.path.abspath(args.run)
    check_run_dir(run)
    summary = summarize(run)
    try:
        write_json_atomic(os.path.join(run, "summary.json"), summary)
    except OSError as e:
        raise RunDirError("cannot write %s: %s" % (os.path.join(run, "summary.json"), e))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sc_runner.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", metavar="{pre,run,summarize}")
    sub.required = True
    sp = sub.add_parser("pre", help="run pre.cmds (mkdir -p lines in-process)")
    sp.add_argument("run", metavar="RUN")
    sp.set_defaults(func=cmd_pre)
    sp = sub.add_parser("run", help="run the components SPEC as global rank K+R")
    sp.add_argument("run", metavar="RUN")
    sp.add_argument("--rank", type=int, required=True, metavar="R")
    sp.add_argument("--offset", type=int, required=True, metavar="K")
    sp.add_argument("--ids", required=True, metavar="SPEC")
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("summarize", help="write summary.json from the results")
    sp.add_argument("run", metavar="RUN")
    sp.set_defaults(func=cmd_summarize)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunDirError as e:
        sys.stderr.write("sc_runner.py %s: %s\n" % (args.cmd, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
