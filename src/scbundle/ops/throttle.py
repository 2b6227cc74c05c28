"""Throttles per site, the operators' old --nproc / --nprep / --spacelim:

- ``max_in_flight``: most runs submitted and not yet brought back (state ``run``, or ``auth``
  paused from ``run``); exec holds further pending runs back;
- ``max_prepared``: most runs prepared ahead and waiting for exec (state ``pending``, or
  ``auth`` paused from ``pending``); prepare holds further new runs back;
- ``min_free_disk``: the free space the workdir's disk keeps (bytes, "50G", or "10%" of the
  disk); below it nothing new is prepared.

prepare and exec ask here under the site's lock (db/claims.py), so concurrent processes never
overshoot a limit together; ``scbundle status`` shows which throttle is holding work back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from scbundle.core.app import App
from scbundle.core.config import Site, parse_size
from scbundle.core.errors import ScbundleError
from scbundle.core.states import RunState
from scbundle.db.models import RemoteRun


class HeldBack(ScbundleError):
    """A throttle holds this step back for now (the message names it); nothing changed."""


def _in_state(state: str):
    """Runs in ``state``, counting those paused in auth from it (they still hold their place)."""
    return or_(RemoteRun.state == state, and_(RemoteRun.state == RunState.AUTH, RemoteRun.prev_state == state))


def count_in_flight(s: Session, site: str) -> int:
    return s.scalar(select(func.count()).select_from(RemoteRun).where(RemoteRun.site == site, _in_state(RunState.RUN))) or 0


def count_prepared(s: Session, site: str) -> int:
    return s.scalar(select(func.count()).select_from(RemoteRun).where(RemoteRun.site == site, _in_state(RunState.PENDING))) or 0


def disk_usage(path: str) -> tuple[int, int]:
    """(free, total) bytes of the disk holding ``path`` (its nearest existing ancestor)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    usage = shutil.disk_usage(p)
    return usage.free, usage.total


def min_free_bytes(site: Site, total: int) -> int | None:
    """``min_free_disk`` in bytes for a disk of ``total`` bytes (None: no limit)."""
    if site.min_free_disk is None:
        return None
    amount, percent = parse_size(site.min_free_disk)
    return int(total * amount / 100) if percent else int(amount)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def disk_hold(app: App, site_name: str) -> str | None:
    site = app.site(site_name)
    if site.min_free_disk is None:
        return None
    free, total = disk_usage(app.config.workdir)
    need = min_free_bytes(site, total) or 0
    if free >= need:
        return None
    return f"min_free_disk: the workdir {app.config.workdir} has {human(free)} free, below min_free_disk = {site.min_free_disk!r} ({human(need)})"


def prepare_hold(app: App, s: Session, run: RemoteRun) -> str | None:
    """Why prepare must not add ``run`` to the prepared runs now (None: go ahead)."""
    why = disk_hold(app, run.site)
    if why:
        return why
    limit = app.site(run.site).max_prepared
    if limit is None or run.state == RunState.PENDING:  # re-preparing a pending run adds none
        return None
    n = count_prepared(s, run.site)
    if n < limit:
        return None
    return f"max_prepared: {n} run(s) on site {run.site} are prepared and waiting for exec (max_prepared = {limit})"


def exec_hold(app: App, s: Session, site_name: str) -> str | None:
    """Why exec must not submit another run on ``site_name`` now (None: go ahead)."""
    limit = app.site(site_name).max_in_flight
    if limit is None:
        return None
    n = count_in_flight(s, site_name)
    if n < limit:
        return None
    return f"max_in_flight: {n} run(s) on site {site_name} are submitted and not yet done (max_in_flight = {limit})"


@dataclass(frozen=True)
class SiteLoad:
    """One site's throttles and the work they hold back, for `scbundle status`."""

    site: str
    in_flight: int
    max_in_flight: int | None
    prepared: int
    max_prepared: int | None
    new_runs: int  # waiting for prepare
    pending_runs: int  # prepared, waiting for exec (faulted ones excluded: they wait for a person)
    free_disk: int
    min_free_disk: str | int | None
    min_free_disk_bytes: int | None
    held_by: list[str]  # the throttles holding work back right now
    reasons: list[str]

    def describe(self) -> str:
        lim = lambda n: "no limit" if n is None else str(n)  # noqa: E731
        text = (
            f"site {self.site}: in flight {self.in_flight} (max_in_flight {lim(self.max_in_flight)}), "
            f"prepared {self.prepared} (max_prepared {lim(self.max_prepared)}), workdir free {human(self.free_disk)}"
            + (f" (min_free_disk {self.min_free_disk!r} = {human(self.min_free_disk_bytes or 0)})" if self.min_free_disk is not None else "")
        )
        if not self.held_by:
            return text + "; nothing held back"
        return text + "; held back: " + "; ".join(self.reasons)


def site_loads(app: App) -> list[SiteLoad]:
    out = []
    with app.db.read_session() as s:
        waiting = dict(
            s.execute(
                select(RemoteRun.site, func.count()).where(RemoteRun.state == RunState.NEW).group_by(RemoteRun.site)
            ).all()
        )
        ready = dict(
            s.execute(
                select(RemoteRun.site, func.count())
                .where(RemoteRun.state == RunState.PENDING, RemoteRun.fault == 0)
                .group_by(RemoteRun.site)
            ).all()
        )
        free, total = disk_usage(app.config.workdir)
        for name, site in sorted(app.config.sites.items()):
            in_flight, prepared = count_in_flight(s, name), count_prepared(s, name)
            need = min_free_bytes(site, total)
            new_runs, pending_runs = waiting.get(name, 0), ready.get(name, 0)
            held, reasons = [], []
            if pending_runs and site.max_in_flight is not None and in_flight >= site.max_in_flight:
                held.append("max_in_flight")
                reasons.append(f"exec of {pending_runs} pending run(s) by max_in_flight ({in_flight} in flight, max {site.max_in_flight})")
            if new_runs and need is not None and free < need:
                held.append("min_free_disk")
                reasons.append(f"prepare of {new_runs} new run(s) by min_free_disk ({human(free)} free, min {human(need)})")
            if new_runs and site.max_prepared is not None and prepared >= site.max_prepared:
                held.append("max_prepared")
                reasons.append(f"prepare of {new_runs} new run(s) by max_prepared ({prepared} prepared, max {site.max_prepared})")
            out.append(
                SiteLoad(name, in_flight, site.max_in_flight, prepared, site.max_prepared, new_runs, pending_runs,
                         free, site.min_free_disk, need, held, reasons)
            )  # fmt: skip
    return out
