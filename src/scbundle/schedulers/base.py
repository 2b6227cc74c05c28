"""One JobState for every scheduler; each scheduler maps its own codes onto it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
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
    raw: str  # the scheduler's own word, kept for the operator


@dataclass(frozen=True)
class SubmitContext:
    job_name: str
    run_dir: str
    script: str
    tools_dir: str
    python: str
    registry: str  # where a scheduler without its own memory keeps jobs (local)


class Scheduler(Protocol):
    name: str
    job_template: str

    def submit_argv(self, ctx: SubmitContext) -> list[str]: ...

    def parse_submit(self, stdout: str) -> str: ...

    def status_argv(self, ctx: SubmitContext, job_ids: Sequence[str]) -> list[str]: ...

    def parse_status(self, stdout: str) -> list[JobStatus]: ...

    def cancel_argv(self, ctx: SubmitContext, job_id: str) -> list[str]: ...
