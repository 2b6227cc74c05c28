"""Stages from other distributions, found through the `scbundle.stages` entry points.

The plugin is the complete example of docs/stage-plugins.md, taken out of the page. It is
"installed" the way pip leaves a distribution: its package and a ``<name>.dist-info/``
(METADATA, entry_points.txt) in a directory on the path, here a temporary one on the
PYTHONPATH of the real `scbundle` command, so the virtual environment stays untouched and
importlib.metadata finds it exactly as it finds a real install.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
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


def doc_files() -> dict[str, str]:
    """The files of the example: each fenced block under an `<!-- file: PATH -->` line."""
    text = DOC.read_text()
    files = dict(re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)\n```", text, re.S))
    assert set(files) == {"pyproject.toml", "scbundle_rawsum/__init__.py"}, files.keys()
    return files


@pytest.fixture
def plugins(cli, tmp_path):
    site = tmp_path / "plugins"
    files = doc_files()
    project = tomllib.loads(files["pyproject.toml"])["project"]
    install(site, project["name"], project["version"], project["entry-points"]["scbundle.stages"],
            {k: v for k, v in files.items() if k.endswith(".py")})  # fmt: skip
    install(site, "scbundle-flaky-test", "0.1", {"flaky": "scbundle_flaky:FlakyStage", "broken": "scbundle_flaky:NoSuchStage"},
            {"scbundle_flaky/__init__.py": FLAKY})  # fmt: skip
    cli.env["PYTHONPATH"] = str(site)
    cli("db", "upgrade")
    cli("demo-data", "--images", "8")
    return site


def test_the_documented_plugin_runs_define_prepare_exec_poll(cli, plugins):
    p = cli("define", "--label", "x", "--stage", "nope", check=False)
    assert p.returncode == 1 and "no stage named 'nope'" in p.stderr
    assert "rawsum" in p.stderr and "flaky" in p.stderr and "chip" in p.stderr  # the known ones, plugins too
    rid = cli.json("define", "--label", "sums", "--stage", "rawsum")["remote_id"]
    prep = cli.json("prepare", "rawsum", "--remote-id", str(rid))[0]
    assert prep["n_components"] == 8 and prep["n_missing"] == 0
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select stage, state from remote_run") == [("rawsum", "full")]
    rows = q(cli, "select r.imfile_id, r.sha256, r.nbytes, r.sums_uri, i.uri from rawsum_result r join imfile i using (imfile_id)")
    assert len(rows) == 8
    for _, digest, nbytes, sums, raw in rows:
        data = Path(raw).read_bytes()
        assert digest == hashlib.sha256(data).hexdigest() and nbytes == len(data)
        assert Path(sums).is_file() and "/rawsum/sums/" in sums  # the permanent product came back
    st = cli.json("status", "--label", "sums")
    assert st["runs"][0]["ngood"] == 8


def test_a_component_whose_build_raises_is_faulted_4_and_the_rest_prepare(cli, plugins):
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
