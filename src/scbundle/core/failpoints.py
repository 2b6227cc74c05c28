"""Named crash points for the crash-safety tests: SCBUNDLE_FAILPOINT=<name> makes the process
kill itself (SIGKILL, no cleanup) when it reaches that point. Unset, it costs one dict lookup.

SCBUNDLE_FAILPOINT=<name>@<path> pauses there instead: the process creates ``<path>.reached``
and waits (at most 10 minutes) until ``<path>`` exists, so a test can act in the middle of a
step (restart the database server under a replay) and then let it go on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def failpoint(name: str) -> None:
    value = os.environ.get("SCBUNDLE_FAILPOINT")
    if value == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif value and value.startswith(name + "@"):
        _pause(Path(value[len(name) + 1 :]))


def _pause(go: Path, timeout: float = 600.0) -> None:
    go.with_name(go.name + ".reached").touch()
    deadline = time.monotonic() + timeout
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
