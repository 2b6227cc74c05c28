"""Labels become directories here and on the site: the real command refuses one that is a path
(one clear line, nothing written anywhere), and a run holding one from an older version is
refused by prepare, exec and poll, naming the way out, instead of writing where it points."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def tree(root: Path, *skip: Path) -> set[str]:
    """Every path under root (the database's own files and the ``skip`` directories left out)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if any(Path(dirpath) == s or s in Path(dirpath).parents for s in skip):
            continue
        out.update(os.path.join(dirpath, n) for n in dirnames + filenames if not n.startswith("scbundle.db"))
    return out


@pytest.fixture
def home(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "6")
    return cli


@pytest.mark.parametrize("label", ["../x", "../../../../escaped", "a\nb", "x" * 10_000, ".hidden", "a/b", "-x", "", "a b", "tab\tx", "é"])
def test_define_refuses_a_label_that_is_not_a_plain_name(home, tmp_path, label):
    before = tree(tmp_path, home.home / "work")
    p = home("define", "--label", label, "--stage", "chip", check=False)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scbundle: error: label ") and "is refused: a label is 1-64 characters" in lines[0]
    assert len(lines[0]) < 400  # a 10,000-character label is not echoed whole
    assert q(home, "select count(*) from remote_run") == [(0,)]
    home("prepare", "chip")
    assert tree(tmp_path, home.home / "work") == before  # nothing written outside the workdir
    assert not (home.home / "work").exists() or not any((home.home / "work").iterdir())


def test_a_run_with_a_bad_label_from_an_older_version_is_refused_by_prepare_exec_and_poll(home, tmp_path):
    def one(rid: int) -> None:  # the label an older scbundle let through
        with sqlite3.connect(home.db_path) as c:
            c.execute("update remote_run set label='../raw' where remote_id=?", (rid,))

    r1 = home.json("define", "--label", "PV3.lanl", "--stage", "chip", "--limit", "2")["remote_id"]  # plain labels are taken
    r2 = home.json("define", "--label", "2024-06_b+2", "--stage", "chip", "--limit", "2")["remote_id"]
    r3 = home.json("define", "--label", "a" * 64, "--stage", "chip", "--limit", "2")["remote_id"]
    home("prepare", "chip", "--remote-id", str(r2))
    home("prepare", "chip", "--remote-id", str(r3))
    home("exec", "--remote-id", str(r3))
    mine = (home.home / "work", home.site_root)  # the bundles, and the site's run directories (its job runs meanwhile)
    before = tree(tmp_path, *mine)

    one(r1)  # new -> prepare
    p = home("prepare", "chip", "--remote-id", str(r1), check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "its label '../raw' cannot be part of a path" in p.stderr and f"scbundle retire --remote-id {r1}" in p.stderr
    state, fault, message = q(home, "select state, fault, message from remote_run where remote_id=?", r1)[0]
    assert (state, fault) == ("error", 3) and "retire" in message
    assert not (home.home / "raw").exists() and not (home.home / "work" / "raw").exists()

    one(r2)  # pending -> exec
    p = home("exec", "--remote-id", str(r2), check=False)
    assert p.returncode == 1 and "exec refused, run stays pending" in p.stderr and "retire" in p.stderr
    assert q(home, "select state, fault, job_id from remote_run where remote_id=?", r2) == [("pending", 3, None)]

    one(r3)  # run -> poll
    p = home("poll", "--remote-id", str(r3), "--wait", "30", check=False)
    assert p.returncode == 1 and "poll failed, nothing replayed (the run stays in run" in p.stderr and "retire" in p.stderr
    assert q(home, "select state from remote_run where remote_id=?", r3) == [("run",)]
    assert q(home, "select count(*) from chip_result") == [(0,)]
    assert tree(tmp_path, *mine) == before  # nothing was written anywhere else
