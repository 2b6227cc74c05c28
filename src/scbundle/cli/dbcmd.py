"""`scbundle db`: the local database's schema."""

from __future__ import annotations

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.db.migrate import current_revision, head_revision, upgrade


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
    from scbundle.db.identity import installation_id

    app = c.app(schema=False)
    have = current_revision(app.db)
    inst = ""
    if have == head_revision():
        with app.db.read_session() as s:
            inst = f", installation {installation_id(s)}"
    click.echo(f"database {app.db.display_url}: schema {have or 'empty'} (this scbundle: {head_revision()}){inst}")


@db.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def db_status(c: Ctx, as_json: bool) -> None:
    """The engine's schema and each installed plugin's branch: where the database is, and the head."""
    from dataclasses import asdict

    from rich.table import Table

    from scbundle.cli.render import emit_json
    from scbundle.db.migrate import status

    app = c.app(schema=False)
    rows = status(app.db)
    if as_json:
        emit_json([{**asdict(r), "up_to_date": r.up_to_date} for r in rows])
    else:
        t = Table(title=f"schema of {app.db.display_url}", title_justify="left")
        for col in ("branch", "from", "database", "head", ""):
            t.add_column(col)
        for r in rows:
            t.add_row(r.branch, r.dist, r.current or "-", r.head, "[green]current[/]" if r.up_to_date else "[red]`scbundle db upgrade`[/]")
        app.console.print(t)
    if not all(r.up_to_date for r in rows):
        raise SystemExit(1)
