"""The `scbundle` command: the group and its context (main.py), one module per command group
(runs, db, link, tasks, demo, the daemon), and what a person reads (render.py)."""

from scbundle.cli import (  # noqa: F401 - each adds its commands
    daemon,
    dbcmd,
    democmd,
    historycmd,
    linkcmd,
    notifycmd,
    runs,
    sitecmd,
    taskscmd,
    webcmd,
    workcmd,
)
from scbundle.cli.main import cli, main

__all__ = ["cli", "main"]
