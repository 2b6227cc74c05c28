"""Named crash points for the crash-safety tests: SCBUNDLE_FAILPOINT=<name> makes the process
kill itself (SIGKILL, no cleanup) when it reaches that point. Unset, it costs one dict lookup."""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("SCBUNDLE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
