"""bin/srun (the multi-prog emulator of the `local` scheduler) and remote/multiprog.py.

The limits and quoting rules mirror Slurm 22.05: srun's _load_multi() and
verify_multi_name() (src/plugins/launch/slurm/launch_slurm.c,
src/srun/libsrun/multi_prog.c) and slurmstepd's multi_prog_get_argv()
(src/slurmd/slurmstepd/multi_prog.c).  The emulator runs as a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REMOTE = Path(__file__).resolve().parents[2] / "remote"
SRUN = REMOTE / "bin" / "srun"
sys.path.insert(0, str(REMOTE))

import multiprog  # noqa: E402

PY = sys.executable
HOST = socket.gethostname().split(".")[0]

SHOW = """\
import json, os, sys
print(json.dumps({"rank": int(os.environ["SLURM_PROCID"]),
                  "ntasks": os.environ["SLURM_NTASKS"],
                  "step_tasks": os.environ["SLURM_STEP_NUM_TASKS"],
                  "localid": os.environ["SLURM_LOCALID"],
                  "nodeid": os.environ["SLURM_NODEID"],
                  "argv": sys.argv[1:]}))
"""


@pytest.fixture
def show(tmp_path):
    p = tmp_path / "show.py"
    p.write_text(SHOW)
    return p


def srun(args, cwd, env=None, timeout=10):
    full_env = dict(os.environ)
    for k in ("SLURM_NTASKS", "SLURM_NPROCS"):
        full_env.pop(k, None)
    full_env.update(env or {})
    return subprocess.run(
        [PY, str(SRUN), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def records(stdout):
    out = {}
    for line in stdout.splitlines():
        rec = json.loads(line)
        out[rec["rank"]] = rec
    return out


def task_line(ranks, show, *args):
    return " ".join([ranks, f"'{PY}'", f"'{show}'", *args])


def test_srun_is_an_executable_python3_script():
    assert os.access(SRUN, os.X_OK)
    assert SRUN.read_text().startswith("#!/usr/bin/env python3\n")


# ----------------------------------------------------------------------------- limits


def _config_of_size(size, first_line):
    """first_line, then '#' comment lines (each under the line limit) up to size bytes."""
    text = first_line
    while len(text) < size:
        room = size - len(text)
        chunk = min(room, 10000)
        text += ("#" + "x" * (chunk - 2) + "\n") if chunk >= 2 else "\n"
    assert len(text.encode()) == size
    return text


def test_config_of_60000_bytes_runs(tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text(_config_of_size(60000, "0 true\n"))
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_config_of_60001_bytes_is_too_large(tmp_path):
    conf = tmp_path / "big.conf"
    conf.write_text(_config_of_size(60001, "0 touch ran\n"))
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 1
    assert r.stderr == f"srun: error: Multi_prog config file {conf} is too large\n"
    assert not (tmp_path / "ran").exists()


def test_line_of_16381_characters_passes_with_its_argument_intact(tmp_path, show):
    head = task_line("0", show) + " "
    long_arg = "a" * (16381 - len(head))
    conf = tmp_path / "c.conf"
    conf.write_text(head + long_arg + "\n")
    assert len(conf.read_text().split("\n")[0]) == 16381
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert records(r.stdout)[0]["argv"] == [long_arg]


def test_line_of_16382_characters_is_too_long(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0 true\n" + "#" + "x" * 16381 + "\n")
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 1
    assert r.stderr == f"srun: error: Line 2 of configuration file {conf} too long\n"


def test_line_limit_counts_bytes_with_the_newline():
    ok = "0 true " + "a" * (16381 - 7)
    assert multiprog.parse_config(ok + "\n", 1)[0][1] == "a" * 16374
    with pytest.raises(multiprog.MultiProgError, match="too long"):
        multiprog.parse_config(ok + "a\n", 1)
    # without a final newline fgets() returns one byte less: 16382 characters pass
    assert multiprog.parse_config(ok + "a", 1)
    with pytest.raises(multiprog.MultiProgError, match="too long"):
        multiprog.parse_config(ok + "aa", 1)


def test_127_words_a_line_pass(tmp_path, show):
    args = [f"a{i}" for i in range(125)]  # + python + show.py = 127 words
    conf = tmp_path / "c.conf"
    conf.write_text(task_line("0", show, *args) + "\n")
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert records(r.stdout)[0]["argv"] == args


def test_128_words_a_line_are_refused(tmp_path, show):
    args = [f"a{i}" for i in range(126)]  # 128 words: Slurm would drop the last one
    conf = tmp_path / "c.conf"
    conf.write_text(task_line("0", show, *args) + "\n")
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("srun: error: Exceeded multi-prog argc limit")
    assert r.stdout == ""


def test_argc_limit_truncates_like_slurm_when_asked():
    words = [f"w{i}" for i in range(130)]
    argv = multiprog.parse_config("0 " + " ".join(words) + "\n", 1, truncate_argc=True)[0]
    assert argv == words[:127]
    assert multiprog.parse_config("0 " + " ".join(words[:127]) + "\n", 1)[0] == words[:127]
    # srun's extra arguments count against the same limit
    with pytest.raises(multiprog.MultiProgError, match="argc limit"):
        multiprog.parse_config("0 " + " ".join(words[:127]) + "\n", 1, extra_args=["x"])


# ---------------------------------------------------------------------- substitution


def test_rank_and_offset_substitution_and_single_quotes(tmp_path, show):
    conf = tmp_path / "c.conf"
    conf.write_text(
        "# rank lists: offsets count within each line\n"
        + task_line("0,2", show, "t=%t", "o=%o", "'%t and %o stay'", "r%t.log")
        + "\n\n   # indented comment\n"
        + task_line("1,3", show, "t=%t", "o=%o", "'a b  c'")
        + "\n"
    )
    r = srun(["-n", 4, "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout)
    assert recs[0]["argv"] == ["t=0", "o=0", "%t and %o stay", "r0.log"]
    assert recs[2]["argv"] == ["t=2", "o=1", "%t and %o stay", "r2.log"]
    assert recs[1]["argv"] == ["t=1", "o=0", "a b  c"]
    assert recs[3]["argv"] == ["t=3", "o=1", "a b  c"]
    for rank, rec in recs.items():
        assert rec["ntasks"] == rec["step_tasks"] == "4"
        assert rec["localid"] == str(rank)
        assert rec["nodeid"] == "0"


def test_double_quotes_do_not_group(tmp_path, show):
    conf = tmp_path / "c.conf"
    conf.write_text(task_line("*", show, '"a b"', "'c d'") + "\n")
    r = srun(["-n", 1, "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert records(r.stdout)[0]["argv"] == ['"a', 'b"', "c d"]


def test_parse_rules_from_the_slurm_source():
    p = multiprog.parse_config
    assert p("* prog %t %o\n", 3) == [["prog", str(i), str(i)] for i in range(3)]
    assert p("4-6,9 prog %o\n0-3,7-8 q %o\n", 10)[9] == ["prog", "3"]
    assert p("4-6,9 prog %o\n0-3,7-8 q %o\n", 10)[7] == ["q", "4"]
    # '*' last covers the ranks not named before it
    assert p("0 a\n* b %o\n", 3) == [["a"], ["b", "1"], ["b", "2"]]
    # backslash takes the next character; at the end of a line it joins the next one
    assert p("0 a\\ b \\'x\\' \\%t\n", 1) == [["a b", "'x'", "%t"]]
    assert p("0 a b\\\nc\n", 1) == [["a", "bc"]]
    # % followed by anything but t or o: both characters are dropped
    assert p("0 a 5%x5 %%\n", 1) == [["a", "55", ""]]
    assert p("0 a '' b\n", 1) == [["a", "", "b"]]
    # srun's extra arguments go to every task
    assert p("* a %t\n", 2, extra_args=["x y"]) == [["a", "0", "x y"], ["a", "1", "x y"]]


@pytest.mark.parametrize(
    "text, ntasks, messages",
    [
        ("0-1 a\n", 3, ["Configuration file C invalid, no record for task id 2"]),
        ("0 a\n0 b\n", 1, ["Duplicate record for task 0", "Line 2 of configuration file C invalid"]),
        ("* a\n0 b\n", 1, ["Task range specification with asterisk must be last",
                           "Line 2 of configuration file C invalid"]),
        ("3-1 a\n", 4, ["Invalid task range, 3-1", "Line 1 of configuration file C invalid"]),
        ("0-4 a\n", 2, ["Invalid task id, 4 >= ntasks", "Line 1 of configuration file C invalid"]),
        ("x a\n", 1, ["Invalid task range specification (x)",
                      "Line 1 of configuration file C invalid"]),
        ("0\n", 1, ["Line 1 of configuration file C invalid"]),
        ("0 a 'open\n", 1, ["Program arguments specification format invalid: a."]),
    ],
)
def test_config_errors_carry_sruns_messages(text, ntasks, messages):
    with pytest.raises(multiprog.MultiProgError) as ei:
        multiprog.parse_config(text, ntasks, conf_name="C")
    assert ei.value.messages == messages


def test_percent_at_end_of_line_is_refused():
    with pytest.raises(multiprog.MultiProgError, match="ends in '%'"):
        multiprog.parse_config("0 a 100%\n", 1)


# ------------------------------------------------------------------------ task counts


def test_a_rank_without_a_line_is_an_error_and_nothing_runs(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0-1 touch ran%t\n")
    r = srun(["-n", 3, "--multi-prog", conf], tmp_path)
    assert r.returncode == 1
    assert r.stderr == (
        f"srun: error: Configuration file {conf} invalid, no record for task id 2\n"
    )
    assert list(tmp_path.glob("ran*")) == []


def test_slurm_ntasks_is_used_without_n(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0-1 true\n")
    r = srun(["--multi-prog", conf], tmp_path, env={"SLURM_NTASKS": "3"})
    assert r.returncode == 1
    assert "no record for task id 2" in r.stderr


def test_without_n_or_slurm_ntasks_the_config_sets_the_count(tmp_path, show):
    conf = tmp_path / "c.conf"
    conf.write_text(task_line("0-2", show, "%t") + "\n")
    r = srun(["--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    recs = records(r.stdout)
    assert sorted(recs) == [0, 1, 2]
    assert {rec["ntasks"] for rec in recs.values()} == {"3"}


# ------------------------------------------------------------------- running the step


def test_label_prefixes_each_stream_separately(tmp_path):
    script = tmp_path / "both.py"
    script.write_text(
        "import os, sys\n"
        "r = os.environ['SLURM_PROCID']\n"
        "print('out', r, flush=True)\n"
        "print('err', r, file=sys.stderr, flush=True)\n"
        "print('out2', r)\n"
    )
    conf = tmp_path / "c.conf"
    conf.write_text(f"* '{PY}' '{script}'\n")
    r = srun(["-n", 2, "-l", "-c", 2, "--exact", "-J", "step", "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["0: out 0", "0: out2 0", "1: out 1", "1: out2 1"]
    assert sorted(r.stderr.splitlines()) == ["0: err 0", "1: err 1"]
    for rank in "01":  # lines of one task keep their order
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith(rank + ":")]
        assert lines == [f"{rank}: out {rank}", f"{rank}: out2 {rank}"]


def test_label_width_follows_the_highest_rank(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("* echo hi\n")
    r = srun(["-n", 11, "-l", "--multi-prog", conf], tmp_path)
    assert r.returncode == 0, r.stderr
    assert " 3: hi" in r.stdout.splitlines()
    assert "10: hi" in r.stdout.splitlines()


def test_failed_tasks_are_reported_and_the_largest_code_wins(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0 true\n1 sh -c 'exit 3'\n2 sh -c 'exit 5'\n3 true\n")
    r = srun(["-n", 4, "--multi-prog", conf], tmp_path)
    assert r.returncode == 5
    lines = sorted(r.stderr.splitlines())
    assert lines == [
        f"srun: error: {HOST}: task 1: Exited with exit code 3",
        f"srun: error: {HOST}: task 2: Exited with exit code 5",
    ]


def test_a_missing_program_fails_its_task_like_slurmstepd(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0 true\n1 no-such-program-xyz\n")
    r = srun(["-n", 2, "--multi-prog", conf], tmp_path)
    assert r.returncode == 2
    assert "slurmstepd: error: execve(): no-such-program-xyz: No such file or directory" in r.stderr
    assert f"srun: error: {HOST}: task 1: Exited with exit code 2" in r.stderr


def test_kill_on_bad_exit_stops_the_other_tasks(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("0 sh -c 'exit 4'\n1-2 sleep 30\n")
    t0 = time.monotonic()
    r = srun(["-n", 3, "-K", "--multi-prog", conf], tmp_path)
    assert time.monotonic() - t0 < 5
    assert f"srun: error: {HOST}: task 0: Exited with exit code 4" in r.stderr
    assert f"srun: error: {HOST}: task 1: Terminated" in r.stderr
    # as in Slurm's _task_finish(): a task killed by a signal outranks exit codes
    assert r.returncode == 128 + signal.SIGTERM


def test_sigterm_is_forwarded_to_the_tasks(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("* sh -c 'echo started; exec sleep 30'\n")
    env = dict(os.environ)
    env.pop("SLURM_NTASKS", None)
    p = subprocess.Popen(
        [PY, str(SRUN), "-n", "2", "--multi-prog", str(conf)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert p.stdout.readline() == "started\n"
        assert p.stdout.readline() == "started\n"
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 128 + signal.SIGTERM
    assert "Exited" not in p.stderr.read()


def test_plain_command_runs_on_every_task(tmp_path):
    r = srun(["-n", 3, "-l", "sh", "-c", "echo $SLURM_PROCID/$SLURM_NTASKS"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["0: 0/3", "1: 1/3", "2: 2/3"]


def test_unknown_option_is_refused(tmp_path):
    r = srun(["--no-such-option", "true"], tmp_path)
    assert r.returncode == 1
    assert "unrecognized option '--no-such-option'" in r.stderr


@pytest.mark.parametrize(
    "text, ntasks",
    [
        ("0,2 p t=%t o=%o\n1,3 p %t%o\n", 4),
        ("4-6,9 prog %o\n0-3,7-8 q %o\n", 10),
        ("0 a\n* b %o '%t x'\n", 3),
        ("0 a\\\n1 this line continues rank 0\n1 b\n", 2),
        ("# a comment ending in a backslash swallows the next line \\\n0 x\n0-1 y %o\n", 2),
    ],
)
def test_one_pass_parse_matches_slurmstepds_per_task_parse(text, ntasks):
    argvs = multiprog.parse_config(text, ntasks)
    assert argvs == [multiprog.task_argv(text, r) for r in range(ntasks)]
