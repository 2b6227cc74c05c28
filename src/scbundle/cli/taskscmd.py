"""`scbundle tasks`: the switches every process honours, and the steps in flight."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table
from rich.text import Text

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import emit_json


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
    from scbundle.ops.tasks import states

    app = c.app()
    rows = states(app)
    if as_json:
        emit_json([asdict(r) for r in rows])
        return
    t = Table(title="tasks", title_justify="left")
    for col in ("task", "switch", "in flight", "changed", "by"):
        t.add_column(col)
    for r in rows:
        switch = Text("on", style="green") if r.enabled else Text("off", style="red")
        t.add_row(r.task, switch, str(r.in_flight), r.changed or "-", Text(r.changed_by or "-"))
    app.console.print(t)


@tasks.command("wait")
@click.argument("names", nargs=-1)
@click.option("--timeout", type=click.FloatRange(0, None), default=None, help="give up (exit 1) after this many seconds")
@pass_ctx
def tasks_wait(c: Ctx, names: tuple[str, ...], timeout: float | None) -> None:
    """Return when no exec or poll step (or the NAMES given) is in flight."""
    from scbundle.ops.tasks import wait

    waited = wait(c.app(), names or ("exec", "poll"), timeout=timeout)
    click.echo(f"no step in flight (waited {waited:.1f} s)")
