"""Front ends in and out of service, and two local "hosts" on one PostgreSQL, against the real
ssh test site (the session's): a host taken off is never used; a host with no link leaves the
work to the one that has it, and runs go to auth only when no host has a live link."""

from __future__ import annotations

import json
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w
from linkkit import SshEnv

pytestmark = pytest.mark.slow


def define_run(e: SshEnv, n: int, label: str) -> int:
    e.cli("demo-data", "--images", str(n))
    rid = json.loads(e.cli("define", "--label", label, "--stage", "chip", "--json").stdout)["remote_id"]
    e.cli("prepare", "chip", "--remote-id", str(rid))
    return rid


def states(e: SshEnv) -> list[tuple[int, str, str | None]]:
    runs = json.loads(e.cli("status", "--json").stdout)["runs"]
    return [(r["remote_id"], r["state"], r["job_id"]) for r in runs]


def test_a_host_out_of_service_is_never_used_and_back_in_service_the_run_reaches_full(sshenv):
    e, front = sshenv, sshenv.site.front_host
    e.link_start("--all")  # every ssh site's front ends in one sitting (here: one site, one host)
    rid = define_run(e, 4, "off")
    p = e.cli("link", "host", "off", front, "--why", "disk trouble")
    assert "out of service" in p.stdout
    check = json.loads(e.cli("link", "check", "--json").stdout)
    assert check[0]["up"] and check[0]["service"]["in_service"] is False and check[0]["service"]["why"] == "disk trouble"
    p = e.cli("exec")  # nothing fails: the run waits, and the line says why
    assert "every front end is out of service" in p.stdout + p.stderr
    assert states(e) == [(rid, "pending", None)]
    assert not e.run_dir(rid).exists()  # nothing went to the site through the host that is off
    assert e.master_pid()  # its master untouched
    hosts = json.loads(e.cli("status", "--json").stdout)["hosts"]
    assert [(h["host"], h["in_service"], h["why"]) for h in hosts] == [(front, False, "disk trouble")]
    e.cli("link", "host", "on", front)
    e.cli("exec")
    e.cli("poll", "--wait", "120")
    assert states(e)[0][1] == "full" and (e.run_dir(rid) / "summary.json").is_file()


def test_two_local_hosts_on_one_postgresql_only_one_with_a_link(sshenv, pg_server):
    a = sshenv
    url = pg_server.create_database("hosts_two")
    conf = tomllib.loads(a.config.read_text())
    conf["database"] = url
    a.config.write_text(tomli_w.dumps(conf))
    a.env["SCBUNDLE_HOST"] = "host-a"
    control_b = Path(tempfile.mkdtemp(prefix="scbc-", dir="/tmp"))
    control_b.chmod(0o700)
    conf["sites"]["mu"]["ssh"]["control_dir"] = str(control_b)
    (cfg_b := a.config.with_name("b.toml")).write_text(tomli_w.dumps(conf))
    b = SshEnv(a.site, a.home, cfg_b, control_b, a.user, dict(a.env, SCBUNDLE_HOST="host-b"))
    try:
        a.cli("db", "upgrade")
        a.link_start()  # host-a's heartbeat: up
        rid = define_run(a, 4, "two")
        # host-b has no master: its daemon round leaves the run to host-a, not in auth
        p = b.cli("daemon", "--once", "--poll-seconds", "0")
        assert "left to host-a" in p.stdout, p.stdout
        assert states(a) == [(rid, "pending", None)]
        run_dir = Path(pg_server.psql(f"select remote_dir from remote_run where remote_id = {rid}", database="hosts_two").strip())
        assert run_dir.is_absolute() and not run_dir.exists()  # nothing went to the site from host-b
        a.cli("exec")
        ((_, st, job),) = states(a)
        assert st == "run" and job
        b.cli("daemon", "--once", "--poll-seconds", "0")  # its poll leaves the run alone too
        assert states(a) == [(rid, "run", job)]
        # host-a's link drops: no host has a live link now, so the run waits in auth
        a.site.kill_connections()
        a.wait_for(lambda: a.master_pid() is None, what="host-a's master gone")
        p = a.cli("daemon", "--once", "--poll-seconds", "0")
        assert states(a) == [(rid, "auth", job)], p.stdout
        a.link_start()
        assert "-> run" in a.cli("revert", "--auth").stdout
        a.cli("poll", "--wait", "120")
        assert states(a)[0][1] == "full" and (run_dir / "summary.json").is_file()
    finally:
        shutil.rmtree(control_b, ignore_errors=True)
