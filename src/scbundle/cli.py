"""The `scbundle` command. Every failure is one line on stderr naming the problem, exit 1."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import click
from rich.console import Console

from . import __version__
from .app import App
from .config import load_config
from .db.migrate import current_revision, head_revision, require_current, upgrade
from .db.session import Database
from .errors import ScbundleError
from .states import RunState

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
    from .define import define as do_define

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

    from .db.models import RemoteRun
    from .prepare import prepare as do_prepare

    app = c.app()
    app.stage(stage)  # an unknown stage is refused before anything else
    if remote_id is not None:
        ids = [remote_id]
    else:
        with app.db.session() as s:
            ids = list(s.scalars(select(RemoteRun.remote_id).where(RemoteRun.stage == stage, RemoteRun.state == RunState.NEW)))
    out = []
    with err_console.status(f"preparing {len(ids)} {stage} run(s)") if sys.stderr.isatty() else _nullcontext():
        for rid in ids:
            t0 = time.perf_counter()
            p = do_prepare(app, remote_id=rid, stage=stage)
            out.append({**asdict(p), "seconds": round(time.perf_counter() - t0, 3)})
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
    from .exec import exec_runs

    res = exec_runs(c.app(), remote_id=remote_id, label=label, progress=not as_json)
    if as_json:
        emit_json([asdict(r) for r in res])
    for r in res if not as_json else []:
        if r.error:
            click.echo(f"remote_id {r.remote_id}: exec failed, run -> error: {r.error}", err=True)
        else:
            click.echo(f"remote_id {r.remote_id}: submitted job {r.job_id} ({r.pushed_files} files, {r.pushed_bytes} bytes pushed, {r.invocations} link calls)")
    if any(r.error for r in res):
        sys.exit(1)


@cli.command()
@click.option("--remote-id", type=int, default=None)
@click.option("--label", default=None)
@click.option("--wait", "wait_s", type=float, default=None, help="keep polling every few seconds until done, at most this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def poll(c: Ctx, remote_id: int | None, label: str | None, wait_s: float | None, as_json: bool) -> None:
    """Check jobs; when done bring back products and replay results: run -> full | error."""
    from .poll import poll_runs

    app = c.app()
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        res = poll_runs(app, remote_id=remote_id, label=label)
        still = [r for r in res if r.state == RunState.RUN and not r.error]
        if not still or wait_s is None or time.monotonic() > deadline:
            break
        time.sleep(1.0)
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
    if any(r.error for r in res):
        sys.exit(1)


@cli.command()
@click.option("--label", default=None)
@click.option("--remote-id", type=int, default=None)
@click.option("--all", "show_all", is_flag=True, help="list every component of --remote-id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, label: str | None, remote_id: int | None, show_all: bool, as_json: bool) -> None:
    """Runs by state (Njobs/Ngood/Nfail) and, with --remote-id, their components."""
    from .status import as_json as rows_json
    from .status import component_statuses, components_table, run_statuses, runs_table

    app = c.app()
    runs = run_statuses(app, label=label, remote_id=remote_id)
    comps = component_statuses(app, remote_id, only_failed=not show_all) if remote_id is not None else []
    if as_json:
        emit_json({"runs": rows_json(runs), "components": rows_json(comps)})
        return
    app.console.print(runs_table(runs))
    if remote_id is not None:
        for r in runs:
            if r.message:
                app.console.print(f"remote_id {r.remote_id}: {r.message}")
        if comps or show_all:
            app.console.print(components_table(remote_id, comps, limit=None if show_all else 50))


@cli.command()
@click.option("--remote-id", type=int, default=None)
@click.option("--label", default=None)
@click.option("--fault", type=click.IntRange(1, 6), default=None, help="only runs with this fault code")
@click.option("--auth", is_flag=True, help="return runs paused in state auth to where they were")
@pass_ctx
def revert(c: Ctx, remote_id: int | None, label: str | None, fault: int | None, auth: bool) -> None:
    """Put failed (or auth-paused) runs and their failed components back in line."""
    from .revert import revert as do_revert

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
    from .demo import seed_demo

    app = c.app()
    n = seed_demo(app, images)
    click.echo(f"{n} demo imfiles added")


@cli.command()
@click.option("--images", type=int, default=240, show_default=True, help="chip components in the bundle (>= 200 for the spine)")
@click.option("--label", default="demo", show_default=True)
@click.option("--timeout", type=float, default=600, show_default=True, help="seconds to wait for the job")
@pass_ctx
def demo(c: Ctx, images: int, label: str, timeout: float) -> None:
    """The main job on the embedded default: define -> prepare -> exec -> poll -> full, then status."""
    from .define import define as do_define
    from .demo import seed_demo
    from .exec import exec_runs
    from .poll import poll_runs
    from .prepare import prepare as do_prepare
    from .status import component_statuses, components_table, run_statuses, runs_table

    app = c.app(schema=False)
    before, after = upgrade(app.db)
    say = app.console.print
    say(f"[bold]database[/] {app.db.display_url} (schema {before or 'empty'} -> {after}); config: {app.config.source}")
    n = seed_demo(app, images)
    say(f"[bold]demo data[/] {n} raw chip images + shared flat fields under {app.site(app.config.default_site).paths[0].local}")
    d = do_define(app, label=label, stage="chip", limit=images, site=None, job_policy=None)
    say(f"[bold]define[/]  remote_id {d.remote_id}: {d.n_components} chip components")
    t0 = time.perf_counter()
    p = do_prepare(app, remote_id=d.remote_id, stage="chip")
    say(f"[bold]prepare[/] {p.n_components} components in {time.perf_counter() - t0:.2f} s: {p.nodes} node(s) x {p.hours} h, {p.nranks} ranks, {p.n_configs} config(s)")
    (e,) = exec_runs(app, remote_id=d.remote_id)
    if e.error:
        raise ScbundleError(f"exec failed: {e.error}", remote_id=d.remote_id)
    say(f"[bold]exec[/]    job {e.job_id} submitted; {e.pushed_files} files ({e.pushed_bytes} bytes) pushed in {e.invocations} link calls")
    deadline = time.monotonic() + timeout
    with app.console.status("[bold]poll[/]    waiting for the job"):
        while True:
            (r,) = poll_runs(app, remote_id=d.remote_id)
            if r.error:
                raise ScbundleError(r.error, remote_id=d.remote_id)
            if r.state != RunState.RUN:
                break
            if time.monotonic() > deadline:
                raise ScbundleError(f"job still {r.job_state} after {timeout} s: `scbundle poll --remote-id {d.remote_id}` later", remote_id=d.remote_id)
            time.sleep(0.5)
    say(f"[bold]poll[/]    remote_id {d.remote_id}: {r.state} ({r.n_good} good, {r.n_failed} failed)")
    say(runs_table(run_statuses(app, remote_id=d.remote_id)))
    say(components_table(d.remote_id, component_statuses(app, d.remote_id), limit=12))
    if r.state != RunState.FULL:
        sys.exit(1)


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
