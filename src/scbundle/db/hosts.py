"""Front ends in and out of service, and each local host's link heartbeat (migration 0008).

`scbundle link host off NAME` stores a row in ``host_service``: the database is shared by
every process and every local host, so one command takes the front end out of transfers and
submission everywhere, its master untouched. Each local host (``local_host_name``) writes its
masters' state per site and front end into ``link_heartbeat``; ``link_decision`` (pure) reads
them: a host with no link of its own leaves a site's work to a host whose fresh heartbeat says
up, and runs go to ``auth`` only when no host has a live link."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.app import utcnow
from scbundle.core.errors import ConfigError
from scbundle.db import journal
from scbundle.db.models import HostService, LinkHeartbeat


@dataclass(frozen=True)
class ServiceState:
    """A front end's service state; ``since`` None: never taken out (in service)."""

    site: str
    host: str
    in_service: bool
    since: datetime | None = None
    by: str | None = None
    why: str | None = None


def service_states(session: Session, site: str, hosts: Sequence[str]) -> list[ServiceState]:
    """Each of ``hosts`` (the site's configured front ends, in order) with its state."""
    rows = {r.host: r for r in session.scalars(select(HostService).where(HostService.site == site))}
    out = []
    for h in hosts:
        r = rows.get(h)
        out.append(ServiceState(site, h, True) if r is None else ServiceState(site, h, bool(r.in_service), r.since, r.by, r.why))
    return out


def off_hosts(session: Session, site: str) -> frozenset[str]:
    """The site's front ends out of service."""
    return frozenset(session.scalars(select(HostService.host).where(HostService.site == site, HostService.in_service.is_(False))))


def set_service(session: Session, site: str, hosts: Sequence[str], host: str, *, on: bool, why: str | None) -> bool:
    """Put ``host`` in (``on``) or out of service, journaled (command "link") in the same
    transaction; False when it already was. A name not among ``hosts`` is refused by name."""
    if host not in hosts:
        raise ConfigError(f"site {site}: {host!r} is not one of its front ends (hosts: {', '.join(hosts)})")
    row = session.get(HostService, (site, host), with_for_update=True)
    was_on = row is None or bool(row.in_service)
    if was_on == on:
        return False
    who = journal.whoami()[:192]
    if row is None:
        row = HostService(site=site, host=host)
        session.add(row)
    row.in_service, row.since, row.by, row.why = on, utcnow(), who, (why or None) and why[:500]
    word = "in service" if on else "out of service"
    journal.record(session, kind="link", command="link", site=site, src="off" if on else "on", dst="on" if on else "off",
                   message=f"{host}: {word}" + (f" ({why})" if why else ""))  # fmt: skip
    return True


# --- heartbeats ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    local_host: str
    site: str
    host: str
    up: bool
    at: datetime  # UTC


def beat(session: Session, local_host: str, site: str, states: Iterable[tuple[str, bool]]) -> None:
    """Record this local host's masters to ``site``'s front ends: ``(host, up)`` each, now."""
    now, who = utcnow(), journal.whoami()[:192]
    for host, up in states:
        row = session.get(LinkHeartbeat, (local_host, site, host), with_for_update=True)
        if row is None:
            session.add(LinkHeartbeat(local_host=local_host, site=site, host=host, up=up, at=now, who=who))
        else:
            row.up, row.at, row.who = up, now, who
        session.flush()


def heartbeats(session: Session, site: str) -> list[Heartbeat]:
    rows = session.scalars(select(LinkHeartbeat).where(LinkHeartbeat.site == site).order_by(LinkHeartbeat.local_host, LinkHeartbeat.host))
    return [Heartbeat(r.local_host, r.site, r.host, bool(r.up), r.at) for r in rows]


@dataclass(frozen=True)
class Decision:
    """What a step does with a site's run: ``act`` (this host's link is up), ``leave`` (it has
    none, ``to`` these local hosts do: their step does the work), ``auth`` (no host has one)."""

    action: Literal["act", "leave", "auth"]
    to: tuple[str, ...] = ()


def live(b: Heartbeat, now: datetime, fresh_s: float, off: Iterable[str] = ()) -> bool:
    """A heartbeat that says up, to a front end in service, no older than ``fresh_s`` (nor
    further ahead than that: another host's clock)."""
    return b.up and b.host not in set(off) and abs(now - b.at) <= timedelta(seconds=fresh_s)


def link_decision(beats: Iterable[Heartbeat], *, me: str, mine_up: bool, now: datetime, fresh_s: float,
                  off: Iterable[str] = ()) -> Decision:  # fmt: skip
    """Pure: this local host ``me`` (its own link up or not) and the site's heartbeats at ``now``."""
    if mine_up:
        return Decision("act")
    off = frozenset(off)
    others = sorted({b.local_host for b in beats if b.local_host != me and live(b, now, fresh_s, off)})
    return Decision("leave", tuple(others)) if others else Decision("auth")
