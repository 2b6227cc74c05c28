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
