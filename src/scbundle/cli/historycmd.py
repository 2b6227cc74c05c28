"""`scbundle history`: the journal, newest last: every state change of a run (with the command
that made it, the host and process, and for a poll what it replayed), the link's events and
the task switches, with who did them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import click
from rich.table import Table
from rich.text import Text

from scbundle.cli.main import Ctx, RemoteId, cli, pass_ctx
from scbundle.cli.render import STATE_STYLE, emit_json
from scbundle.db.journal import Event

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"(?:\d{1,9}[smhdw])+")


def parse_since(text: str, now: datetime) -> datetime:
    """The UTC time (naive, as the journal stores it) ``--since`` names: a relative age before
    ``now`` (``90s``, ``30m``, ``2h``, ``1d12h``, ``1w``), or an ISO time (``2026-12-01``,
    ``2026-12-01T22:00``, ``2026-12-01 22:00:00+01:00``; one without a zone is UTC). ValueError
    with the reason otherwise. Pure."""
    t = text.strip().lower()
    if _RELATIVE.fullmatch(t):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", t))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO time (2026-12-01T22:00, UTC unless it says) nor an age (30m, 2h, 1d)") from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when


class Since(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value), datetime.now(UTC).replace(tzinfo=None))
        except ValueError as err:
            self.fail(str(err), param, ctx)


def event_json(e: Event) -> dict:
    """One event as `history --json` (and the web API after it) shows it."""
    return {
        "id": e.id, "at": e.at.isoformat(timespec="seconds") + "Z", "kind": e.kind, "command": e.command, "daemon": e.daemon,
        "remote_id": e.remote_id, "label": e.label, "stage": e.stage, "site": e.site, "from": e.src, "to": e.dst,
        "fault": e.fault, "message": e.message,
        "counts": None if e.counts is None else {"good": e.counts.good, "failed": e.counts.failed,
                                                  "abandoned": e.counts.abandoned, "refused": e.counts.refused},
        "host": e.host, "pid": e.pid, "who": e.who,
    }  # fmt: skip


def _state(s: str | None) -> Text:
    return Text(s or "-", style=STATE_STYLE.get(s or "", ""))


def history_table(events: list[Event]) -> Table:
    t = Table(title="history (UTC, newest last)", title_justify="left")
    for col in ("id", "at", "remote_id / site", "label", "stage / kind", "command", "from", "", "to", "fault", "good/failed/aband./refused", "message", "who"):
        t.add_column(col)
    for e in events:
        counts = f"{e.counts.good}/{e.counts.failed}/{e.counts.abandoned}/{e.counts.refused}" if e.counts else ""
        t.add_row(
            str(e.id), e.at.strftime("%Y-%m-%d %H:%M:%S"), Text(str(e.remote_id or e.site or "")), Text(e.label or ""),
            Text(e.stage or e.kind), Text(e.command + (" (daemon)" if e.daemon else "")), _state(e.src), "→", _state(e.dst),
            str(e.fault) if e.fault else "", counts, Text(e.message or ""), Text(f"{e.who} pid {e.pid}"),
        )  # fmt: skip
    return t


@cli.command()
@click.option("--label", default=None, help="only this label's runs")
@click.option("--remote-id", type=RemoteId, default=None, help="only this run")
@click.option("--since", type=Since(), default=None, help="only events since: an ISO time (UTC unless it says) or an age (30m, 2h, 1d)")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def history(c: Ctx, label: str | None, remote_id: int | None, since: datetime | None, as_json: bool) -> None:
    """The journal: what happened to runs, the link and the task switches, newest last."""
    from scbundle.db.journal import events

    app = c.app()
    with app.db.read_session() as s:
        rows = events(s, label=label, remote_id=remote_id, since=since)
    if as_json:
        emit_json([event_json(e) for e in rows])
        return
    app.console.print(history_table(rows))
