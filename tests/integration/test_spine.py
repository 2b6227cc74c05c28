"""The spine end to end on the embedded `local` site: real processes, real files, real SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def snapshot(cli):
    tables = ["remote_run", "remote_component", "chip_result"]
    with sqlite3.connect(cli.db_path) as c:
        return {t: sorted(c.execute(f"select * from {t}").fetchall(), key=repr) for t in tables}


def setup_run(cli, n, label="t"):
    cli("db", "upgrade")
    cli("demo-data", "--images", str(n))
    d = cli.json("define", "--label", label, "--stage", "chip", "--limit", str(n))
    return d["remote_id"]


def run_to_end(cli, rid):
    cli("prepare", "chip", "--remote-id", str(rid))
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "240")


@pytest.mark.slow
def test_demo_carries_240_components_to_full(cli):
    p = cli("demo", "--images", "240")
    assert "full (240 good, 0 failed)" in p.stdout
    assert "Njobs" in p.stdout and "Ngood" in p.stdout  # the status table ends the demo
    # the demo goes on past chip (tests/integration/test_pipeline.py checks the later stages)
    assert q(cli, "select stage, state, fault from remote_run order by remote_id") == [
        ("chip", "full", 0), ("cam", "full", 0), ("warp", "full", 0), ("stack", "full", 0)]
    assert q(cli, "select state, count(*) from remote_component where stage='chip' group by state") == [("full", 240)]
    rows = q(cli, "select imfile_id, stats_uri, npix, mean from chip_result order by imfile_id")
    assert len(rows) == 240 and all(r[2] > 0 and r[3] is not None for r in rows)
    # permanent products (stats) came back; intermediates (processed images) stayed on the site
    for _, stats_uri, _, _ in rows:
        assert Path(stats_uri).is_file() and json.loads(Path(stats_uri).read_text())["npix"] > 0
    assert not list((cli.home / "data" / "chip").rglob("*.ch.proc"))
    assert len(list((cli.site_root / "scratch" / "data" / "chip").rglob("*.ch.proc"))) == 240
    # one result file per rank, not one per component
    run_dir = cli.run_dir(1)
    nranks = json.loads((run_dir / "bundle.json").read_text())["nranks"]
    assert len(list((run_dir / "results").glob("rank-*.jsonl"))) <= nranks
    assert (run_dir / "job.exit").read_text().strip() == "0"
    st = cli.json("status", "--remote-id", "1")
    assert st["runs"][0]["ngood"] == 240 and st["runs"][0]["nfail"] == 0


def test_pushes_only_missing_files_and_shares_detrends(cli):
    rid = setup_run(cli, 16, "first")
    cli("prepare", "chip", "--remote-id", str(rid))
    reqs = (Path(q(cli, "select path_base from remote_run")[0][0]) / "requirements.tsv").read_text().splitlines()
    flats = [r for r in reqs if "/detrend/" in r]
    assert len(reqs) == 16 + len(flats) and len(flats) < 16  # detrends shared, each listed once
    first = cli.json("exec", "--remote-id", str(rid))[0]
    assert first["pushed_files"] == len(reqs)
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    cli("demo-data", "--images", "8")  # 8 new raw images of the same exposures' filters
    rid2 = cli.json("define", "--label", "second", "--stage", "chip")["remote_id"]
    cli("prepare", "chip", "--remote-id", str(rid2))
    second = cli.json("exec", "--remote-id", str(rid2))[0]
    reqs2 = (Path(q(cli, "select path_base from remote_run where remote_id=?", rid2)[0][0]) / "requirements.tsv").read_text().splitlines()
    already = {r.split("\t")[1] for r in reqs}
    assert second["pushed_files"] == sum(1 for r in reqs2 if r.split("\t")[1] not in already)
    assert second["pushed_files"] < len(reqs2)
    assert second["invocations"] <= 6


def test_missing_local_input_marks_fault_5_and_the_rest_runs(cli):
    rid = setup_run(cli, 12)
    victim = q(cli, "select uri from imfile where imfile_id=5")[0][0]
    Path(victim).unlink()
    out = cli.json("prepare", "chip", "--remote-id", str(rid))[0]
    assert out["n_components"] == 11 and out["n_missing"] == 1
    assert q(cli, "select state, fault from remote_component where stage_id=5") == [("error", 5)]
    assert "input missing locally" in q(cli, "select message from remote_component where stage_id=5")[0][0]
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select state, fault from remote_run") == [("error", 5)]
    assert q(cli, "select count(*) from chip_result") == [(11,)]


def test_a_data_fault_fails_at_once_is_revertable_and_abandoned_at_its_second_job(cli):
    rid = setup_run(cli, 8)
    raw = Path(q(cli, "select uri from imfile where imfile_id=3")[0][0])
    raw.write_bytes(b"SCRAW1 64 64\n" + b"\0" * 10)  # truncated pixels: a data fault
    run_to_end(cli, rid)
    assert q(cli, "select state, fault from remote_run") == [("error", 5)]
    # exit 5 is a data fault: not worth another try inside the job (only faults 2 and 6 are)
    assert q(cli, "select state, fault, exit_code, attempts from remote_component where stage_id=3") == [("error", 5, 5, 1)]
    assert q(cli, "select count(*) from remote_component where state='full'") == [(7,)]
    log = cli.run_dir(1) / "results"
    rec = [json.loads(line) for f in log.glob("rank-*.jsonl") for line in f.read_text().splitlines()]
    assert [r["attempts"] for r in rec if r["stage_id"] == 3] == [1]
    out = cli("revert", "--remote-id", str(rid)).stdout
    assert "error -> new (1 component(s) requeued, 0 abandoned)" in out
    run_to_end(cli, rid)  # attempt 2: the input is still bad
    assert q(cli, "select state, fault, attempt from remote_run") == [("error", 5, 2)]
    out = cli("revert", "--remote-id", str(rid)).stdout
    assert "error -> full (0 component(s) requeued, 1 abandoned)" in out
    # nothing left to run, and the run says why it is not clean
    state, fault, message = q(cli, "select state, fault, message from remote_run")[0]
    assert (state, fault) == ("full", 5) and "1 of 8 component(s) abandoned" in message
    assert q(cli, "select state, attempts from remote_component where stage_id=3") == [("abandoned", 2)]
    assert q(cli, "select count(*) from chip_result") == [(7,)]


def test_job_policy_ignore_goes_full_with_failures_recorded(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "6")
    rid = cli.json("define", "--label", "ign", "--stage", "chip", "--job-policy", "ignore")["remote_id"]
    Path(q(cli, "select uri from imfile where imfile_id=2")[0][0]).write_bytes(b"garbage")
    run_to_end(cli, rid)
    assert q(cli, "select state, fault from remote_run") == [("full", 5)]
    assert "1 failed, ignored by job_policy" in q(cli, "select message from remote_run")[0][0]
    assert q(cli, "select state, fault from remote_component where stage_id=2") == [("error", 5)]


def test_awkward_label_arguments_stay_one_argument_each(cli):
    """A label with shell words in it is refused at define (it would name directories here and
    on the site), with one line and nothing defined; the odd characters a label may hold run
    through every generated command as one argument each."""
    cli("db", "upgrade")
    cli("demo-data", "--images", "4")
    p = cli("define", "--label", """we ird; echo pwned "x" 'y'""", "--stage", "chip", check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and "label" in p.stderr
    assert q(cli, "select count(*) from remote_run") == [(0,)]
    label = "PV3+b.2024-06_x"
    rid = cli.json("define", "--label", label, "--stage", "chip", "--limit", "4")["remote_id"]
    run_to_end(cli, rid)
    assert q(cli, "select state from remote_run") == [("full",)]
    stats = [Path(r[0]) for r in q(cli, "select stats_uri from chip_result")]
    assert len(stats) == 4 and all(s.is_file() and label in str(s) for s in stats)
    assert not list(cli.home.rglob("pwned*"))


def test_a_bad_dbinfo_record_is_refused_naming_file_and_line_and_fails_only_its_component(cli):
    rid = setup_run(cli, 6)
    cli("prepare", "chip", "--remote-id", str(rid))
    cli("exec", "--remote-id", str(rid))
    run_dir = cli.run_dir(rid)
    import time

    deadline = time.time() + 120
    while not (run_dir / "job.exit").exists() and time.time() < deadline:
        time.sleep(0.2)
    rank0 = run_dir / "results" / "rank-00000.jsonl"
    lines = rank0.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["dbinfo"]["values"]["mean"] = "0); DROP TABLE remote_run; --"
    lines[1] = json.dumps(rec)
    rank0.write_text("\n".join(lines) + "\n")
    p = cli("poll", "--remote-id", str(rid), check=False)
    assert p.returncode == 0, p.stderr
    assert q(cli, "select state, fault from remote_run") == [("error", 5)]
    bad = q(cli, "select stage_id, state, fault, message from remote_component where state != 'full'")
    assert [(b[0], b[1], b[2]) for b in bad] == [(rec["stage_id"], "error", 5)]
    assert "rank-00000.jsonl:2: bad record:" in bad[0][3] and "'mean'" in bad[0][3]
    assert q(cli, "select count(*) from chip_result") == [(5,)]
    assert rec["stage_id"] not in [r[0] for r in q(cli, "select imfile_id from chip_result")]


def test_replay_twice_changes_nothing(cli):
    from scbundle.core.app import App
    from scbundle.core.config import config_from_dict, embedded_default
    from scbundle.db.session import Database
    from scbundle.stages.registry import get_stage
    from scbundle.steps.collect import _components_index
    from scbundle.steps.common import build_context
    from scbundle.steps.replay import read_results

    rid = setup_run(cli, 6)
    run_to_end(cli, rid)
    before = snapshot(cli)
    cfg = config_from_dict(embedded_default(cli.home), "test")
    app = App(cfg, Database(cfg.database))
    path_base = Path(q(cli, "select path_base from remote_run")[0][0])
    results = read_results(sorted((path_base / "returned" / "results").glob("*.jsonl")), get_stage("chip", app.config), _components_index(path_base))
    with app.db.session() as s:
        from scbundle.db.models import RemoteRun

        run = s.get(RemoteRun, rid)
        get_stage("chip", app.config).replay(s, run, [r.dbinfo for r in results.records.values()], build_context(app, run))
    assert snapshot(cli) == before
    p = cli("poll", "--remote-id", str(rid), check=False)
    assert p.returncode == 1 and "state 'full'" in p.stderr


@pytest.mark.parametrize("point", ["prepare.written", "exec.pushed", "exec.submitted", "poll.pulled"])
def test_killed_between_steps_rerun_finishes_once(cli, point):
    rid = setup_run(cli, 10)
    steps = [("prepare", "chip", "--remote-id", str(rid)), ("exec", "--remote-id", str(rid)), ("poll", "--remote-id", str(rid), "--wait", "120")]
    for step in steps:
        if point.startswith(step[0]):
            p = cli(*step, failpoint=point, check=False)
            assert p.returncode == -9  # really killed, no cleanup ran
        cli(*step)
    assert q(cli, "select state from remote_run") == [("full",)]
    assert q(cli, "select count(*), sum(attempts) from remote_component where state='full'") == [(10, 10)]
    assert q(cli, "select count(*) from chip_result") == [(10,)]
    jobs = list((cli.site_root / "permanent" / "jobs").glob("*.job"))
    assert [j.name for j in jobs] == cli.job_files() and jobs[0].name.startswith("scb-chip-1-a1-")  # one job, never two
    results = cli.run_dir(1) / "results"
    recs = [json.loads(x) for f in results.glob("rank-*.jsonl") for x in f.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == list(range(10))  # each component ran once
