"""The `auth` state: exec or poll found the link down. Nothing else about the run changes;
`scbundle revert --auth` returns it to the state it came from."""

from __future__ import annotations

from collections.abc import Iterable

from .app import App, utcnow
from .db.models import RemoteRun
from .states import RunState


def mark_auth(app: App, remote_ids: Iterable[int], reason: str) -> list[int]:
    """Runs still in pending/run go to auth, remembering where they were; returns their ids."""
    moved = []
    with app.db.session() as s:
        for rid in remote_ids:
            run = s.get(RemoteRun, rid)
            if run is None or run.state not in (RunState.PENDING, RunState.RUN):
                continue
            run.prev_state, run.state = run.state, RunState.AUTH
            run.last_poll = utcnow()
            run.message = reason[:2000]
            moved.append(rid)
    return moved
