"""Slurm: `sbatch --parsable` to submit, `scontrol show job -o` for status, `scancel` to cancel.

scontrol rather than squeue, because it also gives the job's ExitCode and RunTime; sacct
would survive MinJobAge but needs slurmdbd, which many sites do not let users rely on. A
job scontrol no longer knows ("Invalid job id specified") is UNKNOWN: poll then trusts the
job's own exit marker and summary in the run directory.

Parsers are pure and tested on text captured from Slurm 22.05 (tests/data/slurm/).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from scbundle.core.errors import CommandError
from scbundle.site.schedulers.base import JobState, JobStatus, SubmitContext

# Slurm's job states (squeue(1) "JOB STATE CODES") onto ours. Anything else stays raw + UNKNOWN.
STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "NODE_FAIL": JobState.NODE_FAIL,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "DEADLINE": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
    "PREEMPTED": JobState.PREEMPTED,
}

_UNKNOWN_JOB = re.compile(r"Invalid job id specified", re.IGNORECASE)
_FIELD = re.compile(r"(?:^|\s)([A-Za-z]+)=(\S*)")
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")


def _with_conf(ctx: SubmitContext, argv: list[str]) -> list[str]:
    """The command with the site's SLURM_CONF, when it names one (a Slurm the user runs, say);
    the job the script starts inherits it (sbatch exports the environment)."""
    return ["env", f"SLURM_CONF={ctx.slurm_conf}", *argv] if ctx.slurm_conf else argv


def parse_duration(text: str) -> int | None:
    """Slurm's [DD-]HH:MM:SS / MM:SS as seconds (None for UNLIMITED, Unknown, ...)."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not m:
        return None
    d, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def parse_exit_code(text: str) -> int | None:
    """ExitCode=E:S -> E, or 128+S when the batch script was killed by signal S."""
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None
    code, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig and not code else code


def parse_job_line(line: str) -> JobStatus | None:
    """One line of `scontrol show job -o`."""
    fields = dict(_FIELD.findall(line))
    job_id = fields.get("JobId")
    if not job_id:
        return None
    raw = fields.get("JobState", "")
    return JobStatus(
        job_id=job_id,
        name=fields.get("JobName", ""),
        state=STATES.get(raw, JobState.UNKNOWN),
        exit_code=parse_exit_code(fields.get("ExitCode", "")),
        raw=raw or "?",
        reason=fields.get("Reason", "") if fields.get("Reason", "None") != "None" else "",
        elapsed_s=parse_duration(fields.get("RunTime", "")),
    )


class SlurmScheduler:
    name = "slurm"
    job_template = "slurm/job.sh.j2"

    def submit_argv(self, ctx: SubmitContext) -> list[str]:
        # Account and partition are #SBATCH lines in the script; the job name too.
        return _with_conf(ctx, ["sbatch", "--parsable", ctx.script])

    def parse_submit(self, stdout: str) -> str:
        """`--parsable` prints "jobid" or "jobid;cluster"."""
        text = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
        job_id = text.split(";", 1)[0]
        if not _JOB_ID.match(job_id):
            raise CommandError(["sbatch", "--parsable"], 0, f"unexpected sbatch output {stdout.strip()!r}", what="submit")
        return job_id

    def status_argv(self, ctx: SubmitContext, job_ids: Sequence[str]) -> list[str]:
        if len(job_ids) != 1 or not _JOB_ID.match(job_ids[0]):
            raise ValueError(f"slurm status asks one job id at a time, got {list(job_ids)!r}")
        return _with_conf(ctx, ["scontrol", "show", "job", "-o", job_ids[0]])

    def parse_status(self, stdout: str, stderr: str, returncode: int, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        found = {s.job_id: s for s in map(parse_job_line, stdout.splitlines()) if s is not None}
        if returncode != 0 and not found:
            if _UNKNOWN_JOB.search(stderr):
                return {
                    j: JobStatus(j, "", JobState.UNKNOWN, None, raw="(forgotten)", reason=stderr.strip()[-200:])
                    for j in job_ids
                }
            raise CommandError(["scontrol", "show", "job", "-o", *job_ids], returncode, stderr, what="status")
        return {j: found[j] for j in job_ids if j in found} | {
            j: JobStatus(j, "", JobState.UNKNOWN, None, raw="(not listed)") for j in job_ids if j not in found
        }

    def cancel_argv(self, ctx: SubmitContext, job_id: str) -> list[str]:
        return _with_conf(ctx, ["scancel", job_id])
