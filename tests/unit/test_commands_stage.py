"""The `commands` stage's task file, checked when it is read (pure: scbundle.stages.commands)."""

from __future__ import annotations

import json

import pytest

from scbundle.core.config import PathRule
from scbundle.site.pathmap import PathMap
from scbundle.stages.commands import CommandsStage, parse_task, words_on_site
from scbundle.stages.work import WorkError, read_work_file

PM = PathMap.of([PathRule(local="/data", remote="/scratch/data")])


def task(**over):
    t = {"command": ["sex", "{input0}", "-c", "{input1}", "-CATALOG_NAME", "{output0}"],
         "inputs": ["/data/raw/a.fits", "/data/conf/default.sex"], "outputs": ["/data/cat/a.cat"]}  # fmt: skip
    t.update(over)
    return {k: v for k, v in t.items() if v is not None}


def test_a_task_and_its_words_on_the_site():
    t = parse_task(task(key="a", cost=30, threads=2), PM)
    assert (t.key, t.cost, t.threads) == ("a", 30.0, 2)
    assert words_on_site(t, PM) == ("sex", "/scratch/data/raw/a.fits", "-c", "/scratch/data/conf/default.sex", "-CATALOG_NAME", "/scratch/data/cat/a.cat")
    # other braces are the command's own
    t = parse_task(task(command=["awk", "{print $1}", "{input0}"]), PM)
    assert words_on_site(t, PM) == ("awk", "{print $1}", "/scratch/data/raw/a.fits")


def test_the_default_key_is_the_tasks_content():
    a, b = parse_task(task(), PM), parse_task(task(), PM)
    assert a.key == b.key and a.key.startswith("sha256:")
    assert parse_task(task(outputs=["/data/cat/b.cat"]), PM).key != a.key


@pytest.mark.parametrize("bad, why", [
    (task(command=None), "missing field 'command'"),
    (task(command=[]), "non-empty list"),
    (task(command=["x\ny"]), "newline"),
    (task(inputs=["/elsewhere/a.fits"]), "inputs[0] '/elsewhere/a.fits' is outside every path rule"),
    (task(outputs=["relative.cat"]), "outputs[0] 'relative.cat' is not an absolute path"),
    (task(command=["sex", "{input2}"]), "placeholder {input2} in '{input2}' names no file (2 inputs)"),
    (task(command=["sex", "{output1}"]), "placeholder {output1}"),
    (task(cost=-1), "'cost' must be seconds"),
    (task(threads=0), "'threads'"),
    (task(threads=True), "'threads'"),
    (task(key=""), "'key'"),
    (task(extra=1), "unknown field(s) ['extra']"),
])
def test_a_bad_task_is_refused_naming_the_problem(bad, why):
    with pytest.raises(ValueError) as ei:
        parse_task(bad, PM)
    assert why in str(ei.value)


def test_a_bad_line_of_a_task_file_is_named(tmp_path):
    f = tmp_path / "tasks.jsonl"
    f.write_text(json.dumps(task()) + "\n\n# a comment\n{not json\n")
    with pytest.raises(WorkError, match=rf"{f}:4: not one JSON object"):
        read_work_file(CommandsStage(), f)
    f.write_text("[1, 2]\n")
    with pytest.raises(WorkError, match=rf"{f}:1: a work item is a JSON object"):
        read_work_file(CommandsStage(), f)
    f.write_bytes(b"\xff\n")
    with pytest.raises(WorkError, match="not UTF-8"):
        read_work_file(CommandsStage(), f)
    f.write_text("\n# nothing\n")
    with pytest.raises(WorkError, match="no work items"):
        read_work_file(CommandsStage(), f)
