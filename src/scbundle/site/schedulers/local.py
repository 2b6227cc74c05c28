"""The `local` scheduler: remote/sc_localjob.py starts the job script detached on this machine,
with remote/bin (the multi-prog srun emulator) first on PATH, so the sbatch script runs as is."""

from __future__ import annotations

import re
from collections.abc import Sequence

from scbundle.core.errors import CommandError
from scbundle.site.layout import tool_argv
from scbundle.site.schedulers.base import JobState, JobStatus, SubmitContext

_STATES = {
    "RUNNING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "UNKNOWN": JobState.UNKNOWN,
}


class LocalScheduler:
    name = "local"
    job_template = "slurm/job.sh.j2"

    def submit_argv(self, ctx: SubmitContext) -> list[str]:
        return tool_argv(
            ctx.python, ctx.tools_dir, "sc_localjob.py", "submit",
            "--registry", ctx.registry, "--name", ctx.job_name, "--workdir", ctx.run_dir,
            "--output", f"{ctx.run_dir}/job.out", "--path-prepend", f"{ctx.tools_dir}/bin",
            "--", "bash", ctx.script, mkdirs=[ctx.registry],
        )  # fmt: skip

    def parse_submit(self, stdout: str) -> str:
        text = stdout.strip()
        if not re.fullmatch(r"\d+", text):
            raise CommandError(["sc_localjob.py", "submit"], 0, f"unexpected submit output {text!r}", what="submit")
        return text

    def status_argv(self, ctx: SubmitContext, job_ids: Sequence[str]) -> list[str]:
        """By the run's job name when it has one: a job id is a pid, and pids are reused (the
        answer line still carries the id, which must be the one asked for)."""
        argv = tool_argv(ctx.python, ctx.tools_dir, "sc_localjob.py", "status", "--registry", ctx.registry, dirs=[ctx.registry])
        if ctx.job_name and len(job_ids) == 1:
            return argv + ["--name", ctx.job_name]
        for j in job_ids:
            argv += ["--job", j]
        return argv

    def parse_status(self, stdout: str, stderr: str, returncode: int, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if returncode != 0:
            raise CommandError(["sc_localjob.py", "status"], returncode, stderr, what="status")
        out: dict[str, JobStatus] = {}
        for line in stdout.splitlines():
            if not line.strip():
                continue
            job_id, name, state, exit_code = (line.split("|") + ["", "", "", ""])[:4]
            out[job_id] = JobStatus(
                job_id=job_id,
                name=name,
                state=_STATES.get(state, JobState.UNKNOWN),
                exit_code=int(exit_code) if exit_code.lstrip("-").isdigit() else None,
                raw=state or "(not listed)",
            )
        return {j: out.get(j) or JobStatus(j, "", JobState.UNKNOWN, None, raw="(not listed)") for j in job_ids}

    def cancel_argv(self, ctx: SubmitContext, job_id: str) -> list[str]:
        name = ["--name", ctx.job_name] if ctx.job_name else []
        return tool_argv(ctx.python, ctx.tools_dir, "sc_localjob.py", "cancel", "--registry", ctx.registry, *name, job_id, dirs=[ctx.registry])
