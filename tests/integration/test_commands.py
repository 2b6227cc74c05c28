"""The no-code `commands` stage end to end on the embedded `local` site: a task file of 1,000
tasks (some failing, many sharing their inputs) through define --tasks, prepare, exec, poll,
and what a refused task file says."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

N_TASKS = 1000
N_SHARED = 10  # each shared file is an input of 100 tasks
FAILING = {i for i in range(N_TASKS) if i % 97 == 13}


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def task_file(cli, tmp_path: Path) -> Path:
    data = cli.home / "data"
    (data / "in").mkdir(parents=True, exist_ok=True)
    for j in range(N_SHARED):
        (data / "in" / f"shared{j}.txt").write_text(f"shared {j}\n")
    lines = []
    for i in range(N_TASKS):
        own = data / "in" / f"t{i}.txt"
        own.write_text(f"task {i}\n")
        script = 'cat "$1" "$2" > "$3"; printf "%s\\n" "{\\"n\\": $4}"' + ("; exit 1" if i in FAILING else "")
        lines.append(json.dumps({
            "command": ["/bin/sh", "-c", script, "sh", "{input0}", "{input1}", "{output0}", str(i)],
            "inputs": [str(own), str(data / "in" / f"shared{i % N_SHARED}.txt")],
            "outputs": [str(data / "out" / f"t{i}.out")], "key": f"t{i}", "cost": 0.05,
        }))  # fmt: skip
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_task_file_of_1000_commands_runs_to_the_right_states(cli, tmp_path):
    cli("db", "upgrade")
    tasks = task_file(cli, tmp_path)
    rid = cli.json("define", "--stage", "commands", "--tasks", str(tasks), "--label", "cmds")["remote_id"]
    assert q(cli, "select count(*) from commands_task") == [(N_TASKS,)]
    cli("prepare", "commands", "--remote-id", str(rid))
    e = cli.json("exec", "--remote-id", str(rid))[0]
    assert e["pushed_files"] == N_TASKS + N_SHARED  # each shared input shipped once
    cli("poll", "--remote-id", str(rid), "--wait", "600", timeout=900)
    assert q(cli, "select state, fault from remote_run") == [("error", 1)]  # exit 1: unknown, not retried
    states = dict(q(cli, "select state, count(*) from remote_component group by state"))
    assert states == {"full": N_TASKS - len(FAILING), "error": len(FAILING)}
    failed = {r[0] - 1 for r in q(cli, "select stage_id from remote_component where state='error'")}
    assert failed == FAILING  # task_id = line + 1
    assert q(cli, "select distinct attempts, exit_code from remote_component where state='error'") == [(1, 1)]
    out = dict(q(cli, "select task_id, output from commands_result"))
    assert len(out) == N_TASKS - len(FAILING)
    assert all(json.loads(v) == {"n": k - 1} for k, v in out.items())
    outs = cli.home / "data" / "out"
    assert sorted(int(p.stem[1:]) for p in outs.iterdir()) == sorted(set(range(N_TASKS)) - FAILING)
    assert (outs / "t5.out").read_text() == "task 5\nshared 5\n"
    # the same file again adds nothing; the failed ones come back with revert
    p = cli("define", "--stage", "commands", "--tasks", str(tasks), "--label", "again", check=False)
    assert p.returncode == 1 and "already in a run" in p.stderr
    assert q(cli, "select count(*) from commands_task") == [(N_TASKS,)]


def test_a_refused_task_file_names_its_line_and_adds_nothing(cli, tmp_path):
    cli("db", "upgrade")
    data = cli.home / "data"
    data.mkdir(parents=True)
    (data / "a").write_text("a")
    good = {"command": ["cat", "{input0}"], "inputs": [str(data / "a")]}
    cases = {
        "missing": ({"inputs": [str(data / "a")]}, "missing field 'command'"),
        "outside": ({"command": ["cat", "{input0}"], "inputs": ["/etc/passwd"]}, "outside every path rule"),
        "placeholder": ({"command": ["cat", "{input1}"], "inputs": [str(data / "a")]}, "placeholder {input1}"),
        "duplicate": ({**good, "key": "k"}, "duplicate key 'k'"),
    }
    for name, (bad, why) in cases.items():
        f = tmp_path / f"{name}.jsonl"
        first = {**good, "key": "k"} if name == "duplicate" else good
        f.write_text(json.dumps(first) + "\n" + json.dumps(bad) + "\n")
        p = cli("define", "--stage", "commands", "--tasks", str(f), "--label", "x", check=False)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 1 and len(lines) == 1 and f"{f}:2:" in lines[0] and why in lines[0], (name, p.stderr)
    assert q(cli, "select count(*) from commands_task") == [(0,)] and q(cli, "select count(*) from remote_run") == [(0,)]
    # work add: the supported way in, without a run; a stage that takes no items says so
    f = tmp_path / "ok.jsonl"
    f.write_text(json.dumps(good) + "\n")
    assert "1 commands work item(s)" in cli("work", "add", "commands", str(f)).stdout
    p = cli("work", "add", "chip", str(f), check=False)
    assert p.returncode == 1 and "takes no work items" in p.stderr
    assert cli.json("define", "--stage", "commands", "--label", "y")["n_components"] == 1
