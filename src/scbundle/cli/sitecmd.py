"""`scbundle site check`: the directories scbundle keeps on a site, and who could change them."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click
from rich.markup import escape
from rich.table import Table

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import echo, emit_json


@cli.group()
def site() -> None:
    """The site's own state: the directories scbundle keeps there."""


@site.command("check")
@click.argument("name", metavar="[SITE]", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def site_check_cmd(c: Ctx, name: str | None, as_json: bool) -> None:
    """Owner, mode and links of every site directory that must not be writable by others
    (permanent_root and those above it, the tools, the run directories, the job registry),
    and whether the tools are this installation's. One link call; exit 1 when something is wrong."""
    from scbundle.site.check import site_check
    from scbundle.site.link import live_transport

    app = c.app(schema=False)
    site_name = name or app.config.default_site
    t = live_transport(site_name, app.site(site_name))
    try:
        rep = site_check(t, site_name, app.site(site_name))
    finally:
        t.close()
    if as_json:
        emit_json({"site": rep.site, "account": rep.account, "ok": rep.ok, "runs_total": rep.runs_total,
                   "dirs": [{**asdict(d), "ok": d.ok} for d in rep.dirs]})  # fmt: skip
    else:
        tab = Table(title=f"site {escape(site_name)}: directories (as {escape(rep.account)})", title_justify="left")
        for col in ("role", "path", "owner", "mode", "group/others write", "symlink", "state"):
            tab.add_column(col, overflow="fold")  # whole paths: the operator acts on them
        runs = [d for d in rep.dirs if d.role == "run directory"]
        for d in rep.dirs:
            if d.role == "run directory" and d.ok:
                continue  # the good ones are counted below
            write = " and ".join(w for w, on in (("group", d.group_writable), ("others", d.other_writable)) if on) or "-"
            state = "[green]ok[/]" if d.ok and d.exists else ("missing (made at first use)" if d.ok else "[red]" + escape("; ".join(d.problems)) + "[/]")
            tab.add_row(d.role, escape(d.path), escape(d.owner or "-"), d.mode or "-", write,
                        escape(f"-> {d.target}") if d.symlink else "-", state)  # fmt: skip
        good = sum(1 for d in runs if d.ok)
        more = f" (only the first {len(runs)} looked at)" if rep.runs_total > len(runs) else ""
        tab.add_row("run directory", "runs/*", "-", "-", "-", "-", f"{good} of {rep.runs_total} ok{more}")
        app.console.print(tab)
    if not rep.ok:
        if not as_json:
            echo(f"site {site_name}: {len(rep.problems)} directory(ies) another account could change (docs/remote-protocol.md, \"Site directories\")", err=True)
        sys.exit(1)
