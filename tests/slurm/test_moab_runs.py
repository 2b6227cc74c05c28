"""scbundle on a `moab` site, end to end. Moab cannot be installed here: tests/moabshim/ holds
test stand-ins for msub / checkjob / canceljob that translate to the real Slurm underneath
(as Moab ran over Slurm at LANL). Everything on scbundle's side is its real Moab backend."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from probe import Probe, probe_app

from scbundle.steps.cancel import cancel
from scbundle.steps.define import define
from scbundle.steps.exec import exec_runs
from scbundle.steps.poll import poll_runs
from scbundle.steps.prepare import prepare

SHIM = Path(__file__).resolve().parents[1] / "moabshim"


@pytest.fixture
def moab_path(slurm_cluster, monkeypatch):
    monkeypatch.setenv("PATH", f"{SHIM}{os.pathsep}{os.environ['PATH']}")


def q(app, sql: str) -> list[tuple]:
    with sqlite3.connect(app.config.database.removeprefix("sqlite:///")) as c:
        return c.execute(sql).fetchall()


def test_moab_site_runs_to_full_and_keeps_the_raw_state(moab_path, slurm_cluster, tmp_path):
    probes = {i: Probe("ok", 0.2) for i in range(1, 9)}
    probes[9] = Probe("fail")
    app = probe_app(tmp_path, probes, scheduler="moab")
    rid = define(app, label="m", stage="probe", limit=None, site=None, job_policy=None).remote_id
    p = prepare(app, remote_id=rid)
    script = (Path(p.path_base) / "job.sh").read_text()
    assert "#MSUB -l nodes=1:ppn=64,walltime=1:00:00" in script and "#SBATCH" not in script
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert not rep.results[0].error, rep.results[0].error
    job_id = q(app, "select job_id from remote_run")[0][0]
    assert job_id.startswith("Moab.")  # msub's id, as printed
    assert slurm_cluster.job(job_id.removeprefix("Moab.")) is not None
    deadline = time.monotonic() + 180
    while (state := poll_runs(app, remote_id=rid).results[0].state) == "run":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert state == "error"
    # the failed probe's exit 5 is bad data: not tried again, an error an operator reverts or retires
    assert q(app, "select state, fault, count(*) from remote_component group by state, fault order by state") == [("error", 5, 1), ("full", 0, 8)]
    assert q(app, "select sched_state from remote_run")[0][0] in ("Completed", "(forgotten)")


def test_moab_cancel(moab_path, slurm_cluster, tmp_path):
    app = probe_app(tmp_path, {1: Probe("ok", 300)}, scheduler="moab")
    rid = define(app, label="m", stage="probe", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    exec_runs(app, remote_id=rid, progress=False)
    res = cancel(app, rid)
    assert res.state == "error"
    assert q(app, "select state, fault from remote_component") == [("error", 2)]
