"""`scbundle link`: the human-authenticated OpenSSH masters of a site."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import echo, emit_json, fmt_duration, link_table
from scbundle.core.errors import ScbundleError
from scbundle.core.text import printable


@cli.group()
def link() -> None:
    """The link: one human-authenticated OpenSSH master per front end."""


def _openssh(c: Ctx, site: str | None):
    from scbundle.site.link.openssh import OpenSshLink

    app = c.app(schema=False)
    name = site or app.config.default_site
    s = app.site(name)
    if s.link != "ssh":
        raise ScbundleError(f"site {name!r} has link = {s.link!r}: only ssh sites have a master to manage")
    return OpenSshLink(name, s)


def _journal(c: Ctx, site: str, events: list[tuple[str, str | None, str | None, str]], *, unless_down: bool = False,
             beats: list[tuple[str, bool]] | None = None) -> None:  # fmt: skip
    """Journal link events ``(host, from, to, what)`` of ``site`` in one transaction, with who
    did them, and this local host's heartbeats ``(host, up)`` (db/hosts.py). The link works
    without the database: one it cannot write to gets a warning line, not a failure.
    ``unless_down``: skip a host whose last event already says down."""
    if not events and not beats:
        return
    from scbundle.db import journal
    from scbundle.db.hosts import beat
    from scbundle.ops.links import me

    try:
        app = c.app()
        with app.db.session() as s:
            if beats:
                beat(s, me(app), site, beats)
            for host, src, dst, what in events:
                if unless_down:
                    last = journal.last_link_event(s, site, host)
                    if last is not None and last.dst == "down":
                        continue
                journal.record(s, kind="link", command="link", site=site, src=src, dst=dst, message=f"{host}: {what}")
    except ScbundleError as err:
        echo(f"warning: link events not journaled: {printable(err)}", err=True)


@link.command("start")
@click.argument("site", required=False)
@click.option("--all", "all_sites", is_flag=True, help="every ssh site of the config, every front end: one prompt sequence per host")
@pass_ctx
def link_start(c: Ctx, site: str | None, all_sites: bool) -> None:
    """Start the master(s) of every front end: type the site's password / one-time code for each
    host in turn, then each goes to the background."""
    if all_sites and site:
        raise click.UsageError("give a SITE or --all, not both")
    names = [n for n, s in c.app(schema=False).config.sites.items() if s.link == "ssh"] if all_sites else [site]
    if not names:
        raise ScbundleError("no site of the config has link = \"ssh\": no master to start")
    for name in names:
        lk = _openssh(c, name)
        out = []
        for i in range(len(lk.ssh.hosts)):
            was_up = lk.check_one(i).up
            if not was_up:
                echo(f"link {lk.site_name} -> {lk.ssh.hosts[i]}: starting the master (the site's prompts follow)", err=True)
            out.append(m := lk.start(i))
            if not was_up:
                _journal(c, lk.site_name, [(m.host, "down", "up", f"master started as {m.user} (pid {m.pid})")])
        _journal(c, lk.site_name, [], beats=[(m.host, m.up) for m in out])
        for m in out:
            echo(f"link {m.site} -> {m.host} as {m.user}: up (master pid {m.pid})")


@link.command("check")
@click.argument("site", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def link_check(c: Ctx, site: str | None, as_json: bool) -> None:
    """Up or down, since when, age, and time left before the site's drop. Exit 1 when down."""
    from scbundle.core.app import make_console
    from scbundle.site.link.openssh import host_key_checking, host_key_warning

    lk = _openssh(c, site)
    statuses = lk.check()
    _journal(c, lk.site_name, [(m.host, "up", "down", "master found down") for m in statuses if not m.up], unless_down=True,
             beats=[(m.host, m.up) for m in statuses])  # fmt: skip
    service = _service(c, lk.site_name, lk.ssh.hosts)
    keys = host_key_checking(lk.ssh)  # both hops
    if as_json:
        emit_json([{**asdict(m), "warn": m.warn, "host_key_checking": keys, "service": service.get(m.host)} for m in statuses])
    else:
        make_console().print(link_table(statuses, service))
        for m in statuses:
            if m.warn:
                echo(f"warning: the link to {m.host} drops in {fmt_duration(m.left_s)}: plan the maintenance (ops/maintain-link)", err=True)
    note = host_key_warning(lk.site_name, lk.ssh)
    if note:
        echo(note, err=True)
    if not all(m.up for m in statuses):
        sys.exit(1)


@link.command("stop")
@click.argument("site", required=False)
@pass_ctx
def link_stop(c: Ctx, site: str | None) -> None:
    """End the master(s) (sessions riding them end too)."""
    lk = _openssh(c, site)
    before = {m.host: m for m in lk.check()}
    after = lk.stop()
    _journal(c, lk.site_name, [(m.host, "up", "down", f"master stopped (was pid {before[m.host].pid})")
                               for m in after if not m.up and m.host in before and before[m.host].up])  # fmt: skip
    for m in after:
        echo(f"link {m.site} -> {m.host}: {'still up' if m.up else 'down'}")


@link.command("switch-user")
@click.argument("name")
@click.option("--site", default=None)
@pass_ctx
def link_switch_user(c: Ctx, name: str, site: str | None) -> None:
    """Point the link at another user's ssh settings (takes effect at the next `link start`)."""
    lk = _openssh(c, site)
    old = lk.active_user()
    lk.switch_user(name)
    _journal(c, lk.site_name, [(h, None, None, f"user switched from {old} to {name}") for h in lk.ssh.hosts])
    echo(f"link {lk.site_name}: user {name} (config {lk.conf_path(batch=False)})")


def _service(c: Ctx, site: str, hosts: list[str]) -> dict[str, dict]:
    """Each front end's service state (`link host off|on`) as JSON-ready dicts; {} (with a
    warning line) when the database cannot be read: the link works without it."""
    from scbundle.db.hosts import service_states
    from scbundle.ops.links import service_json

    try:
        app = c.app()
        with app.db.read_session() as s:
            states = service_states(s, site, hosts)
    except ScbundleError as err:
        echo(f"warning: hosts' service state not read: {printable(err)}", err=True)
        return {}
    return {st.host: service_json(st) for st in states}


@link.group("host")
def link_host() -> None:
    """Take a front end out of transfers and submission (`off`) or put it back (`on`), for every
    process and local host on this database; its master is not touched."""


def _set_service(c: Ctx, name: str, site: str | None, on: bool, why: str | None) -> None:
    from scbundle.db.hosts import set_service

    app = c.app()
    site_name = site or app.config.default_site
    s = app.site(site_name)
    if s.ssh is None:
        raise ScbundleError(f"site {site_name!r} has link = {s.link!r}: it has no front ends to take in or out of service")
    with app.db.session() as session:
        changed = set_service(session, site_name, s.ssh.hosts, name, on=on, why=why)
    word = "in service" if on else "out of service (no transfer or submission goes through it; its master is untouched)"
    echo(f"link {site_name} -> {name}: {word}" + ("" if changed else " (it already was)"))


@link_host.command("off")
@click.argument("name")
@click.option("--site", default=None)
@click.option("--why", default=None, help="a note for the others (shown by `link check` and `status`)")
@pass_ctx
def link_host_off(c: Ctx, name: str, site: str | None, why: str | None) -> None:
    """Take front end NAME out of service."""
    _set_service(c, name, site, False, why)


@link_host.command("on")
@click.argument("name")
@click.option("--site", default=None)
@pass_ctx
def link_host_on(c: Ctx, name: str, site: str | None) -> None:
    """Put front end NAME back in service."""
    _set_service(c, name, site, True, None)
