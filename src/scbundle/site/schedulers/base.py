"""One JobState for every scheduler; each scheduler maps its own codes onto it.

A scheduler is pure: it builds argv lists and parses captured text. Only exec/poll/cancel
run them (over the link, wrapped by remote/sc_sched.py so a submission is idempotent and a
status query also reads the job's own exit marker).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scbundle.core.text import printable


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    UNKNOWN = "unknown"  # the scheduler does not know the job (finished long ago, or lost)

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    name: str
    state: JobState
    exit_code: int | None
    raw: str  # the scheduler's own word (e.g. "TIMEOUT", "Removed"), kept for the operator
    reason: str = ""  # the scheduler's reason / message, if it gives one
    elapsed_s: int | None = None  # wall seconds the job ran, if the scheduler says

    def __post_init__(self) -> None:  # the scheduler's words are the site's text: never a terminal's command
        for name in ("name", "raw", "reason"):
            object.__setattr__(self, name, printable(getattr(self, name)))


@dataclass(frozen=True)
class SubmitContext:
    job_name: str
    run_dir: str
    script: str
    tools_dir: str
    python: str
    registry: str  # where a scheduler without its own memory keeps jobs (local)
    account: str | None = None
    partition: str | None = None
    slurm_conf: str | None = None  # the site's slurm.conf (SLURM_CONF for its commands)


class Scheduler(Protocol):
    name: str
    job_template: str  # e.g. "slurm/job.sh.j2"

    def submit_argv(self, ctx: SubmitContext) -> list[str]:
        """The scheduler's own submit command for ctx.script (run with the run dir as cwd)."""
        ...

    def parse_submit(self, stdout: str) -> str:
        """The job id from the submit command's stdout; CommandError if there is none."""
        ...

    def status_argv(self, ctx: SubmitContext, job_ids: Sequence[str]) -> list[str]: ...

    def parse_status(self, stdout: str, stderr: str, returncode: int, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Status of each asked job. A job the scheduler no longer knows is JobState.UNKNOWN;
        a scheduler that cannot answer (controller down, ...) raises CommandError."""
        ...

    def cancel_argv(self, ctx: SubmitContext, job_id: str) -> list[str]: ...
