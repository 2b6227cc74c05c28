"""The `auth` state: exec or poll found the link down. Nothing else about the run changes;
`scbundle revert --auth` returns it to the state it came from."""

from __future__ import annotations

from collections.abc import Iterable

from scbundle.core.app import App, utcnow
from scbundle.core.states import RunState
from scbundle.core.text import printable
from scbundle.db.claims import claim_run
from scbundle.db.runs import get_run, move

PAUSABLE = (RunState.PENDING, RunState.RUN)


def mark_auth(app: App, remote_ids: Iterable[int], reason: str, *, by: str, claimed: bool = False) -> list[int]:
    """Runs still in pending/run go to auth, remembering where they were; returns their ids.
    Each is claimed first (``claimed``: this process already holds them); a run another
    process holds is skipped: that process meets the same dropped link and pauses it itself."""
    out = []
    for rid in remote_ids:
        if claimed:
            if _pause(app, rid, reason, by):
                out.append(rid)
            continue
        with claim_run(app.db, rid, PAUSABLE) as claim:
            if claim is not None and _pause(app, rid, reason, by):
                out.append(rid)
    return out


def _pause(app: App, remote_id: int, reason: str, by: str) -> bool:
    with app.db.session() as s:
        run = get_run(s, remote_id, lock=True)
        if run.state not in PAUSABLE:
            return False
        move(run, RunState.AUTH, by, message=printable(reason, multiline=True))  # ssh's stderr: the site's text
        run.last_poll = utcnow()
        return True
