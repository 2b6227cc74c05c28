"""A database's runs are its own on the site: a database deleted and made again never takes the
jobs and results of the one before it, and poll refuses a run directory that another run's job
wrote. Real processes on the embedded `local` site, real SQLite."""

from __future__ import annotations

import json
import shlex
import shutil
import sqlite3
from pathlib import Path


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
