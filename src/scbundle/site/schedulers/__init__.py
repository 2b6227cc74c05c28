"""Schedulers: pure command builders and pure parsers of what the scheduler prints."""

from __future__ import annotations

from scbundle.core.config import Site
from scbundle.core.errors import ConfigError
from scbundle.site.schedulers.base import JobState, JobStatus, Scheduler, SubmitContext
from scbundle.site.schedulers.local import LocalScheduler
from scbundle.site.schedulers.slurm import SlurmScheduler


def scheduler_for(site_name: str, site: Site) -> Scheduler:
    if site.scheduler == "local":
        return LocalScheduler()
    if site.scheduler == "slurm":
        return SlurmScheduler()
    if site.scheduler == "moab":
        from scbundle.site.schedulers.moab import MoabScheduler

        return MoabScheduler()
    raise ConfigError(f"site {site_name!r}: scheduler {site.scheduler!r} is not supported")


__all__ = ["JobState", "JobStatus", "LocalScheduler", "Scheduler", "SlurmScheduler", "SubmitContext", "scheduler_for"]
