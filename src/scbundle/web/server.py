"""Serve the console with uvicorn (the one place a socket is opened)."""

from __future__ import annotations

from scbundle.core.app import App
from scbundle.web.app import create_app
from scbundle.web.auth import Keyring


def serve(app: App, *, host: str, port: int) -> None:
    import uvicorn

    keyring = Keyring.from_settings(app.config.web)  # no token: one line, before binding
    uvicorn.run(create_app(app, keyring), host=host, port=port, log_level="info", access_log=True,
                server_header=False, proxy_headers=False)  # fmt: skip
