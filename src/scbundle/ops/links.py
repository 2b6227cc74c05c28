"""A site's link as every local host sees it: front ends out of service, heartbeats, and what a
step does with a site's run when this host's link is down (db/hosts.py's ``link_decision``)."""

from __future__ import annotations

from collections.abc import Iterable

from scbundle.core.app import App, utcnow
from scbundle.core.config import local_host_name
from scbundle.db.hosts import (
    Decision,
    ServiceState,
    beat,
    heartbeats,
    link_decision,
    off_hosts,
    service_states,
)


def me(app: App) -> str:
    return local_host_name(app.config.local)


def site_off(app: App, site_name: str) -> frozenset[str]:
    """The site's front ends out of service (none for a site without ssh hosts)."""
    with app.db.read_session() as s:
        return off_hosts(s, site_name)


def all_off(app: App, site_name: str, off: frozenset[str]) -> str | None:
    """Why nothing can go to the site now: every front end out of service; None otherwise."""
    ssh = app.site(site_name).ssh
    if ssh is None or app.site(site_name).link == "local" or not set(ssh.hosts) <= off:
        return None
    return (f"site {site_name}: every front end is out of service ({', '.join(ssh.hosts)}): "
            f"`scbundle link host on NAME --site {site_name}` puts one back")  # fmt: skip


def record_beats(app: App, site_name: str, states: Iterable[tuple[str, bool]]) -> None:
    """This local host's masters to ``site_name``'s front ends, ``(host, up)``, as of now."""
    with app.db.session() as s:
        beat(s, me(app), site_name, list(states))


def when_down(app: App, site_name: str, off: Iterable[str] = ()) -> Decision:
    """This host's link to the site is down: leave the work to a host with a live one, or auth."""
    with app.db.read_session() as s:
        beats = heartbeats(s, site_name)
    return link_decision(beats, me=me(app), mine_up=False, now=utcnow(), fresh_s=app.config.local.heartbeat_fresh_seconds, off=off)


def service_json(st: ServiceState) -> dict:
    return {"in_service": st.in_service, "since": st.since.isoformat() + "Z" if st.since else None, "by": st.by, "why": st.why}


def host_states(app: App) -> list[ServiceState]:
    """Every front end of every site with front ends, with its service state."""
    out: list[ServiceState] = []
    with app.db.read_session() as s:
        for name, site in app.config.sites.items():
            if site.ssh is not None and site.link != "local":
                out += service_states(s, name, site.ssh.hosts)
    return out


def beat_all(app: App) -> list[str]:
    """The daemon's round: check this host's masters of every ssh site (``ssh -O check``, local
    only) and record them as heartbeats; returns a line per site whose masters are all down."""
    from scbundle.site.link.openssh import OpenSshLink

    lines = []
    for name, site in app.config.sites.items():
        if site.link != "ssh":
            continue
        statuses = OpenSshLink(name, site).check()
        record_beats(app, name, [(m.host, m.up) for m in statuses])
        if not any(m.up for m in statuses):
            lines.append(f"site {name}: no master up from {me(app)} (`scbundle link start {name}`)")
    return lines
