"""The no-code `commands` stage on the real Slurm (tests/slurmkit.py): a task file of 1,000
tasks, some failing, many sharing their inputs, through define --tasks, prepare, exec (the
sbatch), poll (the srun --multi-prog steps' records pulled and replayed), revert of the failed
ones and a second job that brings them to full. The site's link is local (this machine is the
front end), the data and the site's scratch are separate directories, so what came back was
really brought back."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from scbundle.core.app import App
from scbundle.core.config import config_from_dict
from scbundle.db.migrate import upgrade
from scbundle.db.session import Database
from scbundle.steps.define import define
from scbundle.steps.exec import exec_runs
from scbundle.steps.poll import poll_runs
from scbundle.steps.prepare import prepare
from scbundle.steps.revert import revert

pytestmark = pytest.mark.usefixtures("slurm_cluster")

N_TASKS = 1000
N_SHARED = 10  # each shared file is an input of 100 tasks
BAD_DATA = {i for i in range(N_TASKS) if i % 97 == 13}  # exit 5: the data fault
UNKNOWN = {i for i in range(N_TASKS) if i % 89 == 7} - BAD_DATA  # exit 1: a code no fault names
FAILING = BAD_DATA | UNKNOWN


def q(app: App, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(app.config.database.removeprefix("sqlite:///")) as c:
        return c.execute(sql, args).fetchall()


def commands_app(tmp: Path) -> App:
    site = {
        "link": "local", "scheduler": "slurm", "remote_root": str(tmp / "scratch"), "permanent_root": str(tmp / "perm"),
        "paths": [{"local": str(tmp / "data"), "remote": str(tmp / "scratch" / "data")}],
        "cores_per_node": 64, "max_nodes": 1, "fill_factor": 0.8, "max_walltime": "02:00:00", "python": "/usr/bin/python3",
    }  # fmt: skip
    config = config_from_dict(
        {"database": f"sqlite:///{tmp / 'scbundle.db'}", "workdir": str(tmp / "work"), "default_site": "s", "sites": {"s": site}},
        "commands on slurm test",
    )
    db = Database(config.database)
    upgrade(db)  # the engine's tables and the commands stage's branch
    return App(config, db)


def task_file(tmp: Path, marker: Path) -> Path:
    """Task i reads its own file and shared{i % 10}, writes t{i}.out and prints {"n": i}. A
    failing one fails until ``marker`` exists on the site: the second pass succeeds."""
    inp = tmp / "data" / "in"
    inp.mkdir(parents=True)
    for j in range(N_SHARED):
        (inp / f"shared{j}.txt").write_text(f"shared {j}\n")
    lines = []
    for i in range(N_TASKS):
        (inp / f"t{i}.txt").write_text(f"task {i}\n")
        gate = f"test -e {marker} || exit {5 if i in BAD_DATA else 1}; " if i in FAILING else ""
        script = gate + 'cat "$1" "$2" > "$3"; printf "%s\\n" "{\\"n\\": $4}"'
        lines.append(json.dumps({
            "command": ["/bin/sh", "-c", script, "sh", "{input0}", "{input1}", "{output0}", str(i)],
            "inputs": [str(inp / f"t{i}.txt"), str(inp / f"shared{i % N_SHARED}.txt")],
            "outputs": [str(tmp / "data" / "out" / f"t{i}.out")], "key": f"t{i}", "cost": 0.05,
        }))  # fmt: skip
    path = tmp / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def one_pass(app: App, rid: int, timeout: float = 300) -> tuple[str, object]:
    prepare(app, remote_id=rid)
    (e,) = exec_runs(app, remote_id=rid, progress=False).results
    assert not e.error, e.error
    deadline = time.monotonic() + timeout
    while True:
        (res,) = poll_runs(app, remote_id=rid).results
        assert res.error is None, res.error
        if res.state != "run":
            return res.state, e
        assert time.monotonic() < deadline, f"remote_id {rid} still running after {timeout} s"
        time.sleep(1)


def manifest_paths(perm: Path) -> list[str]:
    """The paths the site's manifest records (crc32 TAB sha256 TAB stat key TAB path lines)."""
    return [line.rsplit("\t", 1)[1] for f in (perm / "manifest").rglob("*") if f.is_file()
            for line in f.read_text().splitlines() if line.count("\t") >= 3]  # fmt: skip


def test_a_task_file_of_1000_commands_on_real_slurm(slurm_cluster, tmp_path):
    marker = tmp_path / "scratch" / "second-pass"
    app = commands_app(tmp_path)
    tasks = task_file(tmp_path, marker)
    rid = define(app, label="cmds", stage="commands", limit=None, site=None, job_policy=None, tasks=tasks).remote_id
    assert q(app, "select count(*) from commands_task") == [(N_TASKS,)]

    state, e = one_pass(app, rid)
    assert e.pushed_files == N_TASKS + N_SHARED  # each shared input shipped once, not 100 times
    site_in = tmp_path / "scratch" / "data" / "in"
    assert sorted(p.name for p in site_in.iterdir()) == sorted([f"t{i}.txt" for i in range(N_TASKS)] + [f"shared{j}.txt" for j in range(N_SHARED)])
    recorded = manifest_paths(tmp_path / "perm")
    for j in range(N_SHARED):  # one copy on the site, recorded once
        assert recorded.count(str(site_in / f"shared{j}.txt")) == 1, recorded[:5]
    assert state == "error"
    (run,) = q(app, "select state, fault, sched_state from remote_run")
    assert run[0] == "error" and run[1] in (1, 5) and run[2] in ("COMPLETED", "(forgotten)"), run
    comps = {sid - 1: rest for sid, *rest in q(app, "select stage_id, state, fault, exit_code, attempts from remote_component")}
    assert {i for i, c in comps.items() if c[0] == "full"} == set(range(N_TASKS)) - FAILING
    assert all(comps[i] == ["error", 5, 5, 1] for i in BAD_DATA), {i: comps[i] for i in BAD_DATA}
    assert all(comps[i] == ["error", 1, 1, 1] for i in UNKNOWN), {i: comps[i] for i in UNKNOWN}
    assert all(comps[i][2] == 0 for i in set(range(N_TASKS)) - FAILING)
    out = {k - 1: json.loads(v) for k, v in q(app, "select task_id, output from commands_result")}
    assert out == {i: {"n": i} for i in set(range(N_TASKS)) - FAILING}
    outs = tmp_path / "data" / "out"  # brought back from the site, the good ones only
    assert sorted(int(p.stem[1:]) for p in outs.iterdir()) == sorted(set(range(N_TASKS)) - FAILING)
    assert (outs / "t5.out").read_text() == "task 5\nshared 5\n"

    # the failed ones back in line, and a second job in which they succeed
    (rev,) = revert(app, remote_id=rid)
    assert (rev.requeued, rev.to_state) == (len(FAILING), "new")
    marker.write_text("")
    state, e2 = one_pass(app, rid)
    assert state == "full" and e2.job_id != e.job_id
    assert e2.pushed_files == 0  # the inputs are on the site already (the manifest knows them)
    assert q(app, "select state, fault from remote_run") == [("full", 0)]
    assert q(app, "select state, count(*) from remote_component group by state") == [("full", N_TASKS)]
    assert q(app, "select distinct attempts from remote_component where stage_id - 1 in (%s)" % ",".join(map(str, FAILING))) == [(2,)]
    out = {k - 1: json.loads(v) for k, v in q(app, "select task_id, output from commands_result")}
    assert out == {i: {"n": i} for i in range(N_TASKS)}
    assert sorted(int(p.stem[1:]) for p in outs.iterdir()) == list(range(N_TASKS))
