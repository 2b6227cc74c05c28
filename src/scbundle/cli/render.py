"""What a person reads: rich tables sized to the terminal (or $COLUMNS when piped), the lines a
step pass reports, and JSON for scripts. Every string that came from a site is shown through
``printable`` and never as rich markup."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scbundle.core.text import printable, printable_data
from scbundle.steps.common import StepReport
from scbundle.steps.status import ComponentStatus, RunStatus

STATE_STYLE = {"full": "green", "error": "red", "auth": "yellow", "run": "cyan", "retired": "dim"}


def emit_json(data: object) -> None:
    """``--json``: the site's text in it without control characters (newlines kept, escaped)."""
    click.echo(json.dumps(printable_data(data), indent=1, default=str))


def echo(text: object, *, err: bool = False) -> None:
    """click.echo for a line that may carry the site's text (a job state, a message, a stderr
    tail): no escape sequence or other control character of it reaches the terminal."""
    click.echo(printable(text, multiline=True), err=err)


def rows_json(rows: Sequence[object]) -> list[dict]:
    return [asdict(r) if is_dataclass(r) else dict(r) for r in rows]  # type: ignore[arg-type]


def say(console: Console, text: object) -> None:
    """One line of plain text (site text included): no markup, no highlighting, wrapped."""
    console.print(Text(printable(text)), soft_wrap=True)  # a long line is the terminal's to wrap


def _cell(value: object) -> Text:
    return Text(printable("-" if value is None else value))


def _fit(console: Console, columns: list[tuple[str, bool, list[str]]]) -> list[int]:
    """Which columns fit the console's width: (name, required, values); the required ones
    always, the others in order while they fit (each takes its widest cell + 3 for the
    separators and padding)."""
    width = console.width
    need = [max(len(name), *(len(v) for v in values)) + 3 if values else len(name) + 3 for name, _, values in columns]
    keep = [i for i, (_, required, _) in enumerate(columns) if required]
    used = sum(need[i] for i in keep) + 1
    for i, (_, required, _) in enumerate(columns):
        if not required and used + need[i] <= width:
            keep.append(i)
            used += need[i]
    return sorted(keep)


def runs_table(console: Console, rows: list[RunStatus]) -> Table:
    """remote runs: state and stage are never cut (they are what an operator scans for);
    job_id and last_poll go first when the terminal is narrow, the label wraps."""
    cols: list[tuple[str, bool, list[str]]] = [
        ("remote_id", True, [str(r.remote_id) for r in rows]),
        ("label", True, []),  # wraps
        ("stage", True, [r.stage for r in rows]),
        ("state", True, [r.state for r in rows]),
        ("fault", True, [str(r.fault) for r in rows]),
        ("Njobs", True, [str(r.njobs) for r in rows]),
        ("Ngood", True, [str(r.ngood) for r in rows]),
        ("Nfail", True, [str(r.nfail) for r in rows]),
        ("Npend", False, [str(r.npending) for r in rows]),
        ("Nabandon", False, [str(r.nabandoned) for r in rows]),
        ("job_id", False, [printable(r.job_id or "-") for r in rows]),
        ("last_poll", False, [r.last_poll or "-" for r in rows]),
    ]
    keep = _fit(console, cols)
    t = Table(title="remote runs", title_justify="left")
    for i in keep:
        name = cols[i][0]
        right = name[0].isupper() or name in ("remote_id", "fault")
        if name in ("stage", "state"):
            t.add_column(name, no_wrap=True, min_width=max([len(name), *(len(v) for v in cols[i][2])]))
        elif name == "label":
            t.add_column(name, overflow="fold", min_width=5)
        else:
            t.add_column(name, justify="right" if right else "left", no_wrap=True)
    for r in rows:
        cells = {
            "remote_id": _cell(r.remote_id), "label": _cell(r.label), "stage": _cell(r.stage),
            "state": Text(printable(r.state), style=STATE_STYLE.get(r.state, "")), "fault": _cell(r.fault),
            "job_id": _cell(r.job_id), "Njobs": _cell(r.njobs), "Ngood": _cell(r.ngood), "Nfail": _cell(r.nfail),
            "Npend": _cell(r.npending), "Nabandon": _cell(r.nabandoned), "last_poll": _cell(r.last_poll),
        }  # fmt: skip
        t.add_row(*(cells[cols[i][0]] for i in keep))
    dropped = [cols[i][0] for i in range(len(cols)) if i not in keep]
    if dropped:
        t.caption = f"not shown at {console.width} columns: {', '.join(dropped)} (--json has everything)"
    return t


def components_table(console: Console, remote_id: int, rows: list[ComponentStatus], *, limit: int | None = 50) -> Table:
    t = Table(title=f"components of remote_id {remote_id}", title_justify="left")
    for col in ("stage_id", "state", "fault", "attempts", "exit", "rank", "seconds"):
        t.add_column(col, no_wrap=True)
    t.add_column("message", overflow="fold", ratio=1)
    for c in rows[:limit] if limit else rows:
        t.add_row(
            _cell(c.stage_id), Text(c.state, style=STATE_STYLE.get(c.state, "")), _cell(c.fault), _cell(c.attempts),
            _cell(c.exit_code), _cell(c.rank), _cell(None if c.seconds is None else f"{c.seconds:.3f}"), _cell(c.message or ""),
        )  # fmt: skip
    if limit and len(rows) > limit:
        t.caption = f"{len(rows) - limit} more not shown (--all)"
    return t


def report_pass(rep: StepReport, step: str) -> None:
    """The lines every step pass prints on stderr: switched off, held back, paused for auth."""
    if rep.skipped:
        click.echo(printable(rep.skipped), err=True)
    for why in dict.fromkeys(rep.held):
        click.echo(f"held back: {printable(why)}", err=True)
    if rep.auth:
        ids = ", ".join(map(str, rep.auth))
        click.echo(
            f"link down: remote_id {ids} -> auth, nothing else changed ({printable(rep.auth_reason)}); "
            "after `scbundle link start`, run `scbundle revert --auth`",
            err=True,
        )


def nothing(rep: StepReport) -> bool:
    return not (rep.results or rep.auth or rep.held or rep.skipped)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    m, _ = divmod(int(abs(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{sign}{h}h{m:02d}m"


def service_cell(sv: dict | None) -> Text:
    """A front end's service state (`link host off|on`): in / out, since when, by whom, why."""
    if not sv or sv["in_service"]:
        return Text("in service", style="green")
    why = f": {sv['why']}" if sv.get("why") else ""
    return Text(printable(f"OUT since {sv['since'][:19].replace('T', ' ')} UTC by {sv['by']}{why}"), style="red")


def link_table(statuses, service: dict[str, dict] | None = None) -> Table:
    t = Table(title="link", title_justify="left")
    for col in ("site", "host", "user", "state", "pid", "since", "age", "left before drop", "service"):
        t.add_column(col)
    for m in statuses:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.since)) if m.since else "-"
        state = Text("up, drop soon", style="yellow") if m.warn else Text("up", style="green") if m.up else Text("down", style="red")
        t.add_row(_cell(m.site), _cell(m.host), _cell(m.user), state, _cell(m.pid or "-"), since, fmt_duration(m.age_s), fmt_duration(m.left_s),
                  service_cell((service or {}).get(m.host)))  # fmt: skip
    return t
