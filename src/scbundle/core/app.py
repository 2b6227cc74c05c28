"""What every step needs: the configuration, the database, the console."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console

from scbundle.core.config import Config, Site

if TYPE_CHECKING:  # the database layer sits above this one
    from scbundle.db.session import Database


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def make_console(*, stderr: bool = False) -> Console:
    """A console for a person: the terminal's width, or $COLUMNS when piped (80 if unset)."""
    width = None
    if not (sys.stderr if stderr else sys.stdout).isatty():
        try:
            width = int(os.environ.get("COLUMNS", "")) or None
        except ValueError:
            width = None
    return Console(stderr=stderr, width=width)


@dataclass
class App:
    config: Config
    db: Database
    console: Console = field(default_factory=make_console)

    def site(self, name: str) -> Site:
        return self.config.site(name)
