"""The journal on SQLite and a real PostgreSQL: real `scbundle` processes on the embedded
`local` site carry a chip run through an error, a revert and on to full and advance; every
check reads the journal's rows (`history --json`) against what the run went through."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import test_concurrency
import tomli_w
from sqlalchemy import create_engine, text
from test_concurrency import seed, wait_for_jobs

env = test_concurrency.env  # the fixture: SQLite, and a real PostgreSQL (pg_server)
ME = f"{getpass.getuser()}@{socket.gethostname()}"


def history(env, *args: str) -> list[dict]:
    return json.loads(env.cli("history", "--json", *args).stdout)


def steps(events: list[dict]) -> list[tuple]:
    return [(e["command"], e["from"], e["to"], e["fault"], e["counts"] and tuple(e["counts"].values())) for e in events]


def run_once(env, rid: int) -> None:
    env.cli("prepare", "chip", "--remote-id", str(rid))
    env.cli("exec", "--remote-id", str(rid))
    env.cli("poll", "--remote-id", str(rid), "--wait", "240")


def test_a_run_through_error_revert_full_and_advance_has_exactly_its_events(env):
    (rid,) = seed(env, runs=1, per_run=8)
    raw = Path(env.q("select uri from imfile where imfile_id = 3")[0][0])
    good = raw.read_bytes()
    raw.write_bytes(b"SCRAW1 64 64\n" + b"\0" * 10)  # truncated pixels: a data fault (5)
    run_once(env, rid)
    assert env.q("select state, fault from remote_run") == [("error", 5)]
    env.cli("revert", "--remote-id", str(rid))
    raw.write_bytes(good)  # the input mended
    run_once(env, rid)
    assert env.q("select state, fault from remote_run where remote_id = :r", r=rid) == [("full", 0)]
    env.cli("advance")
    ev = history(env, "--remote-id", str(rid))
    assert steps(ev) == [
        ("define", None, "new", 0, None),
        ("prepare", "new", "pending", 0, None),
        ("exec", "pending", "run", 0, None),
        ("poll", "run", "error", 5, (7, 1, 0, 0)),  # good, failed, abandoned, refused
        ("revert", "error", "new", 0, None),
        ("prepare", "new", "pending", 0, None),
        ("exec", "pending", "run", 0, None),
        ("poll", "run", "full", 0, (1, 0, 0, 0)),  # only the reverted component ran again
    ]
    assert [e["id"] for e in ev] == sorted(e["id"] for e in ev)
    assert "1 of 8 component(s) failed" in ev[3]["message"]
    assert all(e["kind"] == "run" and e["label"] == "r0" and e["stage"] == "chip" and e["site"] == "local" for e in ev)
    assert all(e["who"] == ME and e["host"] == socket.gethostname() and e["pid"] > 0 and not e["daemon"] for e in ev)
    assert len({e["pid"] for e in ev}) == 8  # each its own process
    # advance made the cam runs: none -> new, by advance
    made = [e for e in history(env, "--label", "r0") if e["remote_id"] != rid and e["kind"] == "run"]
    cams = env.q("select remote_id from remote_run where stage = 'cam' order by remote_id")
    assert cams and [(e["remote_id"], e["command"], e["from"], e["to"], e["stage"]) for e in made] == [
        (r, "advance", None, "new", "cam") for (r,) in cams]


def test_a_poll_killed_before_its_commit_leaves_no_event(env):
    (rid,) = seed(env, runs=1, per_run=4)
    env.cli("prepare", "chip", "--remote-id", str(rid))
    env.cli("exec", "--remote-id", str(rid))
    wait_for_jobs(env, [rid])
    p = env.cli("poll", "--remote-id", str(rid), failpoint="poll.replayed", check=False)
    assert p.returncode == -9  # killed after the replay and the move were written, before the commit
    assert env.q("select state from remote_run") == [("run",)]
    assert [e["command"] for e in history(env)] == ["define", "prepare", "exec"]
    env.cli("poll", "--remote-id", str(rid))
    assert steps([e for e in history(env) if e["kind"] == "run"])[-1] == ("poll", "run", "full", 0, (4, 0, 0, 0))


def test_task_switches_are_journaled_with_who_switched_them(env):
    env.cli("db", "upgrade")
    env.cli("tasks", "off", "exec", "poll")
    env.cli("tasks", "off", "exec")  # already off: nothing changed, nothing told
    env.cli("tasks", "on", "exec")
    ev = history(env)
    assert [(e["kind"], e["command"], e["from"], e["to"], e["message"], e["who"]) for e in ev] == [
        ("task", "tasks", "on", "off", f"task exec switched off by {ME}", ME),
        ("task", "tasks", "on", "off", f"task poll switched off by {ME}", ME),
        ("task", "tasks", "off", "on", f"task exec switched on by {ME}", ME),
    ]
    assert history(env, "--label", "nothing") == []


def test_since_takes_an_age_or_an_iso_time(env):
    env.cli("db", "upgrade")
    env.cli("tasks", "off", "exec")
    env.cli("tasks", "on", "exec")
    old = (datetime.now(UTC) - timedelta(hours=3)).replace(tzinfo=None)
    engine = create_engine(env.url)
    with engine.begin() as c:  # the first event made 3 hours ago
        c.execute(text("update journal_event set at = :t where id = (select min(id) from journal_event)"), {"t": old})
    engine.dispose()
    assert [e["to"] for e in history(env)] == ["off", "on"]
    assert [e["to"] for e in history(env, "--since", "2h")] == ["on"]
    assert [e["to"] for e in history(env, "--since", "1d")] == ["off", "on"]
    assert [e["to"] for e in history(env, "--since", (old + timedelta(minutes=1)).isoformat())] == ["on"]
    assert [e["to"] for e in history(env, "--since", (old - timedelta(minutes=1)).isoformat() + "Z")] == ["off", "on"]
    assert history(env, "--since", "2999-01-01") == []
    e = history(env)[0]
    assert set(e) == {"id", "at", "kind", "command", "daemon", "remote_id", "label", "stage", "site", "from", "to",
                      "fault", "message", "counts", "host", "pid", "who"}
    assert e["at"].endswith("Z") and datetime.fromisoformat(e["at"].replace("Z", "+00:00")) <= datetime.now(UTC)
    bad = env.cli("history", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "'yesterday' is neither an ISO time" in bad.stderr and "Traceback" not in bad.stderr
    table = env.cli("history").stdout
    assert "history (UTC, newest last)" in table and table.index("off") < table.rindex("on")


def test_link_events_are_journaled_with_who_did_them(env, tmp_path):
    """A site whose master is not running: OpenSSH's own `ssh -O check` finds it down (no
    sshd needed for that), once until it is up again; switch-user is told for each front end."""
    env.cli("db", "upgrade")
    control = Path("/tmp") / f"scbj-{tmp_path.name[-12:]}"
    control.mkdir(mode=0o700)
    try:
        cfg = tomllib.loads(env.config_path.read_text())
        cfg["sites"]["far"] = {**cfg["sites"]["local"], "link": "ssh", "scheduler": "slurm", "ssh": {
            "hosts": ["fe1.invalid", "fe2.invalid"], "user": "ops", "control_dir": str(control), "users": {"ops2": {}}}}
        env.config_path.write_text(tomli_w.dumps(cfg))
        assert env.cli("link", "check", "far", check=False).returncode == 1
        assert env.cli("link", "check", "far", check=False).returncode == 1  # still down: nothing new to tell
        env.cli("link", "stop", "far")  # nothing was up: nothing stopped
        env.cli("link", "switch-user", "ops2", "--site", "far")
        ev = history(env)
        assert [(e["kind"], e["command"], e["site"], e["from"], e["to"], e["message"], e["who"]) for e in ev] == [
            ("link", "link", "far", "up", "down", "fe1.invalid: master found down", ME),
            ("link", "link", "far", "up", "down", "fe2.invalid: master found down", ME),
            ("link", "link", "far", None, None, "fe1.invalid: user switched from ops to ops2", ME),
            ("link", "link", "far", None, None, "fe2.invalid: user switched from ops to ops2", ME),
        ]
    finally:
        shutil.rmtree(control)


def test_what_the_daemon_does_says_so(env):
    (rid,) = seed(env, runs=1, per_run=4)
    env.cli("prepare", "chip", "--remote-id", str(rid))
    env.cli("daemon", "--once", "--poll-seconds", "0")  # exec (its poll may find the job still running)
    wait_for_jobs(env, [rid])
    env.cli("daemon", "--once", "--poll-seconds", "0")  # poll, advance
    ev = history(env, "--label", "r0")
    assert [(e["remote_id"], e["command"], e["to"], e["daemon"]) for e in ev if e["remote_id"] == rid] == [
        (rid, "define", "new", False), (rid, "prepare", "pending", False), (rid, "exec", "run", True), (rid, "poll", "full", True)]
    assert ev[-1]["remote_id"] != rid and (ev[-1]["command"], ev[-1]["to"], ev[-1]["daemon"]) == ("advance", "new", True)
