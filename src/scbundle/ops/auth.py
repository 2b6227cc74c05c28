"""The `auth` state: exec or poll found the link down. Nothing else about the run changes;
`scbundle revert --auth` returns it to the state it came from."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from scbundle.core.app import App, utcnow
from scbundle.core.states import RunState
from scbundle.core.text import printable
from scbundle.db.models import RemoteRun


def mark_auth(app: App, remote_ids: Iterable[int], reason: str) -> list[int]:
    """Runs still in pending/run go to auth, remembering where they were; returns their ids.
    A run another process has claimed is skipped (PostgreSQL: SKIP LOCKED): that process meets
    the same dropped link and pauses it itself."""
    with app.db.session() as s:
        return mark_auth_in(s, remote_ids, reason)


def mark_auth_in(s: Session, remote_ids: Iterable[int], reason: str) -> list[int]:
    """mark_auth inside a transaction the caller holds (a claim's)."""
    ids = list(remote_ids)
    if not ids:
        return []
    runs = s.scalars(
        select(RemoteRun)
        .where(RemoteRun.remote_id.in_(ids), RemoteRun.state.in_([RunState.PENDING, RunState.RUN]))
        .order_by(RemoteRun.remote_id)
        .with_for_update(skip_locked=True)
    ).all()
    for run in runs:
        run.prev_state, run.state = run.state, RunState.AUTH
        run.last_poll = utcnow()
        run.message = printable(reason, multiline=True)[:2000]  # ssh's stderr: the site's text
    return [r.remote_id for r in runs]
