"""The `scbundle` command. Every failure is one line on stderr naming the problem, exit 1."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import click
from rich.console import Console

from scbundle import __version__
from scbundle.core.app import App
from scbundle.core.config import load_config
from scbundle.core.errors import ScbundleError
from scbundle.core.states import RunState
from scbundle.db.migrate import current_revision, head_revision, require_current, upgrade
from scbundle.db.session import Database
from scbundle.stages.registry import get_stage

err_console = Console(stderr=True)


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: App | None = None

    def app(self, *, schema: bool = True) -> App:
        if self._app is None:
            config = load_config(self.config_path)
            db = Database(config.database)
            db.check()
            self._app = App(config, db)
        if schema:
            require_current(self._app.db)
        return self._app


pass_ctx = click.make_pass_decorator(Ctx)


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SCBUNDLE_CONFIG", help="TOML config (default: $SCBUNDLE_CONFIG, then the user config dir, then the embedded local site)")
@click.version_option(__version__)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Run a pipeline stage's biggest batches on a remote supercomputer."""
    ctx.obj = Ctx(config_path)


@cli.group()
def db() -> None:
    """The local database's schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Ctx) -> None:
    """Create or migrate the tables (Alembic) to the current schema."""
    app = c.app(schema=False)
    before, after = upgrade(app.db)
    click.echo(f"database {app.db.display_url}: schema {before or 'empty'} -> {after}")


@db.command("current")
@pass_ctx
def db_current(c: Ctx) -> None:
    """Show the database's schema revision and the one this scbundle needs."""
    app = c.app(schema=False)
    click.echo(f"database {app.db.display_url}: schema {current_revision(app.db) or 'empty'} (this scbundle: {head_revision()})")


@cli.command()
@click.option("--label", required=True, help="label of the new run")
@click.option("--stage", required=True, help="stage whose pending work goes in the run")
@click.option("--limit", type=int, default=None, help="at most this many components")
@click.option("--site", default=None, help="site to run on (default: the config's default_site)")
@click.option("--job-policy", type=click.Choice(["fatal", "ignore"]), default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def define(c: Ctx, label: str, stage: str, limit: int | None, site: str | None, job_policy: str | None, as_json: bool) -> None:
    """Create a remoteRun and its remoteComponents from a stage's pending work."""
    from scbundle.steps.define import define as do_define

    d = do_define(c.app(), label=label, stage=stage, limit=limit, site=site, job_policy=job_policy)
    if as_json:
        emit_json(asdict(d))
    else:
        click.echo(f"remote_id {d.remote_id}: {d.n_components} {stage} components, label {label}, state new")


@cli.command()
@click.argument("stage")
@click.option("--remote-id", type=int, default=None, help="the run (default: every new run of STAGE)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def prepare(c: Ctx, stage: str, remote_id: int | None, as_json: bool) -> None:
    """Build a run's bundle locally (no link needed): new -> pending."""
    from sqlalchemy import select

    from scbundle.core.errors import StateError, UnsafeNameError
    from scbundle.db.models import RemoteRun
    from scbundle.ops.throttle import HeldBack
    from scbundle.steps.prepare import PREPARABLE
    from scbundle.steps.prepare import prepare as do_prepare

    app = c.app()
    get_stage(stage, app.config)  # an unknown stage is refused before anything else
    if remote_id is not None:
        ids = [remote_id]
    else:
        with app.db.read_session() as s:
            ids = list(s.scalars(select(RemoteRun.remote_id).where(RemoteRun.stage == stage, RemoteRun.state == RunState.NEW)))
    out = []
    held: dict[str, None] = {}  # each throttle's message once
    with err_console.status(f"preparing {len(ids)} {stage} run(s)") if sys.stderr.isatty() else _nullcontext():
        for rid in ids:
            t0 = time.perf_counter()
            try:
                p = do_prepare(app, remote_id=rid, stage=stage, states=[RunState.NEW] if remote_id is None else PREPARABLE)
            except HeldBack as err:
                if remote_id is not None:
                    raise
                held[err.args[0]] = None
                continue
            except (StateError, UnsafeNameError) as err:  # taken or moved on by another process since the list was read; a bad old label
                if remote_id is not None:
                    raise
                click.echo(f"remote_id {rid}: skipped: {err}", err=True)
                continue
            out.append({**asdict(p), "seconds": round(time.perf_counter() - t0, 3)})
    for why in held:
        click.echo(f"held back: {why}", err=True)
    if as_json:
        emit_json(out)
        return
    for p in out:
        click.echo(
            f"remote_id {p['remote_id']}: {p['n_components']} components prepared in {p['seconds']} s"
            f" ({p['n_missing']} missing input), {p['nodes']} node(s) x {p['hours']} h, {p['nranks']} ranks,"
            f" {p['n_configs']} multi-prog config(s) -> {p['path_base']}"
        )


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@cli.command("exec")
@click.option("--remote-id", type=int, default=None)
@click.option("--label", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def exec_cmd(c: Ctx, remote_id: int | None, label: str | None, as_json: bool) -> None:
    """Ship pending bundles, push only missing inputs, submit: pending -> run."""
    from scbundle.steps.exec import exec_runs

    rep = exec_runs(c.app(), remote_id=remote_id, label=label, progress=not as_json)
    res = rep.results
    if as_json:
        emit_json([asdict(r) for r in res])
    _report_skip_and_auth(rep)
    for r in res if not as_json else []:
        if r.error:
            outcome = "exec refused, run stays pending" if r.still_pending else "exec failed, run -> error"
            click.echo(f"remote_id {r.remote_id}: {outcome}: {r.error}", err=True)
        else:
            note = f"; {r.note}" if r.note else ""
            click.echo(f"remote_id {r.remote_id}: submitted job {r.job_id} ({r.pushed_files} files, {r.pushed_bytes} bytes pushed, {r.invocations} link calls){note}")
    if any(r.error for r in res) or (remote_id is not None and rep.held):
        sys.exit(1)
    if rep.auth:
        sys.exit(EXIT_LINK_DOWN)


EXIT_LINK_DOWN = 75  # EX_TEMPFAIL: a person must run `scbundle link start`


def _report_skip_and_auth(rep) -> None:
    if rep.skipped:
        click.echo(rep.skipped, err=True)
    for why in dict.fromkeys(rep.held):
        click.echo(f"held back: {why}", err=True)
    if rep.auth:
        ids = ", ".join(map(str, rep.auth))
        click.echo(f"link down: remote_id {ids} -> auth, nothing else changed ({rep.auth_reason}); after `scbundle link start`, run `scbundle revert --auth`", err=True)


@cli.command()
@click.option("--remote-id", type=int, default=None)
@click.option("--label", default=None)
@click.option("--wait", "wait_s", type=float, default=None, help="keep polling every few seconds until done, at most this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def poll(c: Ctx, remote_id: int | None, label: str | None, wait_s: float | None, as_json: bool) -> None:
    """Check jobs; when done bring back products and replay results: run -> full | error."""
    from scbundle.steps.poll import poll_runs

    app = c.app()
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        rep = poll_runs(app, remote_id=remote_id, label=label)
        res = rep.results
        still = [r for r in res if r.state == RunState.RUN and not r.error]
        if not still or wait_s is None or time.monotonic() > deadline or rep.auth:
            break
        time.sleep(1.0)
    _report_skip_and_auth(rep)
    if as_json:
        emit_json([asdict(r) for r in res])
    else:
        for r in res:
            if r.error:
                click.echo(f"remote_id {r.remote_id}: poll failed, nothing changed: {r.error}", err=True)
            elif r.state == RunState.RUN:
                click.echo(f"remote_id {r.remote_id}: job {r.job_state}")
            else:
                click.echo(f"remote_id {r.remote_id}: {r.state} ({r.n_good} good, {r.n_failed} failed){' - ' + r.message if r.message else ''}")
    if any(r.error for r in res) or (remote_id is not None and rep.held):
        sys.exit(1)
    if rep.auth:
        sys.exit(EXIT_LINK_DOWN)


@cli.command()
@click.option("--label", default=None, help="only runs of this label")
@click.option("--remote-id", type=int, default=None, help="examine this full run again, even if advanced before")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def advance(c: Ctx, label: str | None, remote_id: int | None, as_json: bool) -> None:
    """Full runs queue the next stage's work (chip -> cam -> warp -> stack) in new runs."""
    from scbundle.steps.advance import advance as do_advance

    rep = do_advance(c.app(), label=label, remote_id=remote_id)
    if rep.skipped:
        click.echo(rep.skipped, err=True)
    if as_json:
        emit_json({"runs": [asdict(r) for r in rep.runs], "defined": [asdict(d) for d in rep.defined], "blocked": [asdict(b) for b in rep.blocked]})
        return
    for r in rep.runs:
        click.echo(f"remote_id {r.remote_id} ({r.stage}): {r.note}")
    for d in rep.defined:
        click.echo(f"remote_id {d.remote_id}: {d.n_components} {d.stage} components, label {d.label}, state new")
    for b in rep.blocked:
        click.echo(f"blocked {b.stage} {b.item} (from remote_id {b.remote_id}): {b.reason}")
    if not rep.runs and not rep.skipped:
        click.echo("nothing to advance (no full run that is not advanced yet)")


@cli.command()
@click.option("--label", default=None)
@click.option("--remote-id", type=int, default=None)
@click.option("--all", "show_all", is_flag=True, help="list every component of --remote-id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, label: str | None, remote_id: int | None, show_all: bool, as_json: bool) -> None:
    """Runs by state (Njobs/Ngood/Nfail) and, with --remote-id, their components."""
    from scbundle.ops.throttle import site_loads
    from scbundle.steps.status import (
        advance_lines,
        blocked_items,
        component_statuses,
        components_table,
        run_statuses,
        runs_table,
    )
    from scbundle.steps.status import as_json as rows_json

    app = c.app()
    runs = run_statuses(app, label=label, remote_id=remote_id)
    comps = component_statuses(app, remote_id, only_failed=not show_all) if remote_id is not None else []
    blocked = blocked_items(app, [r.remote_id for r in runs if r.advanced])
    sites = site_loads(app)
    if as_json:
        emit_json({"runs": rows_json(runs), "components": rows_json(comps), "blocked": rows_json(blocked), "sites": [asdict(x) for x in sites]})
        return
    app.console.print(runs_table(runs))
    for line in advance_lines(runs, blocked, verbose=remote_id is not None):
        app.console.print(line, highlight=False, markup=False)
    for load in sites:
        app.console.print(load.describe(), highlight=False, markup=False, soft_wrap=True)
    if remote_id is not None:
        for r in runs:
            if r.sched_state:
                app.console.print(f"remote_id {r.remote_id}: scheduler says {r.sched_state}")
            if r.usage is not None:
                app.console.print(f"remote_id {r.remote_id}: {r.usage.describe()}")
            if r.message:
                app.console.print(f"remote_id {r.remote_id}: {r.message}")
        if comps or show_all:
            app.console.print(components_table(remote_id, comps, limit=None if show_all else 50))


@cli.command()
@click.option("--remote-id", type=int, required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def cancel(c: Ctx, remote_id: int, as_json: bool) -> None:
    """Cancel a run's job on the site; finished components are kept, the rest faulted 2."""
    from scbundle.steps.cancel import cancel as do_cancel

    res = do_cancel(c.app(), remote_id)
    if as_json:
        emit_json(asdict(res))
    else:
        click.echo(f"remote_id {res.remote_id}: job {res.job_id} cancelled -> {res.state}: {res.message}")


@cli.command()
@click.option("--remote-id", type=int, default=None)
@click.option("--label", default=None)
@click.option("--fault", type=click.IntRange(1, 6), default=None, help="only runs with this fault code")
@click.option("--auth", is_flag=True, help="return runs paused in state auth to where they were")
@pass_ctx
def revert(c: Ctx, remote_id: int | None, label: str | None, fault: int | None, auth: bool) -> None:
    """Put failed (or auth-paused) runs and their failed components back in line."""
    from scbundle.steps.revert import revert as do_revert

    res = do_revert(c.app(), remote_id=remote_id, label=label, fault=fault, auth=auth)
    for r in res:
        click.echo(f"remote_id {r.remote_id}: -> {r.to_state} ({r.requeued} component(s) requeued, {r.abandoned} abandoned)")
    if not res:
        click.echo("nothing to revert")


@cli.command("demo-data")
@click.option("--images", type=int, default=240, show_default=True)
@pass_ctx
def demo_data(c: Ctx, images: int) -> None:
    """Add demo exposures: raw chip images and shared flat fields, with their rows."""
    from scbundle.demo import seed_demo

    app = c.app()
    n = seed_demo(app, images)
    click.echo(f"{n} demo imfiles added")


@cli.command()
@click.option("--images", type=int, default=240, show_default=True, help="chip components in the bundle (>= 200 for the spine)")
@click.option("--label", default="demo", show_default=True)
@click.option("--timeout", type=float, default=600, show_default=True, help="seconds to wait for each job")
@pass_ctx
def demo(c: Ctx, images: int, label: str, timeout: float) -> None:
    """The whole pipeline on the embedded default: chip -> cam -> warp -> stack, each run
    defined -> prepared -> exec'd -> polled -> advanced; then the status table."""
    from scbundle.demo import run_pipeline
    from scbundle.steps.status import advance_lines, blocked_items, run_statuses, runs_table

    app = c.app(schema=False)
    before, after = upgrade(app.db)
    say = app.console.print
    say(f"[bold]database[/] {app.db.display_url} (schema {before or 'empty'} -> {after}); config: {app.config.source}")
    t0 = time.perf_counter()
    done = run_pipeline(app, images=images, label=label, timeout=timeout, say=say, wait=app.console.status)
    ids = [r.remote_id for r in done]
    runs = [r for r in run_statuses(app, label=label) if r.remote_id in ids]
    say(runs_table(runs))
    for line in advance_lines(runs, blocked_items(app, ids), verbose=False):
        say(line, highlight=False, markup=False)
    say(f"[bold]demo[/] {' -> '.join(r.stage for r in done)} in {time.perf_counter() - t0:.1f} s")
    if any(r.state != RunState.FULL for r in done):
        sys.exit(1)


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


def _fmt_dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    m, _ = divmod(int(abs(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{sign}{h}h{m:02d}m"


def _link_table(statuses) -> None:
    from rich.table import Table

    t = Table(title="link", title_justify="left")
    for col in ("site", "host", "user", "state", "pid", "since", "age", "left before drop"):
        t.add_column(col)
    for m in statuses:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.since)) if m.since else "-"
        state = ("[yellow]up, drop soon[/]" if m.warn else "[green]up[/]") if m.up else "[red]down[/]"
        t.add_row(m.site, m.host, m.user, state, str(m.pid or "-"), since, _fmt_dur(m.age_s), _fmt_dur(m.left_s))
    Console().print(t)
    for m in statuses:
        if m.warn:
            click.echo(f"warning: the link to {m.host} drops in {_fmt_dur(m.left_s)}: plan the maintenance (ops/maintain-link)", err=True)


@link.command("start")
@click.argument("site", required=False)
@pass_ctx
def link_start(c: Ctx, site: str | None) -> None:
    """Start the master(s): type the site's password / one-time code, then it goes to the background."""
    lk = _openssh(c, site)
    out = [lk.start(i) for i in range(len(lk.ssh.hosts))]
    for m in out:
        click.echo(f"link {m.site} -> {m.host} as {m.user}: up (master pid {m.pid})")


@link.command("check")
@click.argument("site", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def link_check(c: Ctx, site: str | None, as_json: bool) -> None:
    """Up or down, since when, age, and time left before the site's drop. Exit 1 when down."""
    lk = _openssh(c, site)
    statuses = lk.check()
    if as_json:
        emit_json([{**asdict(m), "warn": m.warn} for m in statuses])
    else:
        _link_table(statuses)
    if not all(m.up for m in statuses):
        sys.exit(1)


@link.command("stop")
@click.argument("site", required=False)
@pass_ctx
def link_stop(c: Ctx, site: str | None) -> None:
    """End the master(s) (sessions riding them end too)."""
    lk = _openssh(c, site)
    for m in lk.stop():
        click.echo(f"link {m.site} -> {m.host}: {'still up' if m.up else 'down'}")


@link.command("switch-user")
@click.argument("name")
@click.option("--site", default=None)
@pass_ctx
def link_switch_user(c: Ctx, name: str, site: str | None) -> None:
    """Point the link at another user's ssh settings (takes effect at the next `link start`)."""
    lk = _openssh(c, site)
    lk.switch_user(name)
    click.echo(f"link {lk.site_name}: user {name} (config {lk.conf_path(batch=False)})")


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
    from rich.markup import escape
    from rich.table import Table

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
        tab = Table(title=f"site {site_name}: directories (as {rep.account})", title_justify="left")
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
        Console().print(tab)
    if not rep.ok:
        if not as_json:
            click.echo(f"site {site_name}: {len(rep.problems)} directory(ies) another account could change (docs/remote-protocol.md, \"Site directories\")", err=True)
        sys.exit(1)


@cli.group()
def tasks() -> None:
    """Switch exec / poll / prepare / advance off and on (stored in the database), and wait for steps in flight."""


@tasks.command("off")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def tasks_off(c: Ctx, names: tuple[str, ...]) -> None:
    from scbundle.ops.tasks import set_enabled

    set_enabled(c.app(), names, False)
    click.echo(f"off: {' '.join(names)}")


@tasks.command("on")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def tasks_on(c: Ctx, names: tuple[str, ...]) -> None:
    from scbundle.ops.tasks import set_enabled

    set_enabled(c.app(), names, True)
    click.echo(f"on: {' '.join(names)}")


@tasks.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def tasks_status(c: Ctx, as_json: bool) -> None:
    from rich.table import Table

    from scbundle.ops.tasks import states

    rows = states(c.app())
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    t = Table(title="tasks", title_justify="left")
    for col in ("task", "switch", "in flight", "changed", "by"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.task, "[green]on[/]" if r.enabled else "[red]off[/]", str(r.in_flight), r.changed or "-", r.changed_by or "-")
    Console().print(t)


@tasks.command("wait")
@click.argument("names", nargs=-1)
@click.option("--timeout", type=float, default=None, help="give up (exit 1) after this many seconds")
@pass_ctx
def tasks_wait(c: Ctx, names: tuple[str, ...], timeout: float | None) -> None:
    """Return when no exec or poll step (or the NAMES given) is in flight."""
    from scbundle.ops.tasks import wait

    waited = wait(c.app(), names or ("exec", "poll"), timeout=timeout)
    click.echo(f"no step in flight (waited {waited:.1f} s)")


@cli.command()
@click.option("--once", is_flag=True, help="one pass, then exit")
@click.option("--loop-seconds", type=float, default=None, help="pause between passes (config: daemon.loop_seconds)")
@click.option("--poll-seconds", type=float, default=None, help="poll a run only when last_poll is older (config: daemon.poll_seconds)")
@pass_ctx
def daemon(c: Ctx, once: bool, loop_seconds: float | None, poll_seconds: float | None) -> None:
    """prepare, exec, poll and advance in a loop until SIGINT/SIGTERM, stopping at a step boundary."""
    from scbundle.cli.daemon import run_daemon

    app = c.app()
    run_daemon(app, once=once, loop_seconds=loop_seconds, poll_seconds=poll_seconds)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except ScbundleError as err:
        click.echo(f"scbundle: error: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("scbundle: interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
