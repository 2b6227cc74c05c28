"""Stages from other distributions, found through the `scbundle.stages` entry points.

The plugin is the complete example of docs/stage-plugins.md, taken out of the page. It is
"installed" the way pip leaves a distribution: its package and a ``<name>.dist-info/``
(METADATA, entry_points.txt) in a directory on the path, here a temporary one on the
PYTHONPATH of the real `scbundle` command, so the virtual environment stays untouched and
importlib.metadata finds it exactly as it finds a real install.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pluginkit import install

DOC = Path(__file__).resolve().parents[2] / "docs" / "stage-plugins.md"

FLAKY = '''
"""Test-only stages: one whose build raises for the imfiles in $SCB_FLAKY_IDS, one that cannot load."""
import os

from scbundle_rawsum import RawsumStage


class FlakyStage(RawsumStage):
    name = "flaky"

    def build(self, session, stage_ids, ctx):
        bad = {int(x) for x in os.environ.get("SCB_FLAKY_IDS", "").split(",") if x}
        hit = sorted(bad & set(stage_ids))
        if hit:
            raise RuntimeError(f"cannot build imfile {hit}")
        return super().build(session, stage_ids, ctx)
'''


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


DOC_FILES = {"pyproject.toml", "scbundle_rawsum/__init__.py", "scbundle_rawsum/measure.py", "scbundle_rawsum/rawsum.param",
             "scbundle_rawsum/migrations/__init__.py", "scbundle_rawsum/migrations/r0001_rawsum_tables.py"}


def doc_files() -> dict[str, str]:
    """The files of the example: each fenced block under an `<!-- file: PATH -->` line."""
    text = DOC.read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, re.S))
    assert set(files) == DOC_FILES, files.keys()
    return {k: v + "\n" for k, v in files.items()}


def add_work(cli, tmp_path, stage="rawsum"):
    """Every demo raw image as a work item, through `scbundle work add` (the documented path)."""
    work = tmp_path / "files.jsonl"
    work.write_text("".join(json.dumps({"path": uri}) + "\n" for (uri,) in q(cli, "select uri from imfile order by imfile_id")))
    return cli.json("work", "add", stage, str(work))["stage_ids"]


@pytest.fixture
def plugins(cli, tmp_path):
    site = tmp_path / "plugins"
    files = doc_files()
    project = tomllib.loads(files["pyproject.toml"])["project"]
    points = project["entry-points"]
    install(site, project["name"], project["version"], points["scbundle.stages"],
            {k: v for k, v in files.items() if k != "pyproject.toml"},
            {g: v for g, v in points.items() if g != "scbundle.stages"})  # fmt: skip
    install(site, "scbundle-flaky-test", "0.1", {"flaky": "scbundle_flaky:FlakyStage", "broken": "scbundle_flaky:NoSuchStage"},
            {"scbundle_flaky/__init__.py": FLAKY})  # fmt: skip
    cli.env["PYTHONPATH"] = str(site)
    cli("db", "upgrade")
    cli("demo-data", "--images", "8")
    assert add_work(cli, tmp_path) == list(range(1, 9))
    return site


def shipped_dirs(cli):
    stages = cli.home / "site-local" / "permanent" / "stages" / "rawsum"  # the local site's permanent area
    return sorted(stages.iterdir()) if stages.exists() else []


def run_once(cli, label, tmp_path, *, expect="full"):
    """define, prepare, exec, poll one rawsum run; (remote_id, exec's report)."""
    add_work(cli, tmp_path)
    rid = cli.json("define", "--label", label, "--stage", "rawsum")["remote_id"]
    cli.json("prepare", "rawsum", "--remote-id", str(rid))
    done = cli.json("exec", "--remote-id", str(rid))
    if expect == "full":
        cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select state from remote_run where remote_id=?", rid) == [(expect,)]
    return rid, done


def test_the_documented_plugin_runs_define_prepare_exec_poll(cli, plugins, tmp_path):
    p = cli("define", "--label", "x", "--stage", "nope", check=False)
    assert p.returncode == 1 and "no stage named 'nope'" in p.stderr
    assert "rawsum" in p.stderr and "flaky" in p.stderr and "chip" in p.stderr  # the known ones, plugins too
    assert "rawsum" in cli("db", "status").stdout  # its own migration branch, applied by db upgrade
    rid = cli.json("define", "--label", "sums", "--stage", "rawsum")["remote_id"]
    prep = cli.json("prepare", "rawsum", "--remote-id", str(rid))[0]
    assert prep["n_components"] == 8 and prep["n_missing"] == 0
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select stage, state from remote_run") == [("rawsum", "full")]
    [ship] = shipped_dirs(cli)  # the plugin's files, on the site, content-addressed
    assert (ship / "measure.py").read_text() == (plugins / "scbundle_rawsum" / "measure.py").read_text()
    rows = q(cli, "select r.item_id, r.digest, r.nbytes, r.nlines, r.sums_uri, r.program, i.uri "
                  "from rawsum_result r join rawsum_item i using (item_id)")  # fmt: skip
    assert len(rows) == 8
    for _, digest, nbytes, nlines, sums, program, raw in rows:
        data = Path(raw).read_bytes()
        assert digest == hashlib.sha256(data).hexdigest() and nbytes == len(data)
        assert nlines is None  # rawsum.param lists digest and nbytes only
        assert program == str(ship / "measure.py")  # the site's verified copy ran, not the package's
        assert Path(sums).is_file() and "/rawsum/sums/" in sums  # the permanent product came back
        assert json.loads(Path(sums).read_text())["digest"] == digest
    st = cli.json("status", "--label", "sums")
    assert st["runs"][0]["ngood"] == 8


def test_shipped_files_go_once_a_version_and_a_swapped_copy_never_runs(cli, plugins, tmp_path):
    rid, first = run_once(cli, "a", tmp_path)
    [ship] = shipped_dirs(cli)
    assert "shipped files sent to" in (first[0]["note"] or "")
    inode = (ship / "measure.py").stat().st_ino
    cli("demo-data", "--images", "8")
    rid, again = run_once(cli, "b", tmp_path)  # nothing changed: nothing shipped
    assert again[0]["note"] is None and (ship / "measure.py").stat().st_ino == inode and shipped_dirs(cli) == [ship]
    # a changed file of the plugin is a new version: shipped again, the new config read there
    param = plugins / "scbundle_rawsum" / "rawsum.param"
    param.write_text(param.read_text() + "nlines\n")
    cli("demo-data", "--images", "8")
    rid, changed = run_once(cli, "c", tmp_path)
    assert "shipped files sent to" in (changed[0]["note"] or "")
    [new] = [d for d in shipped_dirs(cli) if d != ship]
    assert (new / "rawsum.param").read_text().endswith("nlines\n")
    rows = q(cli, "select nlines, program from rawsum_result where remote_id=?", rid)
    assert len(rows) == 8 and all(n is not None and p == str(new / "measure.py") for n, p in rows)
    # someone swaps the site's copy of the program: exec ships the right one again, the swap never runs
    pwned = tmp_path / "pwned"
    (new / "measure.py").write_text(f"open({str(pwned)!r}, 'w').write('ran')\n")
    cli("demo-data", "--images", "8")
    rid, swapped = run_once(cli, "d", tmp_path)
    assert "sent again" in (swapped[0]["note"] or "") and "does not match" in swapped[0]["note"]
    assert (new / "measure.py").read_text() == (plugins / "scbundle_rawsum" / "measure.py").read_text()
    assert len(q(cli, "select 1 from rawsum_result where remote_id=?", rid)) == 8 and not pwned.exists()
    # swapped after exec, before the job starts: the job script's own check stops it before any command
    (new / "measure.py").write_text(f"open({str(pwned)!r}, 'w').write('ran')\n")
    [(run_dir,)] = q(cli, "select remote_dir from remote_run where remote_id=?", rid)
    job = subprocess.run(["bash", f"{run_dir}/job.sh"], capture_output=True, text=True, timeout=60)
    assert job.returncode == 3 and "the stage's shipped files failed verification" in job.stderr, job.stderr
    assert "measure.py does not match" in job.stderr and not pwned.exists()
    # a copy another account could change (group-writable here) is refused: the run stays pending, nothing runs
    (new / "measure.py").write_text(f"open({str(pwned)!r}, 'w').write('ran')\n")
    os.chmod(new / "measure.py", 0o664)
    cli("demo-data", "--images", "8")
    add_work(cli, tmp_path)
    rid = cli.json("define", "--label", "e", "--stage", "rawsum")["remote_id"]
    cli.json("prepare", "rawsum", "--remote-id", str(rid))
    p = cli("exec", "--remote-id", str(rid), check=False)
    assert "measure.py" in p.stdout + p.stderr and "writable by group or others" in p.stdout + p.stderr
    assert q(cli, "select state, fault from remote_run where remote_id=?", rid) == [("pending", 3)]
    assert not pwned.exists() and q(cli, "select count(*) from rawsum_result where remote_id=?", rid) == [(0,)]


def test_a_component_whose_build_raises_is_faulted_4_and_the_rest_prepare(cli, plugins, tmp_path):
    cli.env["SCB_FLAKY_IDS"] = "3"
    rid = cli.json("define", "--label", "f", "--stage", "flaky")["remote_id"]
    prep = cli.json("prepare", "flaky", "--remote-id", str(rid))[0]
    assert prep["n_components"] == 7 and prep["n_missing"] == 1
    state, fault, message = q(cli, "select state, fault, message from remote_component where stage_id=3")[0]
    assert (state, fault) == ("error", 4) and "flaky build raised RuntimeError: cannot build imfile [3]" in message
    assert q(cli, "select count(*) from remote_component where state='pending'") == [(7,)]
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select state, fault from remote_run") == [("error", 4)]  # job_policy fatal: the build failure counts
    assert q(cli, "select state, fault from remote_component where stage_id=3") == [("error", 4)]
    assert q(cli, "select count(*) from rawsum_result") == [(7,)]
    # every component raising: the run fails at prepare, fault 4, nothing is shipped
    cli.env["SCB_FLAKY_IDS"] = ",".join(str(i) for i in range(1, 9))
    cli("demo-data", "--images", "8")
    assert add_work(cli, tmp_path, "flaky") == list(range(1, 17))
    rid2 = cli.json("define", "--label", "g", "--stage", "flaky")["remote_id"]
    cli.env["SCB_FLAKY_IDS"] = ",".join(str(i) for i in range(9, 17))
    prep = cli.json("prepare", "flaky", "--remote-id", str(rid2))[0]
    assert prep["n_components"] == 0 and prep["n_missing"] == 8
    assert q(cli, "select state, fault from remote_run where remote_id=?", rid2) == [("error", 4)]


def test_a_broken_plugin_is_named_and_breaks_only_its_own_commands(cli, plugins):
    p = cli("define", "--label", "x", "--stage", "broken", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "stage 'broken'" in p.stderr and "scbundle_flaky:NoSuchStage from scbundle-flaky-test" in p.stderr and "cannot be loaded" in p.stderr
    cli("define", "--label", "ok", "--stage", "chip")  # the others work


def test_config_validation_knows_plugin_stages(cli, plugins, monkeypatch):
    from scbundle.core.config import config_from_dict, embedded_default
    from scbundle.core.errors import ConfigError
    from scbundle.stages.registry import STAGES, check_config

    monkeypatch.syspath_prepend(str(plugins))
    STAGES.refresh()
    try:
        data = embedded_default(cli.home)
        cfg = check_config(config_from_dict({**data, "stages": {"rawsum": {"threads": 2}, "chip": {"next_stage": "rawsum"}}}, "t"))
        assert cfg.stage_settings("rawsum").threads == 2
        with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['rawsam'\].*rawsum"):
            check_config(config_from_dict({**data, "stages": {"rawsam": {}}}, "t"))
        # the documented plugin's own settings (its settings_model): a value it does not take, a misspelt key
        assert check_config(config_from_dict({**data, "stages": {"rawsum": {"algorithm": "sha512"}}}, "t"))
        with pytest.raises(ConfigError, match=r"stages\.rawsum\.algorithm"):
            check_config(config_from_dict({**data, "stages": {"rawsum": {"algorithm": "sha1"}}}, "t"))
        with pytest.raises(ConfigError, match=r"stages\.rawsum\.algoritm"):
            check_config(config_from_dict({**data, "stages": {"rawsum": {"algoritm": "sha512"}}}, "t"))
    finally:
        monkeypatch.undo()
        STAGES.refresh()
    assert "rawsum" not in STAGES and sys.path[0] != str(plugins)


EVIL = '''
from scbundle_rawsum import RawsumStage


class EvilStage(RawsumStage):
    name = "x$(touch${IFS}pwned)"
'''


def test_a_stage_name_with_shell_syntax_is_refused_naming_its_plugin(cli, plugins, tmp_path):
    """A stage name becomes part of job names and paths: a plugin registering one that is no
    plain identifier is refused (by name and distribution) and never listed; nothing runs."""
    name = "x$(touch${IFS}pwned)"
    install(plugins, "scbundle-evil-test", "0.1", {name: "scbundle_evil:EvilStage"}, {"scbundle_evil/__init__.py": EVIL})
    p = cli("define", "--label", "e", "--stage", name, check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert f"stage {name!r} (scbundle_evil:EvilStage from scbundle-evil-test) is refused: a stage name must be a plain identifier" in p.stderr
    p = cli("define", "--label", "e", "--stage", "nope", check=False)
    assert "rawsum" in p.stderr and name not in p.stderr  # the known stages, without it
    assert q(cli, "select count(*) from remote_run") == [(0,)]
    cli("define", "--label", "ok", "--stage", "rawsum")  # the plugins with plain names work
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()
