"""Notifications in one process: the [notify] rules, the events derived from journal rows on a
SQLite file, the outbox's once-only rows and its retries (a sender stand-in that records what it
was given: the real Apprise to real receivers is tests/integration/test_notify_real.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scbundle.core.app import App
from scbundle.core.config import config_from_dict, embedded_default
from scbundle.core.errors import ConfigError
from scbundle.db import journal
from scbundle.db.migrate import upgrade
from scbundle.db.models import Notification, RemoteRun
from scbundle.db.runs import move
from scbundle.db.session import Database
from scbundle.ops.notify import Notifier, backoff, products_where, redact, targets

NOW = datetime(2026, 12, 2, 12, 0, 0)


def config(tmp_path: Path, rules: list[dict], **notify) -> dict:
    d = embedded_default(tmp_path)
    d["database"] = f"sqlite:///{tmp_path / 'n.db'}"
    d["sites"]["fe"] = {**d["sites"]["local"], "link": "ssh", "drop_hours": 12.0, "ssh": {"hosts": ["fe1"], "user": "me"}}
    d["notify"] = {"rules": rules, **notify}
    return d


def test_notify_section_is_strict_and_names_the_bad_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'notify.rules.0.url'"):
        config_from_dict(config(tmp_path, [{"url": ["json://x"]}]), "c.toml")
    with pytest.raises(ConfigError, match=r"notify.rules.0.events.0: Input should be 'stage_full'"):
        config_from_dict(config(tmp_path, [{"urls": ["json://x"], "events": ["run_eror"]}]), "c.toml")
    with pytest.raises(ConfigError, match=r"notify.rules.0.urls: an Apprise URL is scheme://"):
        config_from_dict(config(tmp_path, [{"urls": ["ops@example.org"]}]), "c.toml")
    with pytest.raises(ConfigError, match=r"unknown key 'notify.web'"):
        config_from_dict(config(tmp_path, [], web="x"), "c.toml")


def test_rules_pick_events_and_labels_and_a_url_never_shows_its_secret(tmp_path):
    c = config_from_dict(config(tmp_path, [
        {"urls": ["mailtos://ops:s3cret@mail.example.org?to=a@b.org", "json://hook.example.org:8080/p"]},
        {"urls": ["slack://T0/B0/tok3n"], "events": ["run_error"], "labels": ["night"]},
    ]), "c.toml")  # fmt: skip
    t = targets(c.notify)
    assert [x.rule for x in t] == [1, 1, 2] and len({x.digest for x in t}) == 3
    assert redact(t[0].url) == "mailtos://mail.example.org/..." and "s3cret" not in t[0].shown
    assert redact("slack://T0/B0/tok3n") == "slack://t0/..."


def test_backoff_doubles_to_a_cap():
    assert [backoff(n, 30) for n in (1, 2, 3)] == [30, 60, 120] and backoff(40, 30) == 6 * 3600


def test_products_where_sums_and_finds_the_common_folder():
    assert products_where(["remote_id 1: 3 product(s) under /data/r0/chip/a", "remote_id 2: 2 product(s) under /data/r0/chip/b"]) == \
        "5 product(s) under /data/r0/chip"  # fmt: skip
    assert products_where([]) is None


class Recorder:
    """A sender: what it was asked to send; fails the first ``fail`` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.fail = fail

    def __call__(self, url: str, title: str, body: str) -> str | None:
        if self.fail:
            self.fail -= 1
            return f"{redact(url)}: HTTP 500"
        self.sent.append((url, title, body))
        return None


@pytest.fixture
def app(tmp_path: Path) -> App:
    c = config_from_dict(config(tmp_path, [
        {"urls": ["json://all.example.org/"]},
        {"urls": ["json://night.example.org/"], "events": ["run_error", "stage_full"], "labels": ["night"]},
    ], web_url="https://console.example.org/", retry_seconds=30, max_attempts=3), "c.toml")  # fmt: skip
    db = Database(c.database)
    upgrade(db)
    return App(c, db)


def add_run(app: App, rid: int, label: str, state: str = "run", site: str = "local") -> None:
    with app.db.session() as s:
        s.add(RemoteRun(remote_id=rid, stage="chip", label=label, site=site, state=state, attempt=1, fault=0, job_policy="fatal"))


def to(app: App, rid: int, state: str, by: str = "poll", **kw) -> None:
    with app.db.session() as s:
        run = s.get(RemoteRun, rid)
        move(run, state, by, **kw)


def rows(app: App) -> list[tuple]:
    with app.db.read_session() as s:
        return [(n.kind, n.state, n.attempts) for n in s.query(Notification).order_by(Notification.id)]


def test_a_run_error_goes_once_to_the_rules_of_its_label_with_its_fault_and_page(app):
    add_run(app, 1, "night")
    add_run(app, 2, "day")
    to(app, 1, "error", fault=5, message="1 of 8 component(s) failed")
    to(app, 2, "error", fault=2, message="ssh: exit 255")
    rec = Recorder()
    n = Notifier(app, sender=rec)
    n.step()
    n.step()  # again, and a second daemon from scratch: nothing more
    Notifier(app, sender=rec).step()
    got = sorted((url, title) for url, title, _ in rec.sent)
    assert got == [
        ("json://all.example.org/", "scbundle: remote_id 1 (night chip) error, fault 5 (data)"),
        ("json://all.example.org/", "scbundle: remote_id 2 (day chip) error, fault 2 (system)"),
        ("json://night.example.org/", "scbundle: remote_id 1 (night chip) error, fault 5 (data)"),
    ]
    body = next(b for u, t, b in rec.sent if "remote_id 1" in t)
    assert "1 of 8 component(s) failed" in body and "Run page: https://console.example.org/runs/1" in body
    assert rows(app) == [("run_error", "sent", 1)] * 3


def test_a_stage_is_told_full_once_when_its_last_run_is_full_with_where_the_products_are(app):
    for rid in (1, 2):
        add_run(app, rid, "night")
    rec = Recorder()
    n = Notifier(app, sender=rec)
    to(app, 1, "full")
    n.step()
    assert rec.sent == []  # run 2 still runs
    with app.db.session() as s:
        journal.record(s, kind="products", command="poll", label="night", stage="chip", message="remote_id 2: 4 product(s) under /d/night/x")
    to(app, 2, "full")
    n.step()
    Notifier(app, sender=rec).step()
    assert sorted(t for _, t, _ in rec.sent) == ["scbundle: night chip is all full"] * 2
    assert "All 2 run(s) of label night, stage chip are full.\nProducts: 4 product(s) under /d/night/x." in rec.sent[0][2]


def test_the_link_is_told_due_to_drop_in_its_last_hour_and_down_once_a_drop(app):
    with app.db.session() as s:
        journal.record(s, kind="link", command="link", site="fe", src="down", dst="up", message="fe1: master started as me")
    with app.db.session() as s:
        start = s.query(journal.JournalEvent).one()
        start_at = start.at
    rec = Recorder()
    n = Notifier(app, sender=rec)
    n.step(now=start_at + timedelta(hours=10))
    assert rec.sent == []
    n.step(now=start_at + timedelta(hours=11, minutes=20))
    n.step(now=start_at + timedelta(hours=11, minutes=40))
    assert [t for _, t, _ in rec.sent] == ["scbundle: the link to fe (fe1) drops within 60 min"]
    assert "in 40 min" in rec.sent[0][2] and "scbundle link start fe" in rec.sent[0][2]
    add_run(app, 7, "night", site="fe")
    add_run(app, 8, "day", site="fe")
    to(app, 7, "auth", by="poll", message="poll: link down")
    to(app, 8, "auth", by="poll", message="poll: link down")
    rec.sent.clear()
    n.step()
    n.step()
    assert [t for _, t, _ in rec.sent] == ["scbundle: link to fe down, 2 run(s) in auth"]
    assert "remote_id 7, 8" in rec.sent[0][2]
    with app.db.session() as s:  # the operator logs in again: no more "down" while runs wait for revert
        journal.record(s, kind="link", command="link", site="fe", src="down", dst="up", message="fe1: master started as me")
    rec.sent.clear()
    n.step()
    assert rec.sent == []


def test_a_throttle_is_told_once_it_held_work_back_longer_than_the_set_time(app):
    with app.db.session() as s:
        assert journal.throttle_changed(s, site="local", step="exec", held="max_in_flight: 2 runs in flight", label="night")
    with app.db.session() as s:  # the next pass, still held: no second event
        assert not journal.throttle_changed(s, site="local", step="exec", held="max_in_flight: 2 runs in flight")
        held_at = s.query(journal.JournalEvent).one().at
    rec = Recorder()
    n = Notifier(app, sender=rec)
    n.step(now=held_at + timedelta(minutes=59))
    assert rec.sent == []
    n.step(now=held_at + timedelta(minutes=61))
    n.step(now=held_at + timedelta(minutes=90))
    assert [t for _, t, _ in rec.sent] == ["scbundle: exec held back on local for 61 min"]
    with app.db.session() as s:
        assert journal.throttle_changed(s, site="local", step="exec", held=None)
    n.step(now=held_at + timedelta(hours=5))
    assert len(rec.sent) == 1


def test_a_failing_notifier_is_retried_with_backoff_then_given_up(app):
    add_run(app, 1, "day")
    to(app, 1, "error", fault=6, message="walltime")
    rec = Recorder(fail=99)
    n = Notifier(app, sender=rec)
    rep = n.step()
    assert rows(app) == [("run_error", "pending", 1)] and "attempt 1 of 3, next in 30 s" in rep.failed[0]
    n.step()  # not due yet
    assert rows(app) == [("run_error", "pending", 1)]
    with app.db.session() as s:
        s.query(Notification).update({"next_try": datetime(2000, 1, 1)})
    n.step()
    with app.db.session() as s:
        s.query(Notification).update({"next_try": datetime(2000, 1, 1)})
    rep = n.step()
    assert rows(app) == [("run_error", "failed", 3)] and "gave up after 3 attempt(s)" in rep.failed[0]
    with app.db.read_session() as s:
        assert s.query(Notification).one().last_error == "json://all.example.org: HTTP 500"


def test_a_sender_that_read_a_row_before_another_tried_it_cannot_claim_it(app):
    """Two daemons: B read the row at attempt 0, A tried it (500) and put it back to wait; B's
    claim must fail, or B would send it at once and count its attempt from the stale read."""
    from scbundle.ops.notify import _claim

    add_run(app, 1, "day")
    to(app, 1, "error", fault=6, message="walltime")
    Notifier(app, sender=Recorder(fail=1)).step()  # A: tried once, failed
    with app.db.session() as s:
        s.query(Notification).update({"next_try": datetime(2000, 1, 1)})
    with app.db.read_session() as s:
        first = s.query(Notification).order_by(Notification.id).first()
    assert not _claim(app, first.id, 0, datetime(2100, 1, 1))  # B, from its read before A's try
    assert rows(app)[0] == ("run_error", "pending", 1)
    assert _claim(app, first.id, 1, datetime(2100, 1, 1))
