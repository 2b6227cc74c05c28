"""The one place that runs a scheduler's commands: over the link, through remote/sc_sched.py.

submit is idempotent per run directory (sc_sched keeps the scheduler's answer in
RUN/job.submitted under a lock), and a status query reads the job's own exit marker in the
same invocation as the scheduler's answer, so poll trusts the job first and the scheduler
second, at one link call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from scbundle.core.errors import CommandError
from scbundle.core.states import Fault
from scbundle.site.layout import tool_argv
from scbundle.site.link import Transport
from scbundle.site.schedulers.base import JobState, JobStatus, Scheduler, SubmitContext


class SubmitRefused(CommandError):
    """The scheduler refused the job (bad account, partition, limits): its own message."""

    fault = Fault.CONFIG


@dataclass(frozen=True)
class Submitted:
    job_id: str
    reused: bool  # the run directory already held a submitted job: nothing new was queued


MARKER_GRACE_S = 90.0  # Slurm's COMPLETING lasts about KillWait (30 s by default) after the script ends


@dataclass(frozen=True)
class JobView:
    """What poll knows about a job: its own exit marker first, the scheduler's word second."""

    status: JobStatus
    exit_marker: int | None  # RUN/job.exit, written by the job script when it ends
    has_summary: bool
    marker_age_s: float | None = None
    # whose job ran in the run directory, as the job wrote it (results/pre.json, summary.json):
    # {"installation", "remote_id", "attempt", "job_name"}; None when the job wrote neither
    owner: dict | None = None

    @property
    def finished(self) -> bool:
        """The job's own marker says it ended (the scheduler is given MARKER_GRACE_S to
        agree, so its final word - CANCELLED, TIMEOUT - is recorded), or the scheduler says
        so and there is no marker (killed hard, node failure, forgotten)."""
        if self.exit_marker is not None:
            return self.status.state.finished or (self.marker_age_s or 0.0) >= MARKER_GRACE_S
        return self.status.state.finished


def _reply(done_text: str, argv: list[str]) -> dict:
    try:
        reply = json.loads(done_text)
    except ValueError:
        raise CommandError(argv, 0, f"sc_sched.py printed {done_text[-300:]!r}, not JSON", what="scheduler") from None
    if not isinstance(reply, dict):
        raise CommandError(argv, 0, f"sc_sched.py printed {done_text[-300:]!r}", what="scheduler")
    return reply


def submit(t: Transport, sched: Scheduler, ctx: SubmitContext) -> Submitted:
    inner = sched.submit_argv(ctx)
    argv = tool_argv(ctx.python, ctx.tools_dir, "sc_sched.py", "submit", ctx.run_dir, "--", *inner, dirs=[ctx.run_dir])
    reply = _reply(t.run(argv).text, argv)
    if reply.get("rc") != 0:
        raise SubmitRefused(inner, int(reply.get("rc") or 1), str(reply.get("stderr") or reply.get("stdout") or ""), what=f"{sched.name} refused the job")
    return Submitted(sched.parse_submit(str(reply.get("stdout", ""))), bool(reply.get("reused")))


def status(t: Transport, sched: Scheduler, ctx: SubmitContext, job_id: str) -> JobView:
    inner = sched.status_argv(ctx, [job_id])
    argv = tool_argv(ctx.python, ctx.tools_dir, "sc_sched.py", "status", ctx.run_dir, "--", *inner, dirs=[ctx.run_dir])
    reply = _reply(t.run(argv).text, argv)
    marker_text = reply.get("exit_marker")
    marker = int(marker_text) if isinstance(marker_text, str) and marker_text.lstrip("-").isdigit() else None
    rc = reply.get("rc")
    try:
        statuses = sched.parse_status(str(reply.get("stdout", "")), str(reply.get("stderr", "")), int(rc if rc is not None else 0), [job_id])
    except CommandError:
        if marker is None:
            raise  # the scheduler cannot answer and the job has not said it ended: ask later
        statuses = {job_id: JobStatus(job_id, "", JobState.UNKNOWN, None, raw="(scheduler did not answer)")}
    age = reply.get("exit_marker_age")
    owner = reply.get("owner")
    return JobView(
        statuses[job_id], marker, bool(reply.get("summary")), float(age) if isinstance(age, int | float) else None,
        owner if isinstance(owner, dict) else None,
    )  # fmt: skip


def cancel(t: Transport, sched: Scheduler, ctx: SubmitContext, job_id: str) -> None:
    t.run(sched.cancel_argv(ctx, job_id))
