"""`scbundle demo` and `scbundle demo-data`: the demo pipeline on the embedded default (its data
in stages/demo_data.py; here the loop that carries one run from new to full, then the next)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import runs_table, say
from scbundle.core.app import App
from scbundle.core.errors import ScbundleError
from scbundle.core.states import RunState
from scbundle.db.migrate import upgrade
from scbundle.db.models import RemoteRun
from scbundle.stages.demo_data import data_root, seed_demo


# --- the whole pipeline on the embedded default -------------------------------------------------
@dataclass(frozen=True)
class StageRun:
    """One run the demo carried from new to its end."""

    remote_id: int
    stage: str
    n_components: int
    state: str
    n_good: int
    n_failed: int
    seconds: float


Say = Callable[[str], None]
Wait = Callable[[str], AbstractContextManager[object]]  # a spinner while the job runs


def _run(app: App, remote_id: int) -> RemoteRun:
    with app.db.read_session() as s:
        run = s.get(RemoteRun, remote_id)
        assert run is not None
        return run


def drive_run(app: App, remote_id: int, *, timeout: float, say: Say, wait: Wait) -> StageRun:
    """prepare -> exec -> poll until the job is back: one run from new to full (or error)."""
    from scbundle.steps.exec import exec_runs
    from scbundle.steps.poll import poll_runs
    from scbundle.steps.prepare import prepare

    t0 = time.perf_counter()
    stage = _run(app, remote_id).stage
    p = prepare(app, remote_id=remote_id)
    say(f"[bold]{stage:<7}[/] remote_id {remote_id}: {p.n_components} components prepared in {time.perf_counter() - t0:.2f} s"
        f" ({p.n_missing} failed), {p.nodes} node(s) x {p.hours} h, {p.nranks} ranks")  # fmt: skip
    if p.n_components == 0:
        return StageRun(
            remote_id,
            stage,
            0,
            _run(app, remote_id).state,
            0,
            p.n_missing,
            time.perf_counter() - t0,
        )
    (e,) = exec_runs(app, remote_id=remote_id, progress=False).results
    if e.error:
        raise ScbundleError(f"exec failed: {e.error}", remote_id=remote_id)
    say(
        f"        exec: job {e.job_id} submitted; {e.pushed_files} files ({e.pushed_bytes} bytes) pushed in {e.invocations} link calls"
    )
    deadline = time.monotonic() + timeout
    with wait(f"[bold]poll[/]    waiting for {stage} job {e.job_id}"):
        while True:
            (r,) = poll_runs(app, remote_id=remote_id).results
            if r.error:
                raise ScbundleError(r.error, remote_id=remote_id)
            if r.state != RunState.RUN:
                break
            if time.monotonic() > deadline:
                raise ScbundleError(
                    f"job still {r.job_state} after {timeout} s: `scbundle poll --remote-id {remote_id}` later",
                    remote_id=remote_id,
                )
            time.sleep(0.3)
    say(
        f"        poll: remote_id {remote_id}: {r.state} ({r.n_good} good, {r.n_failed} failed), {time.perf_counter() - t0:.1f} s in all"
    )
    return StageRun(
        remote_id, stage, p.n_components, r.state, r.n_good, r.n_failed, time.perf_counter() - t0
    )


def run_pipeline(
    app: App, *, images: int, label: str, timeout: float, say: Say, wait: Wait
) -> list[StageRun]:
    """Demo data, a chip run of it, and then every run advance defines, until none is left."""
    from scbundle.stages.registry import pipeline
    from scbundle.steps.advance import advance
    from scbundle.steps.define import define

    n = seed_demo(app, images)
    say(f"[bold]demo data[/] {n} raw chip images + shared flat fields under {data_root(app)}; "
        f"pipeline {' -> '.join(pipeline(app.config))}")  # fmt: skip
    d = define(app, label=label, stage="chip", limit=images, site=None, job_policy=None)
    say(f"[bold]define[/]  remote_id {d.remote_id}: {d.n_components} chip components")
    todo, done = [d.remote_id], []
    while todo:
        done.append(drive_run(app, todo.pop(0), timeout=timeout, say=say, wait=wait))
        rep = advance(app, label=label)
        if rep.skipped:
            say(rep.skipped)
        for r in rep.runs:
            say(f"[bold]advance[/] remote_id {r.remote_id} ({r.stage}): {r.note}")
        todo += [x.remote_id for x in rep.defined]
    return done


@cli.command("demo-data")
@click.option("--images", type=click.IntRange(1, 1_000_000), default=240, show_default=True)
@pass_ctx
def demo_data(c: Ctx, images: int) -> None:
    """Add demo exposures: raw chip images and shared flat fields, with their rows."""
    app = c.app()
    n = seed_demo(app, images)
    click.echo(f"{n} demo imfiles added")


@cli.command()
@click.option(
    "--images",
    type=click.IntRange(1, 1_000_000),
    default=240,
    show_default=True,
    help="chip components in the bundle (>= 200 for the spine)",
)
@click.option("--label", default="demo", show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 86400),
    default=600,
    show_default=True,
    help="seconds to wait for each job",
)
@pass_ctx
def demo(c: Ctx, images: int, label: str, timeout: float) -> None:
    """The whole pipeline on the embedded default: chip -> cam -> warp -> stack, each run
    defined -> prepared -> exec'd -> polled -> advanced; then the status table."""
    from scbundle.steps.status import advance_lines, blocked_items, run_statuses

    app = c.app(schema=False)
    before, after = upgrade(app.db)
    con = app.console
    con.print(
        f"[bold]database[/] {app.db.display_url} (schema {before or 'empty'} -> {after}); config: {app.config.source}",
        highlight=False,
    )
    t0 = time.perf_counter()
    done = run_pipeline(
        app,
        images=images,
        label=label,
        timeout=timeout,
        say=lambda text: con.print(text, highlight=False),
        wait=con.status,
    )
    ids = [r.remote_id for r in done]
    runs = [r for r in run_statuses(app, label=label) if r.remote_id in ids]
    con.print(runs_table(con, runs))
    for line in advance_lines(runs, blocked_items(app, ids), verbose=False):
        say(con, line)
    con.print(
        f"[bold]demo[/] {' -> '.join(r.stage for r in done)} in {time.perf_counter() - t0:.1f} s",
        highlight=False,
    )
    if any(r.state != RunState.FULL for r in done):
        sys.exit(1)
