"""Task switches, `tasks wait`, and the daemon loop on the embedded local site."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def test_tasks_off_stops_exec_and_on_resumes(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "4")
    cli("define", "--label", "t", "--stage", "chip")
    cli("prepare", "chip", "--remote-id", "1")
    cli("tasks", "off", "exec", "poll")
    st = {r["task"]: r for r in cli.json("tasks", "status")}
    assert st["exec"]["enabled"] is False and st["poll"]["enabled"] is False and st["prepare"]["enabled"] is True
    p = cli("exec", check=False)
    assert p.returncode == 1 and "exec is switched off" in p.stderr
    assert q(cli, "select state from remote_run") == [("pending",)]
    cli("tasks", "on", "exec", "poll")
    cli("exec")
    cli("poll", "--wait", "120")
    assert q(cli, "select state from remote_run") == [("full",)]
    p = cli("tasks", "off", "bogus", check=False)
    assert p.returncode == 1 and "unknown task" in p.stderr


def test_tasks_wait_waits_for_a_live_step_and_ignores_dead_ones(cli):
    cli("db", "upgrade")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    with sqlite3.connect(cli.db_path) as c:
        c.execute("insert into task_activity (task, host, pid) values ('exec', ?, ?)", (socket.gethostname(), worker.pid))
        c.execute("insert into task_activity (task, host, pid) values ('poll', ?, ?)", (socket.gethostname(), dead.pid))
    p = cli("tasks", "wait", "--timeout", "1", check=False)
    assert p.returncode == 1 and f"exec pid {worker.pid}" in p.stderr and f"pid {dead.pid}" not in p.stderr
    t0 = time.monotonic()
    waiter = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "tasks", "wait"], env=cli.env, stdout=subprocess.PIPE, text=True)
    worker.wait()  # the step's process ends; its row is pruned as dead
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and "no step in flight" in out
    assert time.monotonic() - t0 >= 1.0


def test_daemon_runs_prepare_exec_poll_and_stops_on_sigterm(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "6")
    cli("define", "--label", "d", "--stage", "chip")
    d = subprocess.Popen(
        [sys.executable, "-m", "scbundle.cli", "daemon", "--loop-seconds", "0.3", "--poll-seconds", "0"],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and q(cli, "select state from remote_run where remote_id=1") != [("full",)]:
            time.sleep(0.3)
        assert q(cli, "select state from remote_run where remote_id=1") == [("full",)]  # advance may queue cam after it
        d.send_signal(signal.SIGTERM)
        out, _ = d.communicate(timeout=60)
    finally:
        if d.poll() is None:
            d.kill()
    assert d.returncode == 0
    assert "SIGTERM: stopping at the next step boundary" in out and out.rstrip().endswith("stopped")
    assert "prepared remote_id 1" in out and "exec remote_id 1: job" in out and "poll remote_id 1: full" in out
    assert q(cli, "select count(*) from task_activity") == [(0,)]


def test_daemon_polls_a_run_only_when_its_last_poll_is_old_enough(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "4")
    cli("define", "--label", "p", "--stage", "chip")
    cli("prepare", "chip", "--remote-id", "1")
    cli("exec", "--remote-id", "1")
    exit_marker = cli.run_dir(1) / "job.exit"
    deadline = time.time() + 120
    while not exit_marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    with sqlite3.connect(cli.db_path) as c:
        c.execute("update remote_run set last_poll = datetime('now', '-10 minutes')")
    before = q(cli, "select state, last_poll from remote_run")
    out = cli("daemon", "--once", "--poll-seconds", "3600").stdout
    assert "poll remote_id" not in out
    assert q(cli, "select state, last_poll from remote_run") == before  # polled 10 min ago: not yet
    out = cli("daemon", "--once", "--poll-seconds", "300").stdout
    assert "poll remote_id 1: full" in out
