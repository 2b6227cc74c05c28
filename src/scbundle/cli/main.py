"""The `scbundle` command group, its context, and the one place failures become one line."""

from __future__ import annotations

import importlib.metadata as md
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


COMMANDS_GROUP = "scbundle.commands"  # a plugin's own commands, mounted under `scbundle`


class PluginGroup(click.Group):
    """scbundle's commands, and those plugins mount through entry points of the group
    ``scbundle.commands`` (``sources = "scbundle_sources.cli:group"``: a click command or group).
    A plugin's module is imported only when its command runs, so a broken plugin breaks
    only its own command, and the error names it."""

    def _entries(self) -> dict[str, md.EntryPoint]:
        return {ep.name: ep for ep in md.entry_points(group=COMMANDS_GROUP) if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._entries()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._entries().get(name)
        if ep is None:
            return None
        dist = ep.dist.name if ep.dist is not None else "an unnamed distribution"
        try:
            obj = ep.load()
        except Exception as err:  # a plugin's import error, of any kind
            raise ScbundleError(f"command {name!r} ({ep.value} from {dist}) cannot be loaded: {type(err).__name__}: {err}") from err
        if not isinstance(obj, click.Command):
            raise ScbundleError(f"command {name!r} ({ep.value} from {dist}) is not a click command: {obj!r}")
        return obj


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
