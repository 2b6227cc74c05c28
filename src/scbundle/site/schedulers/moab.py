"""Moab: `msub` to submit, `checkjob` (text) for status, `canceljob` to cancel.

Pure command builders and pure parsers of captured text; nothing here runs a process.
The parsers are tested on real Moab output kept in tests/data/moab/ (see SOURCES.md there):
Adaptive Computing's own documentation examples and output captured at Moab sites.

Why checkjob's text and not `--format=XML`: every real checkjob answer that could be found
(the documentation's example and site captures) is the text report, and Moab's source
(MUICheckJob.c) prints the lines read here with fixed formats: "job <id>", "State: <word>",
"Completion Code: <n>  Time: <date>", "WallTime:   <used> of <limit>". No real XML answer of
checkjob was found, so an XML parser could not be tested on anything but invented text.

Account and partition (class/queue) are `#MSUB -A` / `#MSUB -q` lines of the job script
(templates/moab/job.sh.j2), not msub options: the script alone says how it was submitted,
and msub reads its directives (msub(1): "-C ... Default: First known prefix (#PBS, ... #MSUB)").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scbundle.core.errors import CommandError
from scbundle.site.schedulers.base import JobState, JobStatus, SubmitContext

# Moab's job state words (MJobState[]; documented in "Job States" and showq(1)) onto ours.
# Completed, Removed and Vacated are refined by _refine (completion code, wallclock).
STATES: dict[str, JobState] = {
    "Idle": JobState.PENDING,  # queued, eligible to run
    "Blocked": JobState.PENDING,  # idle with a block reason
    "Hold": JobState.PENDING,
    "UserHold": JobState.PENDING,
    "SystemHold": JobState.PENDING,
    "BatchHold": JobState.PENDING,
    "Deferred": JobState.PENDING,  # "temporary hold ... automatically removed after a short period"
    "NotQueued": JobState.PENDING,  # showq lists it among blocked (queued) jobs: the RM's daemon is away
    "Staging": JobState.PENDING,
    "Staged": JobState.PENDING,  # "waiting for remote resource manager to start"
    "Migrated": JobState.PENDING,
    "Allocating": JobState.PENDING,
    "Starting": JobState.RUNNING,
    "Running": JobState.RUNNING,
    "Suspended": JobState.RUNNING,
    "Canceling": JobState.RUNNING,  # cancelled, still cleaning up: not finished yet
    "Completed": JobState.COMPLETED,
    "Removed": JobState.CANCELLED,
    "Vacated": JobState.NODE_FAIL,  # "canceled after partial execution due to a system failure"
    "SubmitErr": JobState.FAILED,
    "Lost": JobState.UNKNOWN,
    "Unknown": JobState.UNKNOWN,
}

# TORQUE's code for a running job that was cancelled (Adaptive KB "Explanation of Exit Codes").
CANCELLED_RUNNING_CODE = 271
# checkjob's exit status when Moab does not know the job ("ERROR:  cannot locate job '<id>'").
UNKNOWN_JOB_EXIT = 153

_JOB_ID = re.compile(r"^[A-Za-z0-9_.\[\]-]+$")
_SUBMIT_ID = re.compile(r"^(?:[A-Za-z][\w-]*\.)?\d+$")  # "123" or "Moab.123"
_UNKNOWN_JOB = re.compile(r"cannot locate job", re.IGNORECASE)
_HEADER = re.compile(r"^\s*(?:checking\s+)?job\s+(\S+)", re.MULTILINE)
_STATE = re.compile(r"^\s*State:\s*(\S+)", re.MULTILINE)
_CODE = re.compile(r"Completion Code:\s*(-?\d+)")
_WALLTIME = re.compile(r"^\s*WallTime:\s*(\S+)\s+of\s+(\S+)", re.MULTILINE)
_ANAME = re.compile(r"^\s*AName:\s*(.*?)\s*$", re.MULTILINE)
_REASON = re.compile(r"^\s*(BLOCK MSG:.*|Holds?:.*|Message\[\d+\].*|NOTE:.*|Note:.*)$", re.MULTILINE)
_WC_WORDS = re.compile(r"exceeded (?:its )?(?:wallclock|WC|walltime)(?: limit)?", re.IGNORECASE)

_BLOCK_BEGIN = "scbundle-checkjob-begin "
_BLOCK_END = "scbundle-checkjob-end "
# Several ids in one call: checkjob takes one job id, so a small loop; the ids are the
# loop's positional parameters (never part of the script text), each its own argv word.
_LOOP = (
    'for j in "$@"; do echo "' + _BLOCK_BEGIN + '$j"; checkjob "$j" 2>&1; echo "' + _BLOCK_END + '$?"; done'
)


def parse_duration(text: str) -> int | None:
    """Moab's [[[DD:]HH:]MM:]SS as seconds; None for INFINITY, '-', or anything else."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        return None
    seconds = 0
    for value, unit in zip(reversed([int(p) for p in parts]), (1, 60, 3600, 86400)):
        seconds += value * unit
    return seconds


@dataclass(frozen=True)
class CheckjobReport:
    """The fields of one checkjob text report that poll needs."""

    job_id: str
    name: str
    state_word: str
    completion_code: int | None
    used_s: int | None
    limit_s: int | None
    reason: str


def parse_checkjob(text: str) -> CheckjobReport | None:
    """One checkjob report (Moab's "job <id>" form, or Maui's "checking job <id>")."""
    state = _STATE.search(text)
    if state is None:
        return None
    header = _HEADER.search(text)
    aname = _ANAME.search(text)
    code = _CODE.search(text)
    wall = _WALLTIME.search(text)
    reasons = [r.strip() for r in _REASON.findall(text)]
    return CheckjobReport(
        job_id=header.group(1) if header else "",
        name=aname.group(1) if aname else "",
        state_word=state.group(1),
        completion_code=int(code.group(1)) if code else None,
        used_s=parse_duration(wall.group(1)) if wall else None,
        limit_s=parse_duration(wall.group(2)) if wall else None,
        reason="; ".join(reasons),
    )


def _ran_out_of_time(r: CheckjobReport) -> bool:
    if _WC_WORDS.search(r.reason):
        return True
    return r.used_s is not None and r.limit_s is not None and r.limit_s > 0 and r.used_s >= r.limit_s


def _refine(r: CheckjobReport) -> JobState:
    """Moab's word plus what checkjob says around it.

    Moab has no word for a job that hit its wallclock limit: it is "Removed" (Moab's job
    states: "has run to its requested walltime ... but has been canceled by the scheduler or
    resource manager due to exceeding its walltime"), and Moab over Slurm reports Slurm's
    TIMEOUT as Removed too. So a Removed/Vacated job, or one that Completed non-zero, whose
    WallTime reached its limit is TIMEOUT. Completed with code 271 is TORQUE's cancelled job.
    """
    base = STATES.get(r.state_word, JobState.UNKNOWN)
    if base is JobState.COMPLETED:
        if r.completion_code in (None, 0):
            return JobState.COMPLETED
        if _ran_out_of_time(r):
            return JobState.TIMEOUT
        if r.completion_code == CANCELLED_RUNNING_CODE:
            return JobState.CANCELLED
        return JobState.FAILED
    if base in (JobState.CANCELLED, JobState.NODE_FAIL) and _ran_out_of_time(r):
        return JobState.TIMEOUT
    return base


def status_from_report(job_id: str, r: CheckjobReport) -> JobStatus:
    state = _refine(r)
    reason = r.reason
    if state is JobState.TIMEOUT and not reason:
        reason = f"wallclock used {r.used_s} s of a {r.limit_s} s limit"
    return JobStatus(
        job_id=job_id,
        name=r.name,
        state=state,
        exit_code=r.completion_code,
        raw=r.state_word,
        reason=reason,
        elapsed_s=r.used_s,
    )


def _check_ids(job_ids: Sequence[str]) -> list[str]:
    ids = list(job_ids)
    if not ids:
        raise ValueError("checkjob needs at least one job id")
    for j in ids:
        if not _JOB_ID.match(j):
            raise ValueError(f"not a Moab job id: {j!r}")
    return ids


def split_blocks(stdout: str) -> dict[str, tuple[str, int]]:
    """The several-id loop's output: {job id: (checkjob's output, its exit status)}."""
    out: dict[str, tuple[str, int]] = {}
    current: str | None = None
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(_BLOCK_BEGIN):
            current, lines = line[len(_BLOCK_BEGIN) :].strip(), []
        elif line.startswith(_BLOCK_END) and current is not None:
            rc_text = line[len(_BLOCK_END) :].strip()
            out[current] = ("\n".join(lines) + "\n", int(rc_text) if rc_text.lstrip("-").isdigit() else 1)
            current = None
        elif current is not None:
            lines.append(line)
    return out


class MoabScheduler:
    name = "moab"
    job_template = "moab/job.sh.j2"

    def submit_argv(self, ctx: SubmitContext) -> list[str]:
        # -N, -l, -o, -j, -A and -q are #MSUB lines of the script (see the module note).
        return ["msub", ctx.script]

    def parse_submit(self, stdout: str) -> str:
        """msub prints a blank line, then the job id ("123" or "Moab.123")."""
        lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
        if not lines or not _SUBMIT_ID.match(lines[-1]):
            raise CommandError(["msub"], 0, f"unexpected msub output {stdout.strip()!r}", what="submit")
        return lines[-1]

    def status_argv(self, ctx: SubmitContext, job_ids: Sequence[str]) -> list[str]:
        ids = _check_ids(job_ids)
        if len(ids) == 1:
            return ["checkjob", ids[0]]
        return ["sh", "-c", _LOOP, "sh", *ids]

    def parse_status(self, stdout: str, stderr: str, returncode: int, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        ids = list(job_ids)
        if len(ids) == 1:
            return {ids[0]: self._one(ids[0], stdout, stderr, returncode)}
        if returncode != 0:
            raise CommandError(["sh", "-c", "checkjob ...", *ids], returncode, stderr or stdout, what="status")
        blocks = split_blocks(stdout)
        out: dict[str, JobStatus] = {}
        for j in ids:
            if j not in blocks:
                raise CommandError(["checkjob", j], returncode, f"no answer for job {j} in {stdout[-300:]!r}", what="status")
            text, rc = blocks[j]
            out[j] = self._one(j, text, text, rc)
        return out

    def _one(self, job_id: str, stdout: str, stderr: str, returncode: int) -> JobStatus:
        said = f"{stderr}\n{stdout}"
        if returncode == UNKNOWN_JOB_EXIT or (returncode != 0 and _UNKNOWN_JOB.search(said)):
            reason = (stderr.strip() or stdout.strip())[-200:]
            return JobStatus(job_id, "", JobState.UNKNOWN, None, raw="(cannot locate job)", reason=reason)
        if returncode != 0:
            raise CommandError(["checkjob", job_id], returncode, stderr or stdout, what="status")
        report = parse_checkjob(stdout)
        if report is None:
            raise CommandError(["checkjob", job_id], returncode, f"no State: line in {stdout.strip()[-300:]!r}", what="status")
        return status_from_report(job_id, report)

    def cancel_argv(self, ctx: SubmitContext, job_id: str) -> list[str]:
        return ["canceljob", _check_ids([job_id])[0]]
