"""Notifications end to end: two real `scbundle daemon` processes on one database (SQLite, and a
real PostgreSQL) carry two chip runs on the embedded `local` site, one to error and one to full,
and send what happened through the real Apprise to a real SMTP server (aiosmtpd, on loopback)
and a webhook receiver (http.server, Apprise json://) that answers 500 to its first request.
Checks: one mail per event and one delivered webhook per event, however many daemons; the
failed webhook was retried and went; the daemons kept working and stopped cleanly."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import tomli_w
from test_concurrency import make_env, seed

from scbundle.core.config import embedded_default

aiosmtpd = pytest.importorskip("aiosmtpd.controller")


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], str, str]] = []  # from, to, subject, body

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = message_from_bytes(envelope.content)
        body = next((p.get_payload(decode=True).decode() for p in msg.walk() if p.get_content_type() == "text/plain"), "")
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), str(make_header(decode_header(msg["Subject"]))), body))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    box = Mailbox()
    ctl = aiosmtpd.Controller(box, hostname="127.0.0.1", port=free_port())
    ctl.start()
    yield box, ctl.port
    ctl.stop()


@pytest.fixture
def webhook():
    """Receives Apprise's json:// posts; the first one gets a 500."""
    got: dict[str, list] = {"ok": [], "refused": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            first = not got["refused"]
            got["refused" if first else "ok"].append(data)
            self.send_response(500 if first else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield got, srv.server_address[1]
    srv.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path: Path):
    if request.param == "sqlite":
        yield make_env(tmp_path, "sqlite")
        return
    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield make_env(tmp_path, "postgresql", server.create_database(name))
    server.drop_database(name)


def test_two_daemons_send_one_mail_per_event_and_retry_a_failing_webhook(env, smtp, webhook):
    box, smtp_port = smtp
    hook, hook_port = webhook
    cfg = embedded_default(env.cli.home)
    cfg["database"] = env.url
    cfg["notify"] = {"retry_seconds": 1, "web_url": "http://console.example.org", "rules": [
        {"urls": [f"mailto://127.0.0.1:{smtp_port}?from=scbundle@example.org&to=ops@example.org&mode=insecure"]},
        {"urls": [f"json://127.0.0.1:{hook_port}/hook"], "events": ["run_error", "stage_full"]},
    ]}  # fmt: skip
    env.config_path.write_text(tomli_w.dumps(cfg))
    bad, good = seed(env, runs=2, per_run=4)
    raw = Path(env.q("select uri from imfile where imfile_id = 3")[0][0])  # in the first run
    raw.write_bytes(b"SCRAW1 64 64\n" + b"\0" * 10)  # truncated pixels: a data fault (5)
    env.cli("tasks", "off", "advance")  # the chip stage only
    daemons = [env.scbundle("daemon", "--loop-seconds", "1", "--poll-seconds", "0") for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        while True:
            states = dict(env.q("select remote_id, state from remote_run"))
            pending = env.q("select count(*) from notification where state <> 'sent'") if states == {bad: "error", good: "full"} else [(1,)]
            if pending == [(0,)] and len(box.mails) >= 2 and len(hook["ok"]) >= 2:
                break
            assert all(d.poll() is None for d in daemons), "a daemon stopped"
            assert time.monotonic() < deadline, f"not done: runs {states}, {len(box.mails)} mail(s), webhook {hook}"
            time.sleep(0.5)
        time.sleep(4)  # a few more passes of both daemons: nothing is sent twice
        assert all(d.poll() is None for d in daemons), "a daemon stopped"
    finally:
        for d in daemons:
            d.send_signal(signal.SIGTERM)
        outs = [d.communicate(timeout=60) for d in daemons]
    assert [d.returncode for d in daemons] == [0, 0], outs
    error_title = f"scbundle: remote_id {bad} (r0 chip) error, fault 5 (data)"
    full_title = "scbundle: r1 chip is all full"
    assert sorted(subject for _, _, subject, _ in box.mails) == sorted([error_title, full_title])
    assert all(m[:2] == ("scbundle@example.org", ["ops@example.org"]) for m in box.mails)
    bodies = {subject: body for _, _, subject, body in box.mails}
    assert f"Run page: http://console.example.org/runs/{bad}" in bodies[error_title]
    assert "1 of 4 component(s) failed" in bodies[error_title]
    where = " ".join(bodies[full_title].split())  # the mail's plain part may fold the lines
    assert f"All 1 run(s) of label r1, stage chip are full. Products: 8 product(s) under {env.cli.home}/data/chip/r1" in where
    # the webhook: its first post refused, tried again, then every event exactly once
    assert len(hook["refused"]) == 1
    assert sorted(p["title"] for p in hook["ok"]) == sorted([error_title, full_title])
    assert hook["refused"][0]["title"] in (error_title, full_title)
    retried = "run_error" if hook["refused"][0]["title"] == error_title else "stage_full"
    once = {"run_error": "stage_full", "stage_full": "run_error"}[retried]
    rows = env.q("select kind, state, attempts from notification")
    assert sorted(rows) == sorted([("run_error", "sent", 1), ("stage_full", "sent", 1), (retried, "sent", 2), (once, "sent", 1)]), (rows, hook)
    logs = "".join(out for out, _ in outs)
    assert "notify:" in logs and "attempt 1 of 10, next in 1 s" in logs
    status = env.cli.json("notify", "status", "--json")
    assert status["counts"] == {"pending": 0, "sending": 0, "sent": 4, "failed": 0}


def test_notify_test_says_which_url_failed_and_status_counts_the_outbox(tmp_path, webhook):
    hook, hook_port = webhook
    e = make_env(tmp_path, "sqlite")
    cfg = embedded_default(e.cli.home)
    cfg["notify"] = {"rules": [{"urls": [f"json://127.0.0.1:{hook_port}/hook"]}]}
    e.config_path.write_text(tomli_w.dumps(cfg))
    e.cli("db", "upgrade")
    first = e.cli("notify", "test", check=False)  # the receiver refuses its first request
    assert first.returncode == 1 and f"rule 1 json://127.0.0.1:{hook_port}/...: FAILED: json://127.0.0.1:{hook_port}/..." in first.stdout
    again = e.cli("notify", "test")
    assert again.stdout.strip() == f"rule 1 json://127.0.0.1:{hook_port}/...: sent"
    assert [p["title"] for p in hook["ok"]] == ["scbundle: test message"]
    assert e.cli("notify", "status").stdout.strip() == "0 pending, 0 sending, 0 sent, 0 failed"
