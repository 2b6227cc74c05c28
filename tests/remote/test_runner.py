"""sc_runner.py: pre / run / summarize, run as real subprocesses on a run directory."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REMOTE = Path(__file__).resolve().parents[2] / "remote"
RUNNER = REMOTE / "sc_runner.py"
CHIP = REMOTE / "sc_chip.py"
sys.path.insert(0, str(REMOTE))
import sc_chip  # noqa: E402
from sc_runner import parse_ids  # noqa: E402

PY = os.environ.get("SCBUNDLE_REMOTE_PYTHON", sys.executable)  # e.g. the remote's python3.9
NASTY = """a b 'single' "double"; echo pwned $HOME `x` \\ end"""


def runner(*args, env=None):
    return subprocess.run([PY, str(RUNNER), *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=env)


def pyc(code, *args):
    return shlex.join([PY, "-c", code, *map(str, args)])


def make_run(path, commands, posts, pre=(), remote_id=17, stage_ids=None):
    path.mkdir(parents=True, exist_ok=True)
    n = len(commands)
    stage_ids = stage_ids or [1000 + i for i in range(n)]
    (path / "bundle.json").write_text(json.dumps({
        "remote_id": remote_id, "stage": "chip", "attempt": 1,
        "job_name": "scb-%d-1" % remote_id, "nranks": 2, "threads": 1, "n_components": n}))
    (path / "components.tsv").write_text("".join("%d\t%s\n" % (i, s)
                                                  for i, s in enumerate(stage_ids)))
    (path / "commands.cmds").write_text("".join(c + "\n" for c in commands))
    (path / "post.cmds").write_text("".join(p + "\n" for p in posts))
    (path / "pre.cmds").write_text("".join(p + "\n" for p in pre))
    return path


def records(run, grank):
    text = (run / "results" / ("rank-%05d.jsonl" % grank)).read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def six(tmp_path):
    """A run directory with 6 components exercising every outcome."""
    data = tmp_path / "data"
    data.mkdir()
    sc_chip.make_demo_raw(data / "c0.raw", 64, 64, seed=3, saturate_fraction=0.01)
    sc_chip.make_demo_flat(data / "c0.flat", 64, 64, seed=4)
    argv_out = data / "argv.json"
    marker = data / "flaky.marker"
    post_ran = data / "post3.ran"
    commands = [
        # 0: the real chip program
        shlex.join([PY, str(CHIP), "process", "--raw", str(data / "c0.raw"), "--detrend",
                    str(data / "c0.flat"), "--out", str(data / "c0.proc"),
                    "--stats", str(data / "c0.stats")]),
        # 1: a nasty argument must arrive as one argv element
        pyc("import json,sys; open(sys.argv[1],'w').write(json.dumps(sys.argv[2:]))",
            argv_out, NASTY, "second"),
        # 2: fails once, then succeeds
        # (no newline inside a command: a .cmds line is one command)
        pyc("import os,sys; seen = os.path.exists(sys.argv[1]); "
            "open(sys.argv[1],'w').close(); "
            "seen or sys.stderr.write('first try fails\\n'); sys.exit(0 if seen else 7)",
            marker),
        # 3: always fails
        pyc("import sys; sys.stderr.write('boom: bad input\\n'); sys.exit(9)"),
        # 4: succeeds, but its post prints something that is not JSON
        pyc("print('fine')"),
        # 5: succeeds, post prints a JSON array (not an object)
        pyc("pass"),
    ]
    posts = [
        shlex.join([PY, str(CHIP), "dbinfo", "--stats", str(data / "c0.stats"),
                    "--imfile-id", "500"]),
        pyc("import json,sys; print(json.dumps({'table': 't', 'arg': sys.argv[1]}))", NASTY),
        pyc("print('{\"table\": \"t\", \"n\": 2}')"),
        pyc("import sys; open(sys.argv[1],'w').close(); print('{}')", post_ran),
        pyc("print('this is not json')"),
        pyc("print('[1, 2]')"),
    ]
    run = make_run(tmp_path / "runs" / "chip.17", commands, posts)
    return run, data


def test_run_records_every_outcome(six):
    run, data = six
    r = runner("run", run, "--rank", 1, "--offset", 4, "--ids", "0-2,3, 4,5")
    assert r.returncode == 0, r.stderr
    recs = records(run, 5)  # global rank = offset + rank
    assert [x["index"] for x in recs] == [0, 1, 2, 3, 4, 5]
    by = {x["index"]: x for x in recs}
    for x in recs:
        assert x["rank"] == 5 and x["stage_id"] == 1000 + x["index"]
        assert x["host"] and x["start"] <= x["end"]
        assert set(x) == {"index", "stage_id", "rank", "host", "attempts", "exit", "phase",
                          "start", "end", "dbinfo", "error"}

    c0 = by[0]
    assert (c0["exit"], c0["attempts"], c0["error"]) == (0, 1, None)
    assert c0["dbinfo"]["table"] == "chip_result"
    assert c0["dbinfo"]["key"] == {"imfile_id": 500}
    assert c0["dbinfo"]["values"]["nsat"] == round(0.01 * 64 * 64)

    assert json.loads((data / "argv.json").read_text()) == [NASTY, "second"]
    assert by[1]["exit"] == 0 and by[1]["dbinfo"] == {"table": "t", "arg": NASTY}

    assert (by[2]["attempts"], by[2]["exit"], by[2]["error"]) == (2, 0, None)
    assert by[2]["dbinfo"] == {"table": "t", "n": 2}

    c3 = by[3]
    assert (c3["attempts"], c3["exit"], c3["phase"], c3["dbinfo"]) == (2, 9, "command", None)
    assert "boom: bad input" in c3["error"]
    assert not (data / "post3.ran").exists()  # no post after a failed command

    c4 = by[4]
    assert (c4["attempts"], c4["exit"], c4["phase"], c4["dbinfo"]) == (1, 1, "post", None)
    assert "JSON" in c4["error"]
    assert (by[5]["exit"], by[5]["phase"], by[5]["dbinfo"]) == (1, "post", None)

    log = (run / "logs" / "rank-00005.log").read_text()
    assert "first try fails" in log and "boom: bad input" in log and "fine" in log
    assert log.count("index 3 ") >= 2  # a header line per attempt


def test_rerun_truncates_results_and_summarize(six):
    run, _ = six
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-2").returncode == 0
    assert runner("run", run, "--rank", 1, "--offset", 0, "--ids", "3,4").returncode == 0
    assert len(records(run, 1)) == 2
    # the job runs again: rank 1 now only gets to component 3
    assert runner("run", run, "--rank", 1, "--offset", 0, "--ids", "3").returncode == 0
    assert [x["index"] for x in records(run, 1)] == [3]

    r = runner("summarize", run)
    assert r.returncode == 0, r.stderr
    s = json.loads((run / "summary.json").read_text())
    assert (s["remote_id"], s["job_name"], s["n_components"]) == (17, "scb-17-1", 6)
    assert (s["n_good"], s["n_failed"], s["n_missing"]) == (3, 1, 2)
    assert s["missing"] == [4, 5]
    assert s["ranks"] == 2
    assert s["started"] <= s["ended"]
    cs = s["command_seconds"]
    assert 0 <= cs["median"] <= cs["max"] and 0 <= cs["mean"] <= cs["max"]
    assert not list(run.glob("summary.json.tmp*"))


def test_summarize_without_results(tmp_path):
    run = make_run(tmp_path / "r", [pyc("pass")] * 3, [""] * 3)
    assert runner("summarize", run).returncode == 0
    s = json.loads((run / "summary.json").read_text())
    assert (s["n_good"], s["n_failed"], s["n_missing"], s["missing"]) == (0, 0, 3, [0, 1, 2])
    assert s["started"] is None and s["command_seconds"]["max"] is None


def test_summarize_ignores_cut_short_lines_and_prefers_good(tmp_path):
    run = make_run(tmp_path / "r", [pyc("pass")] * 3, [""] * 3)
    (run / "results").mkdir()
    good = {"index": 0, "exit": 0, "start": 1.0, "end": 3.0}
    bad = {"index": 0, "exit": 4, "start": 5.0, "end": 6.0}
    (run / "results" / "rank-00000.jsonl").write_text(
        json.dumps(good) + "\n" + json.dumps({"index": 1, "exit": 2, "start": 1, "end": 2})
        + "\n" + '{"index": 2, "ex')
    (run / "results" / "rank-00001.jsonl").write_text(json.dumps(bad) + "\n")
    assert runner("summarize", run).returncode == 0
    s = json.loads((run / "summary.json").read_text())
    assert (s["n_good"], s["n_failed"], s["missing"]) == (1, 1, [2])


def test_empty_post_line_means_no_post(tmp_path):
    run = make_run(tmp_path / "r", [pyc("pass")], [""])
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0").returncode == 0
    (rec,) = records(run, 0)
    assert (rec["exit"], rec["phase"], rec["dbinfo"], rec["attempts"]) == (0, "command",
                                                                          None, 1)


def test_unstartable_and_killed_commands(tmp_path):
    run = make_run(tmp_path / "r", [
        shlex.join(["/nonexistent/program", "x"]),
        pyc("import os,signal; os.kill(os.getpid(), signal.SIGKILL)"),
        "python3 'unbalanced",
    ], [""] * 3)
    assert runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-2").returncode == 0
    a, b, c = records(run, 0)
    assert (a["exit"], a["attempts"]) == (127, 2) and "/nonexistent/program" in a["error"]
    assert (b["exit"], b["attempts"]) == (-9, 2)
    assert c["exit"] == 2 and "split" in c["error"]


@pytest.mark.parametrize("spec", ["", "1-", "-1", "a", "1,,2", "3-1", "1,1", "0-99",
                                  "1.5", "+1"])
def test_bad_spec_exits_2(tmp_path, spec):
    run = make_run(tmp_path / "r", [pyc("pass")] * 4, [""] * 4)
    r = runner("run", run, "--rank", 0, "--offset", 0, "--ids", spec)
    assert r.returncode == 2
    assert "ids" in r.stderr or "SPEC" in r.stderr


def test_unusable_run_dir_exits_2(tmp_path):
    r = runner("run", tmp_path / "nope", "--rank", 0, "--offset", 0, "--ids", "0")
    assert r.returncode == 2 and "nope" in r.stderr
    assert runner("pre", tmp_path / "nope").returncode == 2
    assert runner("summarize", tmp_path / "nope").returncode == 2


def test_parse_ids():
    assert parse_ids("0,5-9,12") == [0, 5, 6, 7, 8, 9, 12]
    assert parse_ids("7") == [7]
    assert parse_ids(" 3 , 1-2 ") == [3, 1, 2]
    assert parse_ids("4-4") == [4]
    for bad in ["", " ", ",", "1,", "x", "1-2-3", "2-1", "1,1", "0-3,2", "٣", "1e3"]:
        with pytest.raises(ValueError):
            parse_ids(bad)


def test_pre_mkdir_fast_path_and_failures(tmp_path):
    base = tmp_path / "scratch"
    dirs = [base / ("d%03d" % i) / "sub dir" for i in range(300)]
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    pre = [shlex.join(["mkdir", "-p", str(d), str(d) + "-b"]) for d in dirs]
    pre.append(pyc("import sys; sys.stderr.write('pre failed here\\n'); sys.exit(4)"))
    pre.append(shlex.join(["mkdir", "-p", str(blocker / "under_a_file")]))
    pre.append("")
    pre.append(pyc("import sys; open(sys.argv[1], 'w').write('ok')", tmp_path / "ran"))
    run = make_run(tmp_path / "r", [pyc("pass")], [""], pre=pre)
    # mkdir lines never start a process: they work even with no mkdir on PATH
    env = dict(os.environ, PATH="/nonexistent")
    r = runner("pre", run, env=env)
    assert r.returncode == 0, r.stderr
    for d in dirs:
        assert d.is_dir() and Path(str(d) + "-b").is_dir()
    assert (tmp_path / "ran").read_text() == "ok"
    res = json.loads((run / "results" / "pre.json").read_text())
    assert res["n"] == 303 and res["seconds"] >= 0
    failed = {f["line"]: f for f in res["failed"]}
    assert set(failed) == {300, 301}
    assert failed[300]["exit"] == 4 and "pre failed here" in failed[300]["stderr"]
    assert failed[301]["exit"] != 0 and "under_a_file" in failed[301]["stderr"]


def test_a_component_whose_input_is_gone_is_not_run_and_recorded_as_input(tmp_path):
    """inputs.tsv (prepare) + input-files.tsv (exec): the runner stats each component's
    inputs just before its command; one gone (purged, deleted) or of another size is not run."""
    data = tmp_path / "data"
    data.mkdir()
    files = {name: data / name for name in ("shared", "a", "b", "c")}
    for f in files.values():
        f.write_bytes(b"12345")
    ran = data / "ran"
    ran.mkdir()
    commands = [pyc("import sys; open(sys.argv[1], 'w').close()", ran / str(i)) for i in range(4)]
    run = make_run(tmp_path / "runs" / "chip.9", commands, [pyc("print('{}')")] * 4)
    order = ["shared", "a", "b", "c"]
    (run / "input-files.tsv").write_text("".join(f"{files[n]}\t5\t{'0' * 64}\n" for n in order))
    (run / "inputs.tsv").write_text("0\t0,1\n1\t0,2\n2\t0,3\n3\t\n")  # 3: a component with no input
    files["a"].unlink()  # deleted on the site after exec
    files["c"].write_bytes(b"123")  # cut short
    r = runner("run", run, "--rank", 0, "--offset", 0, "--ids", "0-3")
    assert r.returncode == 0, r.stderr
    by = {x["index"]: x for x in records(run, 0)}
    assert (by[0]["phase"], by[0]["exit"], by[0]["attempts"], by[0]["dbinfo"]) == ("input", 2, 0, None)
    assert by[0]["error"] == f"not started: input {files['a']} is missing on the site"
    assert (by[2]["phase"], by[2]["attempts"]) == ("input", 0)
    assert "has 3 bytes on the site, 5 were pushed" in by[2]["error"]
    assert (by[1]["exit"], by[1]["dbinfo"]) == (0, {}) and (by[3]["exit"], by[3]["dbinfo"]) == (0, {})
    assert sorted(p.name for p in ran.iterdir()) == ["1", "3"]  # the commands of 0 and 2 never ran
    s = runner("summarize", run)
    assert s.returncode == 0
    assert json.loads((run / "summary.json").read_text())["failed"] == [0, 2]
