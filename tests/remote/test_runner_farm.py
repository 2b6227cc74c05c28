"""sc_runner.py's task-farm policy, on real subprocesses: tries per command, the per-command
time limit, the job's deadline (SCB_DEADLINE) and SIGTERM from the scheduler."""

import json
import os
import signal
import subprocess
import time

from test_runner import PY, RUNNER, make_run, pyc, records, runner

POST_OK = pyc("import json; print(json.dumps({'table': 't', 'key': {'id': 1}, 'values': {}}))")


def with_policy(run, **policy):
    meta = json.loads((run / "bundle.json").read_text())
    meta.update(policy)
    (run / "bundle.json").write_text(json.dumps(meta))
    return run


def test_attempts_from_the_bundle(tmp_path):
    fail = pyc("import sys; sys.exit(3)")
    run = with_policy(make_run(tmp_path / "run", [fail], [POST_OK]), attempts=3)
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0").returncode == 0
    (rec,) = records(run, 0)
    assert (rec["exit"], rec["attempts"], rec["phase"]) == (3, 3, "command")
    assert (run / "logs" / "rank-00000.log").read_text().count("command:") == 3


def test_command_past_its_limit_is_stopped_once_with_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    hang = pyc(
        "import subprocess,sys,time; p=subprocess.Popen(['sleep','300']); "
        "open(sys.argv[1],'w').write(str(p.pid)); time.sleep(300)", pidfile)
    ok = pyc("print('fine')")
    run = with_policy(make_run(tmp_path / "run", [hang, ok], [POST_OK, POST_OK]), command_timeout=1.5)
    t0 = time.monotonic()
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-1").returncode == 0
    assert time.monotonic() - t0 < 30
    hung, good = records(run, 0)
    assert (hung["exit"], hung["phase"], hung["attempts"]) == (124, "limit", 1)  # not tried again
    assert "time limit" in hung["error"]
    assert good["exit"] == 0 and good["dbinfo"] is not None  # the farm went on
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"


def test_deadline_leaves_the_rest_unstarted_and_marked(tmp_path):
    slow = pyc("import time; time.sleep(60)")
    ok = pyc("print('fine')")
    run = make_run(tmp_path / "run", [ok, slow, ok, ok], [POST_OK] * 4)
    env = dict(os.environ, SCB_DEADLINE=str(time.time() + 23))  # DEADLINE_MARGIN is 20 s
    t0 = time.monotonic()
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-3", env=env).returncode == 0
    assert time.monotonic() - t0 < 30
    recs = records(run, 0)
    assert [r["phase"] for r in recs] == ["command", "deadline", "deadline", "deadline"]
    assert recs[0]["exit"] == 0
    assert recs[1]["attempts"] == 1 and recs[2]["attempts"] == 0  # stopped, then never started
    assert all(r["exit"] == 124 for r in recs[1:])


def test_sigterm_records_the_running_and_the_unstarted(tmp_path):
    slow = pyc("import time; time.sleep(60)")
    ok = pyc("print('fine')")
    run = make_run(tmp_path / "run", [ok, slow, ok], [POST_OK] * 3)
    p = subprocess.Popen([PY, str(RUNNER), "run", str(run), "--rank", "0", "--offset", "0", "--ids", "0-2"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (run / "logs" / "rank-00000.log").exists() and "index 1" in (run / "logs" / "rank-00000.log").read_text():
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0
    recs = records(run, 0)
    assert [(r["index"], r["phase"]) for r in recs] == [(0, "command"), (1, "signal"), (2, "signal")]
    assert recs[0]["exit"] == 0 and recs[1]["exit"] == 124 and recs[2]["attempts"] == 0


def test_summary_carries_each_components_seconds(tmp_path):
    ok = pyc("import time; time.sleep(0.2)")
    run = make_run(tmp_path / "run", [ok, ok], [POST_OK] * 2)
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-1").returncode == 0
    env = dict(os.environ, SCB_JOB_START=str(time.time() - 5))
    assert runner("summarize", run, env=env).returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    secs = summary["component_seconds"]
    assert set(secs) == {"0", "1"} and all(0.2 <= v < 5 for v in secs.values())
    assert abs(summary["busy_seconds"] - sum(secs.values())) < 0.01
    assert summary["job_end"] - summary["job_start"] >= 5



def test_only_the_faults_the_stage_retries_are_tried_again(tmp_path):
    """bundle.json carries the stage's fault map and retried faults: exit 1 read as a data
    fault (5) fails at once, exit 2 (a system fault) and a signal mapped to 2 are tried again,
    an exit code the map does not name (fault 1) is not."""
    cmds = [pyc("import sys; sys.exit(1)"), pyc("import sys; sys.exit(2)"), pyc("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            pyc("import sys; sys.exit(77)")]  # fmt: skip
    run = with_policy(make_run(tmp_path / "run", cmds, [POST_OK] * 4), attempts=3,
                      fault_map={"1": 5, "2": 2, "-9": 2}, retry_faults=[2, 6])  # fmt: skip
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-3").returncode == 0
    assert [(r["exit"], r["attempts"]) for r in records(run, 0)] == [(1, 1), (2, 3), (-9, 3), (77, 1)]


def test_a_bundle_with_a_bad_fault_map_is_refused(tmp_path):
    run = with_policy(make_run(tmp_path / "run", [pyc("pass")], [POST_OK]), fault_map={"one": 5})
    p = runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0")
    assert p.returncode == 2 and "fault_map" in p.stderr


def test_a_post_printing_json_nested_too_deep_fails_its_component_not_the_rank(tmp_path):
    deep = pyc("print('[' * 100000 + ']' * 100000)")
    ok = pyc("print('fine')")
    run = make_run(tmp_path / "run", [ok, ok], [deep, POST_OK])
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-1").returncode == 0
    first, second = records(run, 0)
    assert (first["phase"], first["exit"]) == ("post", 1) and "nested too deep" in first["error"]
    assert second["exit"] == 0 and second["dbinfo"] is not None
