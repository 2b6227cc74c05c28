"""The `scbundle` command group, its context, and the one place failures become one line."""

from __future__ import annotations

import sys

import click

from scbundle import __version__
from scbundle.core.app import App, make_console
from scbundle.core.config import load_config
from scbundle.core.errors import ScbundleError
from scbundle.core.text import printable
from scbundle.db.migrate import require_current
from scbundle.db.session import Database
from scbundle.stages.registry import check_config

EXIT_LINK_DOWN = 75  # EX_TEMPFAIL: a person must run `scbundle link start`
MAX_ID = 2**63 - 1

RemoteId = click.IntRange(1, MAX_ID)  # what a database key can be: a huge number is one clear line
Count = click.IntRange(1, MAX_ID)


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: App | None = None

    def app(self, *, schema: bool = True) -> App:
        if self._app is None:
            config = check_config(load_config(self.config_path))
            db = Database(config.database)
            db.check()
            self._app = App(config, db)
        if schema:
            require_current(self._app.db)
        return self._app


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SCBUNDLE_CONFIG", help="TOML config (default: $SCBUNDLE_CONFIG, then the user config dir, then the embedded local site)")
@click.version_option(__version__)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Run a pipeline stage's biggest batches on a remote supercomputer."""
    ctx.obj = Ctx(config_path)


def fail(message: str, code: int = 1) -> None:
    """One line on stderr, then exit ``code``."""
    click.echo(f"scbundle: error: {printable(message)}", err=True)
    sys.exit(code)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        make_console(stderr=True).print("aborted")
        sys.exit(130)
    except click.UsageError as err:  # a bad option or value: one line naming it (--help shows the rest)
        where = f"{err.ctx.command_path}: " if err.ctx is not None else ""
        fail(f"{where}{err.format_message()}", err.exit_code)
    except click.ClickException as err:
        fail(err.format_message(), err.exit_code)
    except ScbundleError as err:
        fail(str(err))
    except KeyboardInterrupt:
        click.echo("scbundle: interrupted", err=True)
        sys.exit(130)
    except SystemExit:
        raise
