"""A database's runs are its own on the site: a database deleted and made again never takes the
jobs and results of the one before it, and poll refuses a run directory that another run's job
wrote. Real processes on the embedded `local` site, real SQLite."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import tomli_w
from clirun import Cli

from scbundle.core.config import embedded_default


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def prepared_run_dir(cli, remote_id: int = 1) -> Path:
    """Where the prepared job script of the run will run: its RUN= line."""
    ((path_base,),) = q(cli, "select path_base from remote_run where remote_id = ?", remote_id)
    (line,) = [x for x in (Path(path_base) / "job.sh").read_text().splitlines() if x.startswith("RUN=")]
    return Path(shlex.split(line[4:])[0])


def first_life(cli, n: int = 4) -> tuple[Path, str]:
    """Run 1 of a first database carried to full; then the database file is deleted and made
    again (the operator's `rm scbundle.db; scbundle db upgrade`). Returns the first run's
    directory and job name, whose result records now say mean 12345 (so a result taken from
    them is seen)."""
    cli("db", "upgrade")
    cli("demo-data", "--images", str(n))
    cli("define", "--label", "t", "--stage", "chip")
    cli("prepare", "chip", "--remote-id", "1")
    cli("exec", "--remote-id", "1")
    cli("poll", "--remote-id", "1", "--wait", "240")
    assert q(cli, "select state from remote_run") == [("full",)]
    old_dir, ((old_name,),) = prepared_run_dir(cli), q(cli, "select job_name from remote_run")
    for f in (old_dir / "results").glob("rank-*.jsonl"):
        recs = [json.loads(line) for line in f.read_text().splitlines()]
        for r in recs:
            r["dbinfo"]["values"]["mean"] = 12345.0
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for p in cli.home.glob("scbundle.db*"):  # the file and its -wal, -shm (`rm scbundle.db*`)
        if p.is_file():
            p.unlink()
    cli("db", "upgrade")
    cli("demo-data", "--images", str(n))
    cli("define", "--label", "t", "--stage", "chip")
    cli("prepare", "chip", "--remote-id", "1")
    return old_dir, old_name


def test_a_rebuilt_database_gets_a_new_job_and_its_own_results(cli):
    old_dir, old_name = first_life(cli)
    cli("exec", "--remote-id", "1")
    cli("poll", "--remote-id", "1", "--wait", "240")
    assert q(cli, "select state, fault from remote_run") == [("full", 0)]
    means = [m for (m,) in q(cli, "select mean from chip_result")]
    assert len(means) == 4 and 12345.0 not in means  # its own results, not the old job's
    ((name, new_dir),) = q(cli, "select job_name, remote_dir from remote_run")
    assert name != old_name and Path(new_dir) != old_dir and name.startswith("scb-chip-1-a1-")
    jobs = sorted(p.name for p in (cli.site_root / "permanent" / "jobs").glob("*.job"))
    assert jobs == sorted([f"{old_name}.job", f"{name}.job"])  # a job of its own, not the old one
    assert all(json.loads((Path(new_dir) / "summary.json").read_text())[k] == v
               for k, v in {"remote_id": 1, "attempt": 1, "job_name": name}.items())  # fmt: skip
    ((inst,),) = q(cli, "select installation_id from installation")
    assert json.loads((Path(new_dir) / "summary.json").read_text())["installation"] == inst
    assert Path(new_dir).parent.name == inst
    assert cli("db", "current").stdout.strip().endswith(f"installation {inst}")  # the operator can see it


def test_poll_refuses_a_run_directory_another_run_wrote_and_revert_finishes_the_run(cli):
    old_dir, _ = first_life(cli)
    new_dir = prepared_run_dir(cli)
    # another installation's finished job sits where this run's directory goes (planted, or
    # restored: its job.submitted makes exec take that job for this run's). Where run
    # directories carry no installation id, the first database's own directory is that.
    if new_dir != old_dir:
        new_dir.parent.mkdir(parents=True)
        shutil.copytree(old_dir, new_dir)
    # the foreign job's products on the site say so: none of them may come back
    ((path_base,),) = q(cli, "select path_base from remote_run")
    products = [line.split("\t")[1:] for line in (Path(path_base) / "products.tsv").read_text().splitlines()]
    assert products
    for remote, _ in products:
        Path(remote).write_bytes(b"FOREIGN")
    cli("exec", "--remote-id", "1")
    p = cli("poll", "--remote-id", "1", "--wait", "120")
    ((state, fault, message),) = q(cli, "select state, fault, message from remote_run")
    assert (state, fault) == ("error", 2), p.stdout + p.stderr
    old_inst = json.loads((old_dir / "summary.json").read_text())["installation"]
    ((inst,),) = q(cli, "select installation_id from installation")
    assert old_inst and old_inst != inst
    assert f"installation {old_inst} remote_id 1 attempt 1" in message and f"installation {inst} remote_id 1 attempt 1" in message
    assert q(cli, "select count(*) from chip_result") == [(0,)]  # never a result
    assert q(cli, "select state, fault, attempts, count(*) from remote_component group by 1, 2, 3") == [("error", 2, 0, 4)]
    assert not [local for _, local in products if Path(local).read_bytes() == b"FOREIGN"]  # nothing brought back
    # the way out: revert gives the run a new attempt, a directory and a job of its own
    assert "-> new" in cli("revert", "--remote-id", "1").stdout
    cli("prepare", "chip", "--remote-id", "1")
    cli("exec", "--remote-id", "1")
    cli("poll", "--remote-id", "1", "--wait", "240")
    assert q(cli, "select state, fault, attempt from remote_run") == [("full", 0, 2)]
    assert cli.run_dir(1) == new_dir.parent / "chip.1.a2"
    means = [m for (m,) in q(cli, "select mean from chip_result")]
    assert len(means) == 4 and 12345.0 not in means
    assert not [local for _, local in products if Path(local).read_bytes() == b"FOREIGN"]  # its own job's products


def start_daemon(env: dict, *args: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "daemon", "--loop-seconds", "30", *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = p.stdout.readline()  # type: ignore[union-attr]
    assert "started" in first, first + p.communicate(timeout=30)[1]
    return p


def stopped(p: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    """The daemon's exit code and its last stderr line; it must stop on its own, well before
    its next pass is due (--loop-seconds 30)."""
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("the daemon went on running") from None
    return p.returncode, (err.strip().splitlines() or [""])[-1]


def test_a_daemon_whose_database_file_is_deleted_stops_with_one_line(cli):
    cli("db", "upgrade")
    ((inst,),) = q(cli, "select installation_id from installation")
    p = start_daemon(cli.env)
    for f in cli.home.glob("scbundle.db*"):
        if f.is_file():
            f.unlink()
    code, line = stopped(p)
    assert code != 0
    assert line.startswith("scbundle: error: ") and str(cli.db_path) in line and "was deleted" in line and inst in line
    assert not cli.db_path.exists()  # and it made no new, empty one


def test_a_daemon_whose_database_file_is_replaced_by_another_stops(cli, tmp_path):
    cli("db", "upgrade")
    other = Cli(tmp_path / "other", {**cli.env, "SCBUNDLE_HOME": str(tmp_path / "other")})
    other("db", "upgrade")
    p = start_daemon(cli.env)
    os.replace(other.db_path, cli.db_path)  # `mv other.db scbundle.db`: another database, same name
    code, line = stopped(p)
    assert code != 0 and str(cli.db_path) in line and "replaced by another file" in line


@pytest.mark.parametrize("server", ["pg_server", "maria_server"])
def test_a_daemon_whose_server_database_is_made_again_stops(request, cli, tmp_path, server):
    """dropdb, createdb, `scbundle db upgrade` under a running daemon: the server and the name
    are the same, the installation id is not (PostgreSQL and MariaDB)."""
    pg_server = request.getfixturevalue(server)
    name = f"daemon_{uuid.uuid4().hex[:8]}"
    url = pg_server.create_database(name)
    cfg = embedded_default(cli.home)
    cfg["database"] = url
    (tmp_path / "pg.toml").write_text(tomli_w.dumps(cfg))
    env = {**cli.env, "SCBUNDLE_CONFIG": str(tmp_path / "pg.toml")}
    Cli(cli.home, env)("db", "upgrade")
    p = start_daemon(env)
    pg_server.drop_database(name)  # WITH (FORCE): the daemon's connections are cut
    pg_server.create_database(name)
    Cli(cli.home, env)("db", "upgrade")
    code, line = stopped(p)
    assert code != 0 and line.startswith("scbundle: error: ") and (
        "has no installation table any more" in line or "now its installation id is" in line  # before / after the upgrade
    )
