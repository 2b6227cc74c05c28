"""The local host's defences through the real `scbundle` command on the embedded `local` site
(docs/security.md): a second local user planting claim locks, the site's text carrying terminal
sequences, secrets in configuration errors, host-key checking said out loud."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from cousers import co_user  # noqa: F401  (a fixture)

from scbundle.core.config import embedded_default


def one_error_line(p) -> str:
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def write_config(cli, path: Path, **changes) -> Path:
    cfg = embedded_default(cli.home)
    site = changes.pop("site", {})
    cfg["sites"]["local"].update(site)
    cfg.update(changes)
    path.write_text(tomli_w.dumps(cfg))
    return path


# --- a second local user and the claim locks ----------------------------------------------


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp (world-writable, sticky) that the database lives in."""
    d = Path(tempfile.mkdtemp(prefix="scbs-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("planted", ["their-claims-dir", "link-in-a-loose-claims-dir"])
def test_a_co_user_planting_a_claim_lock_link_never_gets_an_operators_file_written(cli, co_user, shared, tmp_path, planted):  # noqa: F811
    cfg = write_config(cli, tmp_path / "c.toml", database=f"sqlite:///{shared / 'scbundle.db'}")
    run = lambda *a, **k: cli("--config", str(cfg), *a, **k)  # noqa: E731
    run("db", "upgrade")
    run("demo-data", "--images", "3")
    run("define", "--label", "x", "--stage", "chip")
    victim = tmp_path / "precious.txt"  # a file only the operator can write
    victim.write_text("the operator's data\n")
    claims = shared / "scbundle.db.claims"
    if planted == "their-claims-dir":  # made before the operator's first claim
        co_user.python("import os, sys; os.mkdir(sys.argv[1], 0o777); os.chmod(sys.argv[1], 0o777); os.symlink(sys.argv[2], sys.argv[1] + '/run-1.lock')",
                       str(claims), str(victim))  # fmt: skip
    else:  # the operator's own, left 0777 (an older scbundle under a loose umask, the co-user in its group)
        claims.mkdir()
        claims.chmod(0o777)
        co_user.python("import os, sys; os.symlink(sys.argv[2], sys.argv[1] + '/run-1.lock')", str(claims), str(victim))
    assert os.lstat(claims / "run-1.lock").st_uid == co_user.uid

    line = one_error_line(run("prepare", "chip", "--remote-id", "1", check=False))
    assert victim.read_text() == "the operator's data\n"  # never truncated, never written
    if planted == "their-claims-dir":
        assert f"claims directory {claims} belongs to uid {co_user.uid} ({co_user.name}), not to you" in line
        shutil.rmtree(claims)  # the way out the line names
    else:
        assert f"claim lock file {claims / 'run-1.lock'} is a symbolic link: refused, nothing written through it" in line
        assert stat.S_IMODE(claims.stat().st_mode) == 0o700  # tightened: nobody else plants again
        (claims / "run-1.lock").unlink()
    with sqlite3.connect(shared / "scbundle.db") as c:
        assert c.execute("select state from remote_run").fetchall() == [("new",)]  # nothing half-done
    run("prepare", "chip", "--remote-id", "1")
    with sqlite3.connect(shared / "scbundle.db") as c:
        assert c.execute("select state from remote_run").fetchall() == [("pending",)]
    assert stat.S_IMODE(claims.stat().st_mode) == 0o700 and claims.stat().st_uid == 0


# --- the site's text and the terminal ----------------------------------------------------

HOSTILE = (
    "\x1b]0;owned-title\x07"  # OSC 0: the window title
    "\x1b[2J\x1b[H"  # clear the screen
    "\x1b]8;;http://evil.example/\x1b\\click here\x1b]8;;\x1b\\"  # OSC 8 hyperlink
    " [link=http://evil.example/]markup[/link] [bold red]loud[/]"  # rich markup
    "\x9b2J\r\x07 site says no\n"
)

WRAPPER = """#!/bin/sh
# the site's python: passes everything through, but for the tool named in $MODE_FILE, whose
# stderr is the hostile text and whose exit is 3
mode=$(cat {mode})
case "$mode:$*" in
  submit:*sc_sched.py*submit*|status:*sc_sched.py*status*|chip:*sc_chip.py*process*)
    cat {hostile} >&2; exit 3 ;;
esac
exec {python} "$@"
"""


def clean(text: str) -> None:
    """No control character but newline (and tab), no escape sequence's payload."""
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    assert not bad, f"control characters {bad!r} in {text!r}"
    assert "owned-title" not in text and "http://evil.example/\x1b" not in text and "\\u001b" not in text and "\\u009b" not in text


def test_terminal_sequences_in_the_sites_text_never_reach_the_output(cli, tmp_path):
    import sys

    mode, hostile = tmp_path / "mode", tmp_path / "hostile.txt"
    hostile.write_bytes(HOSTILE.encode())
    mode.write_text("submit")
    py = tmp_path / "site-python"
    py.write_text(WRAPPER.format(mode=mode, hostile=hostile, python=sys.executable))
    py.chmod(0o755)
    cfg = write_config(cli, tmp_path / "c.toml", site={"python": str(py)})
    run = lambda *a, **k: cli("--config", str(cfg), *a, **k)  # noqa: E731
    run("db", "upgrade")
    run("demo-data", "--images", "4")
    for rid in range(1, 5):
        run("define", "--label", f"l{rid}", "--stage", "chip", "--limit", "1")
        run("prepare", "chip", "--remote-id", str(rid))

    # exec: the scheduler's submit fails with the hostile stderr -> the error line, the run's message
    p = run("exec", "--remote-id", "1", check=False)
    assert p.returncode == 1 and "remote_id 1: exec failed:" in p.stderr and "site says no" in p.stderr
    clean(p.stdout + p.stderr)
    p = run("exec", "--remote-id", "4", "--json", check=False)
    assert p.returncode == 1 and "site says no" in json.loads(p.stdout)[0]["error"]
    clean(p.stdout)

    # poll: the scheduler's status fails the same way -> the poll error line, the run unchanged
    mode.write_text("")
    run("exec", "--remote-id", "2")
    mode.write_text("status")
    p = run("poll", "--remote-id", "2", check=False)
    assert p.returncode == 1 and "remote_id 2: poll failed, nothing replayed" in p.stderr and "site says no" in p.stderr
    clean(p.stdout + p.stderr)
    p = run("poll", "--remote-id", "2", "--json", check=False)
    assert "site says no" in json.loads(p.stdout)[0]["error"]
    clean(p.stdout)

    # a component's command fails with it: the component's message
    mode.write_text("chip")
    run("exec", "--remote-id", "3")
    mode.write_text("")
    run("poll", "--remote-id", "2", "--wait", "120")
    clean(run("poll", "--remote-id", "3", "--wait", "120").stdout)
    with sqlite3.connect(cli.db_path) as c:
        stored = [m for (m,) in c.execute("select message from remote_run where message is not null union all "
                                          "select message from remote_component where message is not null")]  # fmt: skip
    assert any("site says no" in m for m in stored)
    for m in stored:  # the site's text was cleaned as it came in
        clean(m)

    # and a row stored raw by an earlier scbundle is cleaned where it is printed
    with sqlite3.connect(cli.db_path) as c:
        c.execute("update remote_run set message = ?, sched_state = ? where remote_id = 3", (HOSTILE, "RUN\x1b]0;t\x07NING"))
        c.execute("update remote_component set message = ? where remote_id = 3", (HOSTILE,))
    for rid in ("1", "3"):
        p = run("status", "--remote-id", rid, "--all")
        clean(p.stdout + p.stderr)
        assert "site says no" in p.stdout
        clean(run("status", "--remote-id", rid, "--all", "--json").stdout)
    # with colours on, rich's markup in the site's text is shown, never obeyed (no OSC 8 link of its making)
    colour = dict(cli.env, FORCE_COLOR="1")
    import subprocess

    p = subprocess.run([sys.executable, "-m", "scbundle.cli", "--config", str(cfg), "status", "--remote-id", "3", "--all"],
                       env=colour, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0 and "\x1b[" in p.stdout  # colours on
    assert "\x1b]" not in p.stdout and "[link=http://evil.example/]markup[/link]" in p.stdout.replace("\n", "")


# --- secrets and configuration errors ----------------------------------------------------


def test_a_config_error_never_prints_the_database_password(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'database = "postgresql+psycopg://ipp:S3cretPW@dbhost/scbundle"\nworkdir = "/tmp/w"\ndefault_site = "nope"\n'
        '[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\n'
    )
    line = one_error_line(cli("--config", str(cfg), "status", check=False))
    assert "default_site 'nope' is not one of the sites" in line and "S3cretPW" not in line
    # a URL SQLAlchemy cannot read, and a password holding an '@'
    for url in ("postgres ql://ipp:S3cretPW@dbhost/scbundle", "postgresql+psycopg://ipp:S3c@retPW@127.0.0.1:1/scbundle"):
        cfg.write_text(f'database = "{url}"\nworkdir = "/tmp/w"\n[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\n')
        line = one_error_line(cli("--config", str(cfg), "status", check=False))
        assert "S3c" not in line and "retPW" not in line and "ipp:***@" in line


def test_a_config_that_is_not_utf8_is_one_line(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'database = "sqlite:///x.db"\n# caf\xe9 au lait\nworkdir = "/tmp/w"\n')
    line = one_error_line(cli("--config", str(cfg), "status", check=False))
    assert line == f"scbundle: error: config {cfg}: not UTF-8 text (byte 0xe9 on line 2); TOML files are UTF-8"


# --- host keys ------------------------------------------------------------------------------


def test_link_check_says_when_host_keys_are_accepted_without_asking(cli, tmp_path):
    control = Path(tempfile.mkdtemp(prefix="scbk-", dir="/tmp"))
    try:
        ssh = {"hosts": ["fe.invalid"], "user": "op", "bastion": "dmz.invalid", "control_dir": str(control),
               "known_hosts": str(tmp_path / "known_hosts"), "strict_host_key_checking": False}  # fmt: skip
        cfg = write_config(cli, tmp_path / "c.toml", site={"link": "ssh", "ssh": ssh})
        cli("--config", str(cfg), "db", "upgrade")  # a set-up installation: the only warning is the host keys'
        p = cli("--config", str(cfg), "link", "check", check=False)  # no master: down, exit 1
        assert p.returncode == 1 and "down" in p.stdout
        warning = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
        assert warning == [f"warning: site local: strict_host_key_checking = false means StrictHostKeyChecking accept-new on the bastion"
                           f" dmz.invalid and the front end(s): a host key not yet in {tmp_path / 'known_hosts'} is accepted and"
                           " recorded without asking (a changed key is still refused)"]  # fmt: skip
        rows = json.loads(cli("--config", str(cfg), "link", "check", "--json", check=False).stdout)
        assert [r["host_key_checking"] for r in rows] == ["accept-new"]
        assert "StrictHostKeyChecking accept-new" in next(control.glob("*.batch.conf")).read_text()
        ssh["strict_host_key_checking"] = True
        cfg = write_config(cli, tmp_path / "c.toml", site={"link": "ssh", "ssh": ssh})
        p = cli("--config", str(cfg), "link", "check", check=False)
        assert "warning" not in p.stderr
        assert [r["host_key_checking"] for r in json.loads(cli("--config", str(cfg), "link", "check", "--json", check=False).stdout)] == ["yes"]
    finally:
        shutil.rmtree(control, ignore_errors=True)
