"""`scbundle site check` on the embedded local site: the real command, real directories, real
owners. (The same against the ssh test site, with a second site account, is in
tests/link/test_site_security.py.)"""

from __future__ import annotations

import json
import os

import pytest

NOBODY = 65534


def rows(p) -> dict[str, dict]:
    return {d["path"]: d for d in json.loads(p.stdout)["dirs"]}


def test_a_fresh_site_is_clean_and_a_shipped_one_too(cli):
    cli("db", "upgrade")
    p = cli("site", "check", "--json")
    data = json.loads(p.stdout)
    assert data["ok"] and data["runs_total"] == 0
    perm = str(cli.site_root / "permanent")
    assert rows(p)[perm]["exists"] is False  # made at first use: not a problem
    cli("demo-data", "--images", "4")
    cli("define", "--label", "sc", "--stage", "chip")
    cli("prepare", "chip")
    cli("exec")
    data = json.loads(cli("site", "check", "--json").stdout)
    assert data["ok"] and data["runs_total"] == 1
    mine = {d["role"]: d for d in data["dirs"]}
    assert mine["tools/<hash>"]["exists"] and mine["tools/<hash>"]["mode"] == "0755"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another account needs root")
def test_writable_roots_foreign_run_directories_links_and_changed_tools_are_reported(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "4")
    cli("define", "--label", "sc", "--stage", "chip")
    cli("prepare", "chip")
    cli("exec")
    cli("poll", "--wait", "120")
    perm = cli.site_root / "permanent"
    perm.chmod(0o777)  # a shared project area: anyone may rename tools/ or runs/
    foreign = perm / "runs" / "chip.99.a1"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, NOBODY, NOBODY)
    (perm / "runs" / "chip.98.a1").symlink_to("/tmp")
    tools = next((perm / "tools").iterdir())
    with open(tools / "sc_chip.py", "a") as f:
        f.write("# changed\n")
    p = cli("site", "check", "--json", check=False)
    assert p.returncode == 1
    got = rows(p)
    assert got[str(perm)]["other_writable"] and got[str(perm)]["problems"] == ["writable by group and others"]
    assert got[str(foreign)]["owner"] == f"nobody ({NOBODY})"
    assert got[str(foreign)]["problems"] == [f"owned by nobody ({NOBODY}), not by this account"]
    assert got[str(perm / "runs" / "chip.98.a1")]["problems"] == ["a symbolic link (to /tmp)"]
    assert any(x.startswith("sc_chip.py: differs from this installation's") for x in got[str(tools)]["problems"])
    (inst,) = [d for d in (perm / "runs").iterdir() if "." not in d.name]  # runs/<installation>/
    assert got[str(inst)]["role"] == "installation directory" and got[str(inst)]["problems"] == []
    assert got[str(inst / "chip.1.a1")]["problems"] == []  # the real run's directory is fine
    cli.env["COLUMNS"] = "400"  # whole paths on one line each
    table = cli("site", "check", check=False)  # the same as a table, and one line on stderr
    assert table.returncode == 1 and "chip.99.a1" in table.stdout and "nobody" in table.stdout
    assert len(table.stderr.strip().splitlines()) == 1 and "another account could change" in table.stderr


def test_the_stages_shipped_files_directory_is_checked_too(cli):
    """permanent_root/stages holds the plugins' shipped files (Stage.shipped_files): one others
    can write is reported like tools/."""
    cli("db", "upgrade")
    stages = cli.site_root / "permanent" / "stages"
    stages.mkdir(parents=True)
    stages.chmod(0o777)
    p = cli("site", "check", "--json", check=False)
    assert p.returncode == 1
    got = rows(p)[str(stages)]
    assert got["role"] == "stages" and got["problems"] == ["writable by group and others"]
