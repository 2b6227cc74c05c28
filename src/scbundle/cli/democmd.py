"""`scbundle demo` and `scbundle demo-data`: the demo pipeline on the embedded default."""

from __future__ import annotations

import sys
import time

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import runs_table, say
from scbundle.core.states import RunState
from scbundle.db.migrate import upgrade


@cli.command("demo-data")
@click.option("--images", type=click.IntRange(1, 1_000_000), default=240, show_default=True)
@pass_ctx
def demo_data(c: Ctx, images: int) -> None:
    """Add demo exposures: raw chip images and shared flat fields, with their rows."""
    from scbundle.demo import seed_demo

    app = c.app()
    n = seed_demo(app, images)
    click.echo(f"{n} demo imfiles added")


@cli.command()
@click.option("--images", type=click.IntRange(1, 1_000_000), default=240, show_default=True, help="chip components in the bundle (>= 200 for the spine)")
@click.option("--label", default="demo", show_default=True)
@click.option("--timeout", type=click.FloatRange(1, 86400), default=600, show_default=True, help="seconds to wait for each job")
@pass_ctx
def demo(c: Ctx, images: int, label: str, timeout: float) -> None:
    """The whole pipeline on the embedded default: chip -> cam -> warp -> stack, each run
    defined -> prepared -> exec'd -> polled -> advanced; then the status table."""
    from scbundle.demo import run_pipeline
    from scbundle.steps.status import advance_lines, blocked_items, run_statuses

    app = c.app(schema=False)
    before, after = upgrade(app.db)
    con = app.console
    con.print(f"[bold]database[/] {app.db.display_url} (schema {before or 'empty'} -> {after}); config: {app.config.source}", highlight=False)
    t0 = time.perf_counter()
    done = run_pipeline(app, images=images, label=label, timeout=timeout, say=lambda text: con.print(text, highlight=False), wait=con.status)
    ids = [r.remote_id for r in done]
    runs = [r for r in run_statuses(app, label=label) if r.remote_id in ids]
    con.print(runs_table(con, runs))
    for line in advance_lines(runs, blocked_items(app, ids), verbose=False):
        say(con, line)
    con.print(f"[bold]demo[/] {' -> '.join(r.stage for r in done)} in {time.perf_counter() - t0:.1f} s", highlight=False)
    if any(r.state != RunState.FULL for r in done):
        sys.exit(1)
