"""`scbundle work add STAGE FILE`: register a stage's work items from a file (JSON lines)."""

from __future__ import annotations

from pathlib import Path

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.cli.render import emit_json


@cli.group()
def work() -> None:
    """A stage's work items: the supported way to put work in (`define` then takes it)."""


@work.command("add")
@click.argument("stage")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--site", default=None, help="the site the work is for: its path rules check every path (default: default_site)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def work_add(c: Ctx, stage: str, file: Path, site: str | None, as_json: bool) -> None:
    """Register the work items of FILE (one JSON object a line) for STAGE; all or nothing."""
    from scbundle.stages.registry import get_stage
    from scbundle.stages.work import add_work_file, check_takes_work

    app = c.app()
    check_takes_work(get_stage(stage, app.config))
    ids = add_work_file(app, stage, file, site=site)
    if as_json:
        emit_json({"stage": stage, "stage_ids": ids})
    else:
        click.echo(f"{len(ids)} {stage} work item(s) from {file} ({len(set(ids))} distinct): `scbundle define --stage {stage}` puts the pending ones in a run")
