"""sc_protocol.py: the local <-> remote protocol, written once (Python 3 standard library only).

Every remote tool that needs a name, a field, a limit or a code of the protocol imports it
from here (on the site through the verified bootstrap, remote/sc_boot.py: this file is shipped
and checked by digest like every tool), and the local side imports this same file
(scbundle.core.protocol loads it from the installation's remote/ directory), so the bundle
prepare writes is the bundle the runner reads by construction. docs/remote-protocol.md
describes the protocol in prose and points here.
"""

import json
import os

# --- The bundle: a run directory's files (prepare writes them, exec sends them, the runner reads them)
BUNDLE_JSON = "bundle.json"  # whose run it is and its policy: attempts, command_timeout, fault_map, retry_faults
PRE_CMDS = "pre.cmds"  # one shell-quoted argv a line (mkdir -p of the output directories)
COMMANDS_CMDS = "commands.cmds"  # line i: component i's command (shell-quoted argv, no shell)
POST_CMDS = "post.cmds"  # line i: component i's post command (prints its dbinfo record)
COMPONENTS_TSV = "components.tsv"  # index TAB stage_id
INPUTS_TSV = "inputs.tsv"  # index TAB n,n,... (line numbers of input-files.tsv from 0; empty: none)
INPUT_FILES_TSV = "input-files.tsv"  # written by exec: remote_path TAB size TAB sha256
# local-only (read by exec and poll on the local side, never sent to the site)
REQUIREMENTS_TSV = "requirements.tsv"  # local_path TAB remote_path TAB size (inputs.tsv's numbers)
PRODUCTS_TSV = "products.tsv"  # index TAB remote_path TAB local_path: brought back when good

#: each TSV file's columns, in order
COLUMNS = {
    COMPONENTS_TSV: ("index", "stage_id"),
    INPUTS_TSV: ("index", "inputs"),
    INPUT_FILES_TSV: ("remote_path", "size", "sha256"),
    REQUIREMENTS_TSV: ("local_path", "remote_path", "size"),
    PRODUCTS_TSV: ("index", "remote_path", "local_path"),
}
#: the bundle's files that are prepare's, one line per component of the run
PER_COMPONENT = (COMMANDS_CMDS, POST_CMDS, PRODUCTS_TSV, COMPONENTS_TSV, INPUTS_TSV)

# --- What a job leaves in its run directory
RESULTS_DIR = "results"  # rank-NNNNN.jsonl: one result record a line
LOGS_DIR = "logs"  # rank-NNNNN.log

#: a result record's fields (one JSON object a line, sorted keys)
RESULT_FIELDS = ("index", "stage_id", "rank", "host", "attempts", "exit", "phase", "start", "end", "dbinfo", "error")
# command / post: the program (or its post) exited non-zero; limit: stopped at the stage's
# command_timeout; deadline: the job's walltime ran out (stopped, or never started);
# signal: the rank was told to stop (SIGTERM: walltime or cancel); input: an input was gone
# when the component was to start
PHASES = ("command", "post", "limit", "deadline", "signal", "input")
STOPPED_PHASES = frozenset(("limit", "deadline", "signal"))


def result_record(index, stage_id, rank, host, attempts, exit, phase, start, end, dbinfo, error):
    """One component's result record, the fields in RESULT_FIELDS."""
    return {"index": index, "stage_id": stage_id, "rank": rank, "host": host, "attempts": attempts,
            "exit": exit, "phase": phase, "start": start, "end": end, "dbinfo": dbinfo, "error": error}


# --- Exit codes and the faults they mean (a stage may map its own in bundle.json's fault_map)
FAULT_NONE, FAULT_UNKNOWN, FAULT_SYSTEM, FAULT_CONFIG, FAULT_PROGRAM, FAULT_DATA, FAULT_TIMEOUT = range(7)
EXIT_TIMEOUT = 124  # a command stopped by a time limit (timeout(1)'s convention)
EXIT_INPUT = 2  # a component not started because an input is gone (the system fault: revertable)
#: exit code -> fault, when the stage names no other; a code not named is FAULT_UNKNOWN
DEFAULT_FAULT_MAP = {2: FAULT_SYSTEM, 3: FAULT_CONFIG, 4: FAULT_PROGRAM, 5: FAULT_DATA, 6: FAULT_TIMEOUT,
                     EXIT_TIMEOUT: FAULT_TIMEOUT}
#: faults worth another try (inside the job, and by an automatic revert)
DEFAULT_RETRY_FAULTS = frozenset((FAULT_SYSTEM, FAULT_TIMEOUT))

# --- Slurm's srun --multi-prog (Slurm 22.05, src/srun/libsrun/multi_prog.c, slurmstepd)
MAX_CONFIG_BYTES = 60000  # a config over 60000 bytes is refused ("is too large")
MAX_LINE_CHARS = 16381  # a line of 16382 characters or more is refused
MAX_ARGC = 128  # slurmstepd's argv slots, the terminating NULL included
MAX_WORDS = MAX_ARGC - 1  # words a task's line may carry (program included); Slurm drops the rest


# --- Writing a file so that a reader sees the old content or the new, never a part
def write_atomic(path, data, fsync=True, mode=0o644):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file beside it and a
    rename; the temporary file is removed when anything fails."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    d, base = os.path.split(path)
    tmp = os.path.join(d, ".%s.tmp.%d" % (base, os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path, obj, fsync=True, indent=None):
    """``obj`` as one JSON document (sorted keys, a final newline), written atomically."""
    write_atomic(path, json.dumps(obj, sort_keys=True, indent=indent) + "\n", fsync=fsync)
