"""scbundle's jobs on the real Slurm (tests/slurmkit.py): sbatch, srun --multi-prog steps,
scontrol, scancel. The site's link is local (this machine is the front end); the ssh case
is in test_slurm_ssh.py."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from probe import NASTY, Probe, ProbeResult, probe_app
from sqlalchemy import select

from scbundle.core.config import StageSettings
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.steps.cancel import cancel
from scbundle.steps.define import define
from scbundle.steps.exec import exec_runs
from scbundle.steps.poll import poll_runs
from scbundle.steps.prepare import prepare
from scbundle.steps.revert import revert
from scbundle.steps.status import run_statuses

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def q(app, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(app.config.database.removeprefix("sqlite:///")) as c:
        return c.execute(sql, args).fetchall()


def start(app, label: str = "t") -> int:
    rid = define(app, label=label, stage="probe", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert not rep.results[0].error, rep.results[0].error
    return rid


def poll_until_done(app, rid: int, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        rep = poll_runs(app, remote_id=rid)
        (res,) = rep.results
        assert res.error is None, res.error
        if res.state != "run":
            return res.state
        assert time.monotonic() < deadline, f"remote_id {rid} still running after {timeout} s"
        time.sleep(1)


def comp(app, rid: int) -> dict[int, tuple]:
    rows = q(app, "select stage_id, state, fault, exit_code, message from remote_component where remote_id=?", rid)
    return {r[0]: r[1:] for r in rows}


def test_mixed_outcomes_on_real_slurm(slurm_cluster, tmp_path):
    probes = {i: Probe("ok", 0.5) for i in range(1, 21)}
    probes[21] = Probe("flaky")
    probes[22] = Probe("fail")
    probes[23] = Probe("hang")
    probes[24] = Probe("nasty")
    app = probe_app(tmp_path, probes, settings=StageSettings(command_timeout=8))
    rid = start(app)
    job_id = q(app, "select job_id from remote_run")[0][0]
    assert slurm_cluster.job(job_id) is not None  # a real Slurm job
    assert poll_until_done(app, rid) == "error"
    c = comp(app, rid)
    assert all(c[i][0] == "full" for i in range(1, 21))
    assert c[21][0] == "full"  # the flaky one succeeded on its second try
    assert c[22][:3] == ("error", 5, 5)  # a data fault: not tried again in the job, revertable
    assert c[23][:3] == ("error", 6, 124) and "limit" in c[23][3]  # hung past its limit: fault 6
    assert c[24][0] == "full"  # the argument full of shell syntax arrived as one argument
    (run,) = q(app, "select state, fault, sched_state, job_seconds, busy_core_seconds from remote_run")
    assert run[0] == "error" and run[1] in (5, 6) and run[2] in ("COMPLETED", "(forgotten)")
    assert run[3] > 0 and run[4] > 0
    rows = q(app, "select probe_id, out_uri from probe_result order by probe_id")
    assert [r[0] for r in rows] == [*range(1, 22), 24]
    assert Path(rows[0][1]).read_text() == "probe 1"  # the permanent product came back
    assert Path(rows[-1][1]).read_text() == NASTY
    # the job's own logs show the flaky one's two tries and the runner's view of the limit
    results = tmp_path / "work" / "t" / f"remote_probe.{rid}" / "returned" / "results"
    recs = {r["stage_id"]: r for f in results.glob("rank-*.jsonl") for r in map(json.loads, f.read_text().splitlines())}
    assert recs[21]["attempts"] == 2 and recs[22]["attempts"] == 1 and recs[23]["phase"] == "limit"
    # revert: the hung one and the bad-data one are re-run under a new job name
    (rev,) = revert(app, remote_id=rid)
    assert (rev.requeued, rev.to_state) == (2, "new")
    assert q(app, "select state from remote_component where stage_id=22") == [("new",)]


def test_config_over_60000_bytes_runs_as_several_concurrent_steps(slurm_cluster, tmp_path):
    # Long paths and many scattered ids make the rank lines long: the multi-prog text for 64
    # ranks is over 60000 bytes, so it must be cut into several configs, run as concurrent steps.
    deep = tmp_path.joinpath(*(c * 60 for c in "pqrst")) / "permanent"
    probes = {i: Probe("ok", 0.3) for i in range(1, 2001)}  # ~10 s a rank: long enough to see overlap
    app = probe_app(tmp_path, probes, permanent=deep)
    rid = define(app, label="big", stage="probe", limit=None, site=None, job_policy=None).remote_id
    p = prepare(app, remote_id=rid)
    bundle = Path(p.path_base)
    confs = sorted((bundle / "multiprog").glob("*.conf"))
    sizes = [c.stat().st_size for c in confs]
    assert len(confs) >= 2 and max(sizes) <= 60000 and sum(sizes) > 60000, sizes
    assert (bundle / "commands.cmds").stat().st_size > 200_000  # the commands alone would be 200 kB
    assert all(len(line) < 16382 for c in confs for line in c.read_text().splitlines())
    exec_runs(app, remote_id=rid, progress=False)
    assert poll_until_done(app, rid, timeout=400) == "full"
    assert q(app, "select count(*) from probe_result") == [(2000,)]
    # the steps ran at the same time: their first components started before the others ended
    results = bundle / "returned" / "results"
    spans: dict[int, list[float]] = {}
    offsets = [int(c.read_text().split("task t is global rank ")[1].split()[0]) for c in confs]
    for f in results.glob("rank-*.jsonl"):
        g = int(f.stem.split("-")[1])
        part = max(i for i, off in enumerate(offsets) if off <= g)
        for r in map(json.loads, f.read_text().splitlines()):
            spans.setdefault(part, []).extend([r["start"], r["end"]])
    firsts = [min(v) for v in spans.values()]
    lasts = [max(v) for v in spans.values()]
    assert max(firsts) < min(lasts), "the srun steps ran one after another"
    (run_dir,) = deep.glob(f"runs/*/probe.{rid}.a1")  # runs/<installation id>/
    job_out = (run_dir / "job.out").read_text()
    assert "ends" in job_out and "step creation temporarily disabled" not in job_out  # srun's word for waiting


def test_scancel_from_outside_keeps_finished_components(slurm_cluster, tmp_path):
    probes = {i: Probe("ok", 0.2) for i in range(1, 5)}
    probes.update({i: Probe("ok", 120) for i in range(5, 9)})
    app = probe_app(tmp_path, probes, cores_per_node=4)  # 4 ranks: the quick ones first
    rid = start(app)
    job_id = q(app, "select job_id from remote_run")[0][0]
    (run_dir,) = (tmp_path / "perm").glob(f"runs/*/probe.{rid}.a1")  # runs/<installation id>/
    run_dir = run_dir / "results"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until the quick ones have their records
        done = sum(1 for f in run_dir.glob("rank-*.jsonl") for _ in f.read_text().splitlines()) if run_dir.exists() else 0
        if done >= 4:
            break
        time.sleep(0.5)
    slurm_cluster.run("scancel", job_id)
    assert poll_until_done(app, rid, timeout=120) == "error"
    c = comp(app, rid)
    assert [c[i][0] for i in range(1, 5)] == ["full"] * 4
    assert all(c[i][0] == "error" and c[i][1] == 2 for i in range(5, 9)), c  # revertable
    assert q(app, "select fault, sched_state from remote_run") == [(2, "CANCELLED")]
    (rev,) = revert(app, remote_id=rid)
    assert rev.requeued == 4


def test_scbundle_cancel_marks_the_run(slurm_cluster, tmp_path):
    app = probe_app(tmp_path, {1: Probe("ok", 300), 2: Probe("ok", 300)})
    rid = start(app)
    res = cancel(app, rid)
    assert res.state == "error"
    job_id = q(app, "select job_id from remote_run")[0][0]
    job = slurm_cluster.job(job_id)
    assert job is None or job["JobState"] == "CANCELLED"
    assert {v[:2] for v in comp(app, rid).values()} == {("error", 2)}


def test_refused_submission_keeps_the_run_pending_with_the_schedulers_message(slurm_cluster, tmp_path):
    app = probe_app(tmp_path, {1: Probe("ok", 0.1)}, partition="nosuchpart")
    rid = define(app, label="t", stage="probe", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert rep.results[0].error and "invalid partition" in rep.results[0].error.lower()
    (run,) = q(app, "select state, fault, job_id, message from remote_run")
    assert run[:3] == ("pending", 3, None)
    assert "partition" in run[3].lower()  # Slurm's own words
    assert q(app, "select distinct state from remote_component") == [("pending",)]
    assert "scb-probe-1-a1" not in slurm_cluster.run("squeue", "-h", "-o", "%j").stdout
    # the daemon's exec pass leaves it alone; the operator fixes the site and asks for it
    assert exec_runs(app, progress=False).results == []
    app.config.sites["s"] = app.config.sites["s"].model_copy(update={"partition": None})
    prepare(app, remote_id=rid)
    assert not exec_runs(app, remote_id=rid, progress=False).results[0].error
    assert poll_until_done(app, rid) == "full"


def test_a_site_names_the_slurm_conf_its_commands_read(slurm_cluster, tmp_path):
    """A Slurm the user runs (link = "local", scheduler = "slurm"): the site's slurm_conf is
    what sbatch, scontrol, scancel and the job's srun read, whatever $SLURM_CONF says."""
    conf = tmp_path / "my-slurm.conf"
    conf.write_text(Path(str(slurm_cluster.conf)).read_text())
    app = probe_app(tmp_path / "a", {1: Probe("ok", 0.1)}, slurm_conf=str(tmp_path / "nowhere.conf"))
    rid = define(app, label="t", stage="probe", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert rep.results[0].error and "nowhere.conf" in rep.results[0].error  # Slurm's own words: it read that file
    app = probe_app(tmp_path / "b", {1: Probe("ok", 0.1)}, slurm_conf=str(conf))
    rid = start(app)
    assert poll_until_done(app, rid) == "full"


def test_poll_trusts_the_exit_marker_after_slurm_forgot_the_job(slurm_cluster, tmp_path):
    app = probe_app(tmp_path, {i: Probe("ok", 0.1) for i in range(1, 4)})
    rid = start(app)
    job_id = q(app, "select job_id from remote_run")[0][0]
    slurm_cluster.wait_job(job_id, {"COMPLETED"}, timeout=120)
    slurm_cluster.wait_forgotten(job_id)
    assert poll_until_done(app, rid) == "full"
    assert q(app, "select sched_state from remote_run") == [("(forgotten)",)]
    with app.db.session() as s:
        assert s.scalar(select(RemoteRun.state)) == "full"
        assert len(list(s.scalars(select(RemoteComponent).where(RemoteComponent.state == "full")))) == 3
        assert len(list(s.scalars(select(ProbeResult)))) == 3


def test_measured_costs_feed_the_next_request_and_status_shows_fill(slurm_cluster, tmp_path):
    probes = {i: Probe("ok", 1.0) for i in range(1, 31)}
    app = probe_app(tmp_path, probes, settings=StageSettings(measured_cost_min=20))
    app.probe.guess = 500.0  # a wild guess: each command costs 500 s
    rid = define(app, label="a", stage="probe", limit=25, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    assert q(app, "select cost_source from remote_run") == [("configured",)]
    exec_runs(app, remote_id=rid, progress=False)
    assert poll_until_done(app, rid) == "full"
    (st,) = run_statuses(app, remote_id=rid)
    assert st.usage is not None and st.usage.fill is not None and 0 < st.usage.fill <= 1
    assert st.usage.busy_core_h and st.usage.used_core_h and st.usage.requested_core_h >= st.usage.used_core_h
    rid2 = define(app, label="b", stage="probe", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid2)
    cost, source = q(app, "select cost_seconds, cost_source from remote_run where remote_id=?", rid2)[0]
    assert source == "median of 25 measured" and 1.0 <= cost < 5.0


def test_walltime_hit_faults_the_unfinished_6_and_keeps_the_rest(slurm_cluster, tmp_path):
    probes = {i: Probe("ok", 0.2) for i in range(1, 5)}
    probes.update({i: Probe("ok", 600) for i in range(5, 9)})
    app = probe_app(tmp_path, probes, cores_per_node=4)
    rid = start(app)
    job_id = q(app, "select job_id from remote_run")[0][0]
    slurm_cluster.wait_job(job_id, {"RUNNING"}, timeout=60)
    slurm_cluster.run("scontrol", "update", f"jobid={job_id}", "TimeLimit=1")  # one minute: Slurm times it out
    assert poll_until_done(app, rid, timeout=300) == "error"
    c = comp(app, rid)
    assert [c[i][0] for i in range(1, 5)] == ["full"] * 4
    assert all(c[i][:2] == ("error", 6) for i in range(5, 9)), c
    assert q(app, "select fault, sched_state from remote_run") == [(6, "TIMEOUT")]
    (rev,) = revert(app, remote_id=rid, fault=6)
    assert rev.requeued == 4
