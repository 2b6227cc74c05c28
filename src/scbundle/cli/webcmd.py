"""`scbundle web`: serve the operations console (src/scbundle/web)."""

from __future__ import annotations

import click

from scbundle.cli.main import Ctx, cli, pass_ctx
from scbundle.core.errors import ScbundleError


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (another than loopback exposes the console to the network)")
@click.option("--port", type=click.IntRange(1, 65535), default=8750, show_default=True)
@pass_ctx
def web(c: Ctx, host: str, port: int) -> None:
    """Serve the web console: overview, run pages, history, operator actions, /api."""
    try:
        from scbundle.web.server import serve
    except ImportError as err:
        raise ScbundleError(f"scbundle web needs the [web] extra (pip install 'scbundle[web]'): {err}") from None
    serve(c.app(), host=host, port=port)
