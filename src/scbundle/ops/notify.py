"""Notifications: the journal is the outbox.

Each pass (the daemon's ``notify`` step) derives what a person should hear of from the journal
and the runs' states, writes one ``notification`` row per (event, address) with a unique key,
and sends the rows that are due through Apprise (one library for mail, Slack, Matrix, ntfy,
webhooks). The events (``[notify]`` rules choose among them, per label or globally):

- ``run_error``: a run event to ``error`` (its fault, message, and the run page under web_url);
- ``stage_full``: a run event to ``full`` after which every run of its label and stage is full
  (anchored at the newest such event, so every daemon derives the same key), with where the
  products are (the poll's ``products`` events);
- ``link_expiring``: a front end's last link event is its master started, and the site's
  ``drop_hours`` end within ``link_warn_minutes`` (anchored at the start event);
- ``link_down``: runs of a site are parked in ``auth`` (anchored at the first run event to auth
  since the site's last link start: one message a drop, none once the link is started again);
- ``throttle_held``: a step's throttle has held work back on a site (a ``hold`` event, no
  ``free`` after it) for longer than ``throttle_minutes``.

Sent once with several daemons and hosts on one database: the row's unique (kind, event_id,
target) lets one insert win, and a sender claims a row by compare-and-set (pending -> sending,
one UPDATE ... WHERE state = 'pending', atomic on SQLite, PostgreSQL and MariaDB) before it sends.
A sender that dies mid-send leaves a claim older than ``CLAIM_LEASE_S`` that the next pass takes
back (that message may then go twice: at least once, never lost). A failed send is logged and
tried again after ``retry_seconds``, doubling, until ``max_attempts``; it never stops the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scbundle.core.app import App, utcnow
from scbundle.core.config import Config, NotifySettings
from scbundle.core.errors import DatabaseError
from scbundle.core.secrets import hide_password
from scbundle.core.states import Fault, RunState
from scbundle.core.text import printable
from scbundle.db import journal
from scbundle.db.journal import Event
from scbundle.db.models import JournalEvent, Notification, RemoteRun

log = logging.getLogger("scbundle.notify")
CLAIM_LEASE_S = 600.0  # a claim older than this was left by a sender that died: taken back
MAX_BACKOFF_S = 6 * 3600.0
MARGIN_IDS = 200  # journal ids re-read below the cursor: a transaction may commit a smaller id later
STATES = ("pending", "sending", "sent", "failed")


# --- the pure part: rules, targets, events -----------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """One thing to tell: ``kind`` anchored at journal event ``event_id``."""

    kind: str
    event_id: int
    labels: frozenset[str]
    title: str
    body: str

    @property
    def label(self) -> str | None:
        return min(self.labels) if len(self.labels) == 1 else None


@dataclass(frozen=True)
class Target:
    """One URL of one rule, with what it wants; ``digest`` names it in the outbox."""

    url: str
    events: frozenset[str]
    labels: frozenset[str] | None
    rule: int  # 1-based, for messages
    digest: str

    def wants(self, notice: Notice) -> bool:
        if notice.kind not in self.events:
            return False
        return self.labels is None or bool(self.labels & notice.labels)

    @property
    def shown(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """An Apprise URL as a message may show it: its scheme and host, never a user, a password,
    a token in the path or the query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    return f"{parts.scheme}://{host}{port}" + ("/..." if parts.path.strip("/") or parts.query else "")


def targets(settings: NotifySettings) -> list[Target]:
    out = []
    for n, rule in enumerate(settings.rules, 1):
        labels = frozenset(rule.labels) if rule.labels is not None else None
        events = frozenset(rule.events)
        for url in rule.urls:
            key = "\0".join([url, ",".join(sorted(events)), ",".join(sorted(labels)) if labels is not None else "*"])
            out.append(Target(url, events, labels, n, hashlib.sha256(key.encode()).hexdigest()[:16]))
    return out


def _fault(n: int | None) -> str:
    try:
        return f"fault {n} ({Fault(n).name.lower()})"
    except ValueError:
        return f"fault {n}"


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def run_error_notice(ev: Event, web_url: str | None) -> Notice:
    body = (f"remote_id {ev.remote_id} (label {ev.label}, stage {ev.stage}, site {ev.site}) went from "
            f"{ev.src} to error ({ev.command}) at {_at(ev.at)}: {_fault(ev.fault)}: {ev.message or 'no message'}")  # fmt: skip
    if web_url:
        body += f"\nRun page: {web_url.rstrip('/')}/runs/{ev.remote_id}"
    body += f"\nWhen it is mended: scbundle revert --remote-id {ev.remote_id}"
    title = f"scbundle: remote_id {ev.remote_id} ({ev.label} {ev.stage}) error, {_fault(ev.fault)}"
    return Notice("run_error", ev.id, frozenset({ev.label}) if ev.label else frozenset(), title, body)


def products_where(messages: Iterable[str]) -> str | None:
    """The poll's ``products`` events of a stage ("remote_id N: K product(s) under DIR") as one
    line: how many products, under which directory."""
    total, dirs = 0, set()
    for m in messages:
        head, sep, where = m.partition(": ")
        count, sep2, folder = where.partition(" product(s) under ")
        if sep and sep2 and count.isdigit():
            total += int(count)
            dirs.add(folder)
    if not dirs:
        return None
    return f"{total} product(s) under {os.path.commonpath(sorted(dirs))}"


def stage_full_notice(label: str, stage: str, anchor: int, n_runs: int, where: str | None) -> Notice:
    body = f"All {n_runs} run(s) of label {label}, stage {stage} are full."
    body += f"\nProducts: {where}." if where else "\nThis stage brought back no permanent products."
    return Notice("stage_full", anchor, frozenset({label}), f"scbundle: {label} {stage} is all full", body)


@dataclass(frozen=True)
class LinkUp:
    """A front end whose last link event is its master started."""

    site: str
    host: str
    event_id: int
    at: datetime
    who: str
    drop_hours: float


def link_expiring_notice(link: LinkUp, now: datetime, warn_minutes: float) -> Notice | None:
    drops = link.at + timedelta(hours=link.drop_hours)
    left = (drops - now).total_seconds()
    if not 0 < left <= warn_minutes * 60:
        return None
    title = f"scbundle: the link to {link.site} ({link.host}) drops within {warn_minutes:g} min"
    body = (f"The master to {link.host} of site {link.site} was started at {_at(link.at)} by {link.who}; the site "
            f"drops it after {link.drop_hours:g} h, at {_at(drops)} (in {left / 60:.0f} min). "
            f"Log in again before then: scbundle link start {link.site}")  # fmt: skip
    return Notice("link_expiring", link.event_id, frozenset(), title, body)


def link_down_notice(site: str, anchor: int, parked: Sequence[tuple[int, str]], why: str | None) -> Notice:
    ids = sorted(r for r, _ in parked)
    shown = ", ".join(map(str, ids[:20])) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
    body = f"The link to site {site} is down; {len(ids)} run(s) are parked in auth: remote_id {shown}."
    if why:
        body += f"\n{why}"
    body += f"\nLog in (scbundle link start {site}), then: scbundle revert --auth"
    return Notice("link_down", anchor, frozenset(lbl for _, lbl in parked), f"scbundle: link to {site} down, {len(ids)} run(s) in auth", body)


def throttle_notice(hold: Event, now: datetime, minutes: float) -> Notice | None:
    age = (now - hold.at).total_seconds()
    if hold.dst != "held" or age < minutes * 60:
        return None
    title = f"scbundle: {hold.command} held back on {hold.site} for {age / 60:.0f} min"
    body = f"Since {_at(hold.at)} a throttle holds {hold.command} back on site {hold.site}: {hold.message}"
    return Notice("throttle_held", hold.id, frozenset({hold.label}) if hold.label else frozenset(), title, body)


def backoff(attempts: int, first_s: float) -> float:
    """Seconds before try ``attempts + 1``: ``first_s``, doubling, at most six hours."""
    return min(first_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)


# --- what the database says: the derivation's queries -----------------------------------------


def _new_run_events(s: Session, after_id: int | None, since: datetime) -> list[Event]:
    q = select(JournalEvent).where(JournalEvent.kind == "run", JournalEvent.dst.in_([RunState.ERROR, RunState.FULL]))
    q = q.where(JournalEvent.id > after_id) if after_id is not None else q.where(JournalEvent.at >= since)
    return [journal.from_row(r) for r in s.scalars(q.order_by(JournalEvent.id))]


def _stage_full(s: Session, label: str, stage: str) -> Notice | None:
    states = dict(s.execute(select(RemoteRun.state, func.count()).where(RemoteRun.label == label, RemoteRun.stage == stage)
                            .group_by(RemoteRun.state)).all())  # fmt: skip
    states.pop(RunState.RETIRED, None)  # taken out by the operator: not waited for
    if not states or set(states) != {RunState.FULL}:
        return None
    anchor = s.scalar(select(func.max(JournalEvent.id)).where(
        JournalEvent.kind == "run", JournalEvent.dst == RunState.FULL, JournalEvent.label == label, JournalEvent.stage == stage))  # fmt: skip
    if anchor is None:
        return None
    where = products_where(s.scalars(select(JournalEvent.message).where(
        JournalEvent.kind == "products", JournalEvent.label == label, JournalEvent.stage == stage)))  # fmt: skip
    return stage_full_notice(label, stage, anchor, states[RunState.FULL], where)


def _link_notices(s: Session, config: Config, settings: NotifySettings, now: datetime) -> list[Notice]:
    out: list[Notice] = []
    for name, site in config.sites.items():
        if site.ssh is None:
            continue
        for host in site.ssh.hosts:
            last = journal.last_link_event(s, name, host)
            if last is not None and last.dst == "up":
                n = link_expiring_notice(LinkUp(name, host, last.id, last.at, last.who, site.drop_hours), now, settings.link_warn_minutes)
                if n is not None:
                    out.append(n)
    parked: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for site_name, rid, label in s.execute(select(RemoteRun.site, RemoteRun.remote_id, RemoteRun.label).where(RemoteRun.state == RunState.AUTH)):
        parked[site_name].append((rid, label))
    for site_name, runs in sorted(parked.items()):
        last_up = s.scalar(select(func.max(JournalEvent.id)).where(
            JournalEvent.kind == "link", JournalEvent.site == site_name, JournalEvent.dst == "up")) or 0  # fmt: skip
        first = s.execute(select(JournalEvent.id, JournalEvent.message).where(
            JournalEvent.kind == "run", JournalEvent.site == site_name, JournalEvent.dst == RunState.AUTH,
            JournalEvent.id > last_up).order_by(JournalEvent.id).limit(1)).first()  # fmt: skip
        if first is not None:  # none: the link was started again since, the operator is on it
            out.append(link_down_notice(site_name, first.id, runs, first.message))
    return out


def _throttle_notices(s: Session, settings: NotifySettings, now: datetime) -> list[Notice]:
    newest = select(func.max(JournalEvent.id)).where(JournalEvent.kind == "hold").group_by(JournalEvent.site, JournalEvent.command)
    out = []
    for row in s.scalars(select(JournalEvent).where(JournalEvent.id.in_(newest))):
        n = throttle_notice(journal.from_row(row), now, settings.throttle_minutes)
        if n is not None:
            out.append(n)
    return out


def derive(s: Session, config: Config, *, after_id: int | None, now: datetime) -> tuple[list[Notice], int | None]:
    """Everything due now, and the cursor for the next pass (the newest run event seen)."""
    settings = config.notify
    evs = _new_run_events(s, after_id, now - timedelta(hours=settings.lookback_hours))
    notices = [run_error_notice(e, settings.web_url) for e in evs if e.dst == RunState.ERROR]
    for label, stage in dict.fromkeys((e.label, e.stage) for e in evs if e.dst == RunState.FULL and e.label and e.stage):
        if (n := _stage_full(s, label, stage)) is not None:
            notices.append(n)
    notices += _link_notices(s, config, settings, now)
    notices += _throttle_notices(s, settings, now)
    cursor = max((e.id for e in evs), default=after_id)
    return notices, cursor


# --- the outbox: rows, claims, sending ---------------------------------------------------------


def enqueue(app: App, notices: Sequence[Notice], tgts: Sequence[Target], now: datetime) -> int:
    """One row per (notice, target that wants it) not in the outbox yet; how many were added.
    A row another daemon added meanwhile loses its insert to the unique key, harmlessly."""
    wanted = {(n.kind, n.event_id, t.digest): (n, t) for n in notices for t in tgts if t.wants(n)}
    if not wanted:
        return 0
    with app.db.read_session() as s:
        have = set(s.execute(select(Notification.kind, Notification.event_id, Notification.target).where(
            Notification.event_id.in_({k[1] for k in wanted}))).tuples())  # fmt: skip
    added = 0
    for key, (n, t) in wanted.items():
        if key in have:
            continue
        try:
            with app.db.session() as s:
                s.add(Notification(kind=n.kind, event_id=n.event_id, target=t.digest, label=n.label, title=n.title[:250],
                                   body=n.body[:4000], state="pending", attempts=0, next_try=now, created=now))  # fmt: skip
            added += 1
        except DatabaseError as err:
            if not isinstance(err.__cause__, IntegrityError):
                raise
    return added


def send(url: str, title: str, body: str) -> str | None:
    """Send one message through Apprise; None when it went, else why not (a line, no secret)."""
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        return f"{redact(url)}: not a URL Apprise knows"
    with apprise.LogCapture(level=logging.WARNING) as captured:
        try:
            ok = ap.notify(title=title, body=body)
        except Exception as err:  # noqa: BLE001 - a notifier's failure is reported, never raised
            return f"{redact(url)}: {type(err).__name__}: {hide_password(str(err))}"
        said = captured.getvalue()
    if ok:
        return None
    lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
    why = " / ".join(lines[-3:]) if lines else "Apprise reported a failure"
    return printable(f"{redact(url)}: {hide_password(why.replace(url, redact(url)))}")[:1900]


@dataclass
class NotifyReport:
    added: int = 0
    sent: list[str] = field(default_factory=list)  # one line each
    failed: list[str] = field(default_factory=list)


def _take_back_stale(app: App, now: datetime) -> None:
    with app.db.session() as s:
        s.execute(update(Notification).where(Notification.state == "sending", Notification.claimed_at < now - timedelta(seconds=CLAIM_LEASE_S))
                  .values(state="pending", claimed_at=None, claimed_by=None))  # fmt: skip


def _claim(app: App, nid: int, attempts: int, now: datetime) -> bool:
    """Compare-and-set: the row is ours if it is still pending, due, and at the attempt we read
    (another sender may have tried it, put it back to wait, since this one read it)."""
    with app.db.session() as s:
        res = s.execute(update(Notification).where(Notification.id == nid, Notification.state == "pending",
                                                   Notification.attempts == attempts, Notification.next_try <= now)
                        .values(state="sending", claimed_at=now, claimed_by=journal.whoami()[:192]))  # fmt: skip
        return res.rowcount == 1


def deliver_due(app: App, tgts: Sequence[Target], now: datetime, report: NotifyReport, sender=send) -> None:
    settings = app.config.notify
    by_digest = {t.digest: t for t in tgts}
    _take_back_stale(app, now)
    with app.db.read_session() as s:
        due = list(s.execute(select(Notification.id, Notification.kind, Notification.event_id, Notification.target,
                                    Notification.title, Notification.body, Notification.attempts)
                             .where(Notification.state == "pending", Notification.next_try <= now)
                             .order_by(Notification.id).limit(100)))  # fmt: skip
    for row in due:
        if not _claim(app, row.id, row.attempts, now):
            continue  # another daemon has it
        t = by_digest.get(row.target)
        why = "its rule is no longer in [notify] rules" if t is None else sender(t.url, row.title, row.body)
        attempts = row.attempts + 1
        what = f"{row.kind} (journal event {row.event_id})"
        with app.db.session() as s:
            n = s.get(Notification, row.id)
            assert n is not None
            n.attempts, n.claimed_at, n.claimed_by = attempts, None, None
            if why is None:
                n.state, n.sent_at, n.last_error = "sent", utcnow(), None
                report.sent.append(f"{what} sent to {t.shown}")  # type: ignore[union-attr]
                continue
            n.last_error = why[:2000]
            if t is None or attempts >= settings.max_attempts:
                n.state = "failed"
                report.failed.append(f"{what}: {why}; gave up after {attempts} attempt(s) (`scbundle notify status`)")
            else:
                wait = backoff(attempts, settings.retry_seconds)
                n.state, n.next_try = "pending", utcnow() + timedelta(seconds=wait)
                report.failed.append(f"{what}: {why}; attempt {attempts} of {settings.max_attempts}, next in {wait:.0f} s")


class Notifier:
    """The daemon's notify step: remembers the last journal event it derived from."""

    def __init__(self, app: App, sender=send) -> None:
        self.app = app
        self.cursor: int | None = None
        self.sender = sender

    def step(self, now: datetime | None = None) -> NotifyReport:
        report = NotifyReport()
        tgts = targets(self.app.config.notify)
        if not tgts:
            return report
        now = now or utcnow()
        with self.app.db.read_session() as s:
            notices, cursor = derive(s, self.app.config, after_id=None if self.cursor is None else max(self.cursor - MARGIN_IDS, 0), now=now)
        report.added = enqueue(self.app, notices, tgts, now)
        self.cursor = cursor if self.cursor is None or (cursor or 0) > self.cursor else self.cursor
        deliver_due(self.app, tgts, now, report, self.sender)
        return report


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    event_id: int
    label: str | None
    title: str
    state: str
    attempts: int
    next_try: datetime
    last_error: str | None
    sent_at: datetime | None


def outbox(app: App, *, limit: int = 20) -> tuple[dict[str, int], list[OutboxRow]]:
    """Counts by state, and the newest ``limit`` rows that are not sent."""
    with app.db.read_session() as s:
        counts = {st: 0 for st in STATES} | dict(s.execute(select(Notification.state, func.count()).group_by(Notification.state)).tuples().all())
        rows = s.scalars(select(Notification).where(Notification.state != "sent").order_by(Notification.id.desc()).limit(limit)).all()
        return counts, [OutboxRow(r.id, r.kind, r.event_id, r.label, r.title, r.state, r.attempts, r.next_try, r.last_error, r.sent_at) for r in rows]
