"""The OpenSSH link against the real test site: a bastion, a front end asking a password and a
one-time code, ControlMaster, the 12-hour drop (a killed master), auth and revert --auth."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def define_run(e, n: int, label: str = "lnk") -> int:
    e.cli("demo-data", "--images", str(n))
    return json.loads(e.cli("define", "--label", label, "--stage", "chip", "--json").stdout)["remote_id"]


def test_link_start_check_stop(sshenv):
    p = sshenv.cli("link", "check", check=False)
    assert p.returncode == 1 and "down" in p.stdout
    out = sshenv.link_start()
    assert "Password" in out and "One-time password" in out  # the site's own prompts reached the terminal
    rows = json.loads(sshenv.cli("link", "check", "--json").stdout)
    assert rows[0]["up"] and rows[0]["pid"] > 0 and rows[0]["age_s"] < 60
    assert 11 * 3600 < rows[0]["left_s"] <= 12 * 3600  # the site's default 12-hour drop
    socket_files = [p for p in sshenv.control_dir.iterdir() if p.is_socket()]
    assert len(socket_files) == 1 and len(str(socket_files[0])) < 90
    assert oct(sshenv.control_dir.stat().st_mode & 0o777) == "0o700"
    # nothing secret on disk: the configs hold no password or one-time code
    u = sshenv.site.users[sshenv.user]
    for f in sshenv.control_dir.iterdir():
        if f.is_file():
            assert u.password not in f.read_text(errors="replace")
    sshenv.cli("link", "stop")
    assert sshenv.cli("link", "check", check=False).returncode == 1


def test_link_check_warns_in_the_last_hour_before_the_drop(sshenv):
    from linkkit import write_config

    write_config(sshenv.config, sshenv.home, sshenv.site, sshenv.user, sshenv.control_dir, drop_hours=0.9)
    sshenv.link_start()
    p = sshenv.cli("link", "check")
    assert "drop soon" in p.stdout
    assert "warning: the link to" in p.stderr and "drops in 0h5" in p.stderr
    rows = json.loads(sshenv.cli("link", "check", "--json").stdout)
    assert rows[0]["warn"] is True and 0 < rows[0]["left_s"] < 0.9 * 3600


def test_demo_bundle_through_the_site_to_full(sshenv):
    sshenv.link_start()
    rid = define_run(sshenv, 200)
    sshenv.cli("prepare", "chip", "--remote-id", str(rid))
    ex = json.loads(sshenv.cli("exec", "--remote-id", str(rid), "--json").stdout)[0]
    # tools check + tools, bundle, missing list, 2 push streams, submit: a constant, not per file
    assert ex["job_id"] and ex["invocations"] <= 7
    sshenv.cli("poll", "--remote-id", str(rid), "--wait", "240")
    assert sshenv.q("select state from remote_run") == [("full",)]
    assert sshenv.q("select count(*) from chip_result") == [(200,)]
    # the job ran as the site user on the front end, and wrote its summary there
    (run_dir,) = sshenv.permanent.glob(f"runs/*/chip.{rid}.a1")  # runs/<installation id>/
    assert json.loads((run_dir / "summary.json").read_text())["n_good"] == 200
    assert run_dir.stat().st_uid == int(os.popen(f"id -u {sshenv.user}").read())


def test_link_down_exec_goes_to_auth_quickly_and_revert_finishes(sshenv):
    rid = define_run(sshenv, 6)
    sshenv.cli("prepare", "chip", "--remote-id", str(rid))
    t0 = time.monotonic()
    p = sshenv.cli("exec", "--remote-id", str(rid), check=False, timeout=60)
    assert time.monotonic() - t0 < 30  # BatchMode: fails at once, never waits for a password
    assert p.returncode == 75 and "-> auth" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert sshenv.q("select state, prev_state, job_id from remote_run") == [("auth", "pending", None)]
    sshenv.link_start()
    out = sshenv.cli("revert", "--auth").stdout
    assert "-> pending" in out
    sshenv.cli("exec", "--remote-id", str(rid))
    sshenv.cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert sshenv.q("select state from remote_run") == [("full",)]


def test_master_killed_mid_transfer_then_auth_revert_completes_with_complete_files(sshenv):
    from scbundle.stages.demo_data import sc_chip

    sshenv.link_start()
    rid = define_run(sshenv, 16)
    # big inputs, so the push lasts long enough to be cut: 1024x1024 chips (2 MB) and flats (4 MB)
    chip = sc_chip()
    for n, (raw, flat) in enumerate(sshenv.q("select imfile.uri, detrend.uri from imfile join detrend using (det_id)")):
        chip.make_demo_raw(raw, 1024, 1024, seed=n)
        chip.make_demo_flat(flat, 1024, 1024, seed=1)
    sshenv.cli("prepare", "chip", "--remote-id", str(rid))
    pid = sshenv.master_pid()
    assert pid
    killed = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            parts = list(sshenv.remote_data.rglob("*.part.*")) if sshenv.remote_data.exists() else []
            if parts:
                os.kill(pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.01)

    t = threading.Thread(target=killer)
    t.start()
    p = sshenv.cli("exec", "--remote-id", str(rid), check=False)
    t.join()
    assert killed.is_set(), "the transfer ended before the master could be killed"
    assert p.returncode == 75, p.stderr
    assert sshenv.q("select state, prev_state from remote_run") == [("auth", "pending")]
    sshenv.link_start()
    sshenv.cli("revert", "--auth")
    sshenv.cli("exec", "--remote-id", str(rid))
    sshenv.cli("poll", "--remote-id", str(rid), "--wait", "240")
    assert sshenv.q("select state from remote_run") == [("full",)], sshenv.q("select message from remote_component where state != 'full'")
    for line in (Path(sshenv.q("select path_base from remote_run")[0][0]) / "requirements.tsv").read_text().splitlines():
        local, remote, size = line.split("\t")
        assert Path(remote).stat().st_size == int(size) and sha(Path(remote)) == sha(Path(local))
    assert not list(sshenv.remote_data.rglob("*.part.*"))


def test_master_killed_between_submit_and_recording_job_id_no_second_job(sshenv):
    sshenv.link_start()
    rid = define_run(sshenv, 6)
    sshenv.cli("prepare", "chip", "--remote-id", str(rid))
    p = sshenv.cli("exec", "--remote-id", str(rid), failpoint="exec.submitted", check=False)
    assert p.returncode == -9
    os.kill(sshenv.master_pid(), signal.SIGKILL)  # and the link drops too
    assert sshenv.q("select state, job_id from remote_run") == [("pending", None)]
    p = sshenv.cli("exec", "--remote-id", str(rid), check=False)
    assert p.returncode == 75
    sshenv.link_start()
    sshenv.cli("revert", "--auth")
    sshenv.cli("exec", "--remote-id", str(rid))
    jobs = sorted((sshenv.permanent / "jobs").glob("*.job"))
    assert [j.name for j in jobs] == [f"{sshenv.q('select job_name from remote_run')[0][0]}.job"]
    assert sshenv.q("select job_id from remote_run")[0][0] == str(json.loads(jobs[0].read_text())["job_id"])
    sshenv.cli("poll", "--remote-id", str(rid), "--wait", "120")
    (run_dir,) = sshenv.permanent.glob(f"runs/*/chip.{rid}.a1")
    results = run_dir / "results"
    recs = [json.loads(x) for f in results.glob("rank-*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == list(range(6))
    assert sshenv.q("select state from remote_run") == [("full",)]


def test_wrong_host_key_refused_nothing_sent(sshenv, tmp_path):
    from linkkit import write_config

    write_config(sshenv.config, sshenv.home, sshenv.site, sshenv.user, sshenv.control_dir, known_hosts=sshenv.site.wrong_known_hosts)
    out = sshenv.link_start(expect_ok=False)
    assert "host key verification failed" in out.lower()
    p = sshenv.cli("link", "check", check=False)
    assert p.returncode == 1
    assert not (sshenv.permanent).exists()  # nothing reached the site


def test_exec_and_poll_in_parallel_over_one_master(sshenv):
    sshenv.link_start()
    a = define_run(sshenv, 6, "a")
    sshenv.cli("prepare", "chip", "--remote-id", str(a))
    sshenv.cli("exec", "--remote-id", str(a))
    b = define_run(sshenv, 6, "b")
    sshenv.cli("prepare", "chip", "--remote-id", str(b))
    pid_before = sshenv.master_pid()
    procs = [sshenv.popen("exec", "--remote-id", str(b)), sshenv.popen("poll", "--remote-id", str(a), "--wait", "120")]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    sshenv.cli("poll", "--remote-id", str(b), "--wait", "120")
    assert sshenv.q("select state from remote_run order by remote_id") == [("full",), ("full",)]
    assert sshenv.master_pid() == pid_before  # both rode the one master; no new login was needed


def test_switch_user_points_the_link_at_another_users_settings(sshenv):
    other = [u for u in sshenv.site.otp_users if u != sshenv.user][0]
    sshenv.cli("link", "switch-user", other)
    sshenv.link_start(user=other)
    rows = json.loads(sshenv.cli("link", "check", "--json").stdout)
    assert rows[0]["user"] == other and rows[0]["up"]
    from scbundle.core.config import load_config
    from scbundle.site.link import transport_for

    cfg = load_config(sshenv.config)
    t = transport_for("mu", cfg.site("mu"))
    assert t.link_up()
    assert t.run(["id", "-un"]).text.strip() == other
    p = sshenv.cli("link", "switch-user", "nobody-here", check=False)
    assert p.returncode == 1 and "nobody-here" in p.stderr


def test_maintenance_script_reconnects_and_reverts_auth(sshenv):
    import sys

    import pexpect

    rid = define_run(sshenv, 4)
    sshenv.cli("prepare", "chip", "--remote-id", str(rid))
    assert sshenv.cli("exec", check=False).returncode == 75  # link down: the run waits in auth
    bindir = sshenv.home / "bin"
    bindir.mkdir()
    wrapper = bindir / "scbundle"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m scbundle.cli --config {sshenv.config} \"$@\"\n")
    wrapper.chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "ops" / "maintain-link"
    env = dict(sshenv.env, SCBUNDLE=str(wrapper))
    for _ in range(2):  # safe to run at any time: twice in a row
        child = pexpect.spawn("bash", [str(script)], env=env, encoding="utf-8", timeout=120)
        log = []
        while True:
            i = child.expect([r"(?i)one-time password[^\n]*:", r"(?i)password:", pexpect.EOF])
            log.append(child.before)
            if i == 0:
                child.sendline(sshenv.site.totp(sshenv.user))
            elif i == 1:
                child.sendline(sshenv.site.users[sshenv.user].password)
            else:
                break
        child.close()
        assert child.exitstatus == 0, "".join(log)
        assert "done" in "".join(log)
        tasks = {r["task"]: r["enabled"] for r in json.loads(sshenv.cli("tasks", "status", "--json").stdout)}
        assert tasks["exec"] and tasks["poll"]
        assert sshenv.master_pid()
    assert sshenv.q("select state from remote_run") == [("pending",)]
    sshenv.cli("exec")
    sshenv.cli("poll", "--wait", "120")
    assert sshenv.q("select state from remote_run") == [("full",)]
