"""The commands that move runs: define, prepare, exec, poll, advance, status, cancel, revert,
retire. Each says what it did, or that there was nothing to do; a failure is one line."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import click

from scbundle.cli.main import EXIT_LINK_DOWN, Count, Ctx, RemoteId, cli, fail, pass_ctx
from scbundle.cli.render import (
    components_table,
    echo,
    emit_json,
    nothing,
    report_pass,
    rows_json,
    runs_table,
    say,
)
from scbundle.core.states import RunState
from scbundle.core.text import printable


def _finish(rep, *, named: bool, nothing_msg: str, as_json: bool) -> None:
    """Exit codes every step shares: 1 for a failed run, a run another process held when named,
    or the step switched off; 75 when the link is down."""
    report_pass(rep, "")
    if nothing(rep) and not as_json:
        echo(nothing_msg)
    if any(getattr(r, "error", None) for r in rep.results) or (named and rep.held) or rep.skipped:
        sys.exit(1)
    if rep.auth:
        sys.exit(EXIT_LINK_DOWN)


@cli.command()
@click.option("--label", required=True, help="label of the new run")
@click.option("--stage", required=True, help="stage whose pending work goes in the run")
@click.option("--limit", type=Count, default=None, help="at most this many components")
@click.option("--site", default=None, help="site to run on (default: the config's default_site)")
@click.option("--job-policy", type=click.Choice(["fatal", "ignore"]), default=None)
@click.option("--tasks", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="a work file (JSON lines) to register first: the run takes exactly its items (e.g. --stage commands)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def define(c: Ctx, label: str, stage: str, limit: int | None, site: str | None, job_policy: str | None, tasks: Path | None, as_json: bool) -> None:
    """Create a remoteRun and its remoteComponents from a stage's pending work."""
    from scbundle.steps.define import define as do_define

    d = do_define(c.app(), label=label, stage=stage, limit=limit, site=site, job_policy=job_policy, tasks=tasks)
    if as_json:
        emit_json(asdict(d))
    else:
        echo(f"remote_id {d.remote_id}: {d.n_components} {stage} components, label {label}, state new")


@cli.command()
@click.argument("stage")
@click.option("--remote-id", type=RemoteId, default=None, help="the run (default: every new run of STAGE)")
@click.option("--label", default=None, help="only new runs of this label")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def prepare(c: Ctx, stage: str, remote_id: int | None, label: str | None, as_json: bool) -> None:
    """Build a run's bundle locally (no link needed): new -> pending."""
    from scbundle.core.app import make_console
    from scbundle.steps.prepare import prepare_runs

    app = c.app()
    err = make_console(stderr=True)
    with err.status(f"preparing {stage} run(s)") if err.is_terminal else nullcontext():
        rep = prepare_runs(app, stage=stage, remote_id=remote_id, label=label)
    if as_json:
        emit_json(rows_json(rep.results))
    for p in rep.results:
        if p.error:
            echo(f"remote_id {p.remote_id}: prepare failed, run -> {p.state}: {printable(p.error).removeprefix('prepare: ')}", err=True)
        elif not as_json and p.state == RunState.PENDING:
            echo(
                f"remote_id {p.remote_id}: {p.n_components} components prepared in {p.seconds} s"
                f" ({p.n_missing} missing input), {p.nodes} node(s) x {p.hours} h, {p.nranks} ranks,"
                f" {p.n_configs} multi-prog config(s) -> {p.path_base}"
            )
        elif not as_json:
            echo(f"remote_id {p.remote_id}: nothing to run ({p.n_missing} component(s) missing an input), run -> {p.state}", err=True)
    _finish(rep, named=remote_id is not None, nothing_msg=f"nothing to prepare (no new {stage} run)", as_json=as_json)


@cli.command("exec")
@click.option("--remote-id", type=RemoteId, default=None)
@click.option("--label", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def exec_cmd(c: Ctx, remote_id: int | None, label: str | None, as_json: bool) -> None:
    """Ship pending bundles, push only missing inputs, submit: pending -> run."""
    from scbundle.steps.exec import exec_runs

    rep = exec_runs(c.app(), remote_id=remote_id, label=label, progress=not as_json)
    if as_json:
        emit_json(rows_json(rep.results))
    for r in rep.results:
        for note in getattr(r, "warnings", ()):
            echo(f"warning: remote_id {r.remote_id}: {printable(note)}", err=True)
        if r.error:
            outcome = "exec refused, run stays pending" if r.still_pending else "exec failed"
            echo(f"remote_id {r.remote_id}: {outcome}: {printable(r.error).removeprefix('exec: ')}", err=True)
        elif not as_json:
            note = f"; {printable(r.note)}" if r.note else ""
            echo(f"remote_id {r.remote_id}: submitted job {printable(r.job_id)} ({r.pushed_files} files, {r.pushed_bytes} bytes pushed, {r.invocations} link calls){note}")
    _finish(rep, named=remote_id is not None, nothing_msg="nothing to exec (no pending run without a fault)", as_json=as_json)


@cli.command()
@click.option("--remote-id", type=RemoteId, default=None)
@click.option("--label", default=None)
@click.option("--wait", "wait_s", type=click.FloatRange(0, 7 * 86400), default=None, help="keep polling every few seconds until done, at most this many seconds")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def poll(c: Ctx, remote_id: int | None, label: str | None, wait_s: float | None, as_json: bool) -> None:
    """Check jobs; when done bring back products and replay results: run -> full | error."""
    from scbundle.steps.poll import poll_runs

    app = c.app()
    deadline = time.monotonic() + (wait_s or 0)
    while True:
        rep = poll_runs(app, remote_id=remote_id, label=label)
        still = [r for r in rep.results if r.state == RunState.RUN and not r.error]
        if not still or wait_s is None or time.monotonic() > deadline or rep.auth:
            break
        time.sleep(1.0)
    if as_json:
        emit_json(rows_json(rep.results))
    for r in rep.results:
        if r.error and r.state == RunState.RUN:
            echo(f"remote_id {r.remote_id}: poll failed, nothing replayed (the run stays in run, the next poll tries again): {printable(r.error).removeprefix('poll: ')}", err=True)
        elif r.error:
            echo(f"remote_id {r.remote_id}: poll failed, run -> {r.state}: {printable(r.error).removeprefix('poll: ')}", err=True)
        elif as_json:
            continue
        elif r.state == RunState.RUN:
            echo(f"remote_id {r.remote_id}: job {printable(r.job_state)}")
        else:
            echo(f"remote_id {r.remote_id}: {r.state} ({r.n_good} good, {r.n_failed} failed)" + (f" - {printable(r.message)}" if r.message else ""))
    _finish(rep, named=remote_id is not None, nothing_msg="nothing to poll (no run in state run)", as_json=as_json)


@cli.command()
@click.option("--label", default=None, help="only runs of this label")
@click.option("--remote-id", type=RemoteId, default=None, help="examine this full run again, even if advanced before")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def advance(c: Ctx, label: str | None, remote_id: int | None, as_json: bool) -> None:
    """Full runs queue the next stage's work (chip -> cam -> warp -> stack) in new runs."""
    from scbundle.steps.advance import advance as do_advance

    rep = do_advance(c.app(), label=label, remote_id=remote_id)
    if rep.skipped:
        echo(rep.skipped, err=True)
    if as_json:
        emit_json({"runs": rows_json(rep.runs), "defined": rows_json(rep.defined), "blocked": rows_json(rep.blocked)})
    else:
        for r in rep.runs:
            echo(f"remote_id {r.remote_id} ({r.stage}): {printable(r.note)}")
        for d in rep.defined:
            echo(f"remote_id {d.remote_id}: {d.n_components} {d.stage} components, label {d.label}, state new")
        for b in rep.blocked:
            echo(f"blocked {b.stage} {printable(b.item)} (from remote_id {b.remote_id}): {printable(b.reason)}")
        if not rep.runs and not rep.skipped:
            echo("nothing to advance (no full run that is not advanced yet)")
    if rep.skipped:
        sys.exit(1)


@cli.command()
@click.option("--label", default=None)
@click.option("--remote-id", type=RemoteId, default=None)
@click.option("--all", "show_all", is_flag=True, help="list every component of --remote-id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def status(c: Ctx, label: str | None, remote_id: int | None, show_all: bool, as_json: bool) -> None:
    """Runs by state (Njobs/Ngood/Nfail) and, with --remote-id, their components."""
    from scbundle.cli.render import service_cell
    from scbundle.ops.links import host_states, service_json
    from scbundle.ops.throttle import site_loads
    from scbundle.steps.status import (
        advance_lines,
        blocked_items,
        component_statuses,
        run_statuses,
        status_document,
    )

    app = c.app()
    if as_json:
        emit_json(status_document(app, label=label, remote_id=remote_id, show_all=show_all))
        return
    runs = run_statuses(app, label=label, remote_id=remote_id)
    comps = component_statuses(app, remote_id, only_failed=not show_all) if remote_id is not None else []
    blocked = blocked_items(app, [r.remote_id for r in runs if r.advanced])
    sites = site_loads(app)
    hosts = host_states(app)
    con = app.console
    if not runs:
        say(con, "no runs" + (f" with label {label}" if label else "") + " (`scbundle define` makes one)")
    else:
        con.print(runs_table(con, runs))
    for line in advance_lines(runs, blocked, verbose=remote_id is not None):
        say(con, line)
    for load in sites:
        say(con, load.describe())
    for h in hosts:
        say(con, f"site {h.site} front end {h.host}: " + ("in service" if h.in_service else service_cell(service_json(h)).plain))
    if remote_id is not None:
        for r in runs:
            if r.sched_state:
                say(con, f"remote_id {r.remote_id}: scheduler says {r.sched_state}")
            if r.usage is not None:
                say(con, f"remote_id {r.remote_id}: {r.usage.describe()}")
            if r.message:
                say(con, f"remote_id {r.remote_id}: {r.message}")
        if comps or show_all:
            con.print(components_table(con, remote_id, comps, limit=None if show_all else 50))


@cli.command()
@click.option("--remote-id", type=RemoteId, required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def cancel(c: Ctx, remote_id: int, as_json: bool) -> None:
    """Cancel a run's job on the site; finished components are kept, the rest faulted 2."""
    from scbundle.steps.cancel import cancel as do_cancel

    res = do_cancel(c.app(), remote_id)
    if as_json:
        emit_json(asdict(res))
    else:
        echo(f"remote_id {res.remote_id}: job {printable(res.job_id)} cancelled -> {res.state}: {printable(res.message)}")


@cli.command()
@click.option("--remote-id", type=RemoteId, default=None)
@click.option("--label", default=None)
@click.option("--fault", type=click.IntRange(1, 6), default=None, help="only components with this fault code")
@click.option("--auth", is_flag=True, help="return runs paused in state auth to where they were")
@click.option("--abandoned", is_flag=True, help="put abandoned components back in line (after their input or program was fixed)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def revert(c: Ctx, remote_id: int | None, label: str | None, fault: int | None, auth: bool, abandoned: bool, as_json: bool) -> None:
    """Put failed, abandoned (--abandoned) or link-paused (--auth) work back in line."""
    from scbundle.steps.revert import revert as do_revert

    if auth and abandoned:
        fail("revert: --auth and --abandoned do not go together")
    res = do_revert(c.app(), remote_id=remote_id, label=label, fault=fault, auth=auth, abandoned=abandoned)
    if as_json:
        emit_json(rows_json(res))
        return
    for r in res:
        tail = f" - {printable(r.message)}" if r.message else ""
        echo(f"remote_id {r.remote_id}: {r.from_state} -> {r.to_state} ({r.requeued} component(s) requeued, {r.abandoned} abandoned){tail}")
    if not res:
        what = "in auth" if auth else "with abandoned components" if abandoned else "in error"
        echo(f"nothing to revert (no run {what}" + (f" with fault {fault}" if fault else "") + " among those named)")


@cli.command()
@click.option("--remote-id", type=RemoteId, required=True)
@click.option("--release", "components", flag_value="release", help="its unfinished components become pending work again (define puts them in a new run)")
@click.option("--abandon", "components", flag_value="abandon", help="its unfinished components are abandoned (reported, never run)")
@click.option("--clean-remote", is_flag=True, help="remove its run directory on the site too")
@click.option("--force", is_flag=True, help="when the link is down: retire without cancelling its job (you know the job is gone)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def retire(c: Ctx, remote_id: int, components: str | None, clean_remote: bool, force: bool, as_json: bool) -> None:
    """Take a run out for good, from any state but full: its full components and results stay."""
    from scbundle.steps.retire import retire as do_retire

    if components is None:
        fail("retire: say what becomes of its unfinished components: --release (pending work again) or --abandon")
    res = do_retire(c.app(), remote_id, components=components, clean_remote=clean_remote, force=force)  # type: ignore[arg-type]
    if as_json:
        emit_json(asdict(res))
    else:
        echo(f"remote_id {res.remote_id}: {res.from_state} -> retired: {printable(res.message)}")
