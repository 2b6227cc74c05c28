"""What every step needs: the configuration, the database, the console; and run lookups."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.bundle.build import remote_tools_dir
from scbundle.core.config import Config, Site
from scbundle.core.errors import LinkDownError, StateError
from scbundle.core.resources import tools_hash
from scbundle.db.models import RemoteRun
from scbundle.db.session import Database
from scbundle.site.link import Transport, transport_for
from scbundle.site.pathmap import PathMap
from scbundle.site.schedulers import Scheduler, scheduler_for
from scbundle.stages import get_stage
from scbundle.stages.base import BuildContext, Stage


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class App:
    config: Config
    db: Database
    console: Console = field(default_factory=lambda: Console(width=None if sys.stdout.isatty() else 160))

    def site(self, name: str) -> Site:
        return self.config.site(name)

    def transport(self, site_name: str) -> Transport:
        return transport_for(site_name, self.site(site_name))

    def live_transport(self, site_name: str) -> Transport:
        """A transport whose link is up; LinkDownError, naming `link start`, otherwise."""
        t = self.transport(site_name)
        if not t.link_up():
            t.close()
            raise LinkDownError(f"link to site {site_name} is down: run `scbundle link start {site_name}`")
        return t

    def scheduler(self, site_name: str) -> Scheduler:
        return scheduler_for(site_name, self.site(site_name))

    def stage(self, name: str) -> Stage:
        return get_stage(name, self.config)

    def tools_dir(self, site_name: str) -> str:
        return remote_tools_dir(self.site(site_name).permanent_root, tools_hash())

    def build_context(self, run: RemoteRun) -> BuildContext:
        site = self.site(run.site)
        return BuildContext(
            remote_id=run.remote_id,
            label=run.label,
            pathmap=PathMap.of(site.paths),
            tools_dir=self.tools_dir(run.site),
            python=site.python,
        )


def get_run(session: Session, remote_id: int, states: Sequence[str] | None = None, step: str = "") -> RemoteRun:
    run = session.get(RemoteRun, remote_id)
    if run is None:
        raise StateError(f"remote_id {remote_id} does not exist")
    if states is not None and run.state not in states:
        raise StateError(
            f"remote_id {remote_id} is in state {run.state!r}; {step or 'this step'} needs {' or '.join(map(repr, states))}"
        )
    return run


def select_runs(
    session: Session, states: Sequence[str], remote_id: int | None, label: str | None, step: str
) -> list[RemoteRun]:
    """The runs a step works on: one by remote_id (state checked), or all in ``states``."""
    if remote_id is not None:
        return [get_run(session, remote_id, states, step)]
    q = select(RemoteRun).where(RemoteRun.state.in_(states)).order_by(RemoteRun.remote_id)
    if label is not None:
        q = q.where(RemoteRun.label == label)
    return list(session.scalars(q))
