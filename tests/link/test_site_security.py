"""Another account on the site tries to run code as the scbundle account, on the real test site
(bastion + front end, password + one-time code): the site's second OTP user can write the
test site's 0777 roots, as a teammate can write a group-writable project area. It plants
tools before exec, swaps what exec already verified, and builds a look-alike permanent_root;
a trojan would touch a marker file as the scbundle account. It never runs; exec and poll
refuse and say so; `scbundle site check` shows what is wrong; and once the directories are
put right the runs finish."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
from pathlib import Path

import pytest

from scbundle.core.resources import remote_files, tools_hash

pytestmark = pytest.mark.slow


def as_user(user: str, script: str) -> None:
    """Run ``script`` on the site's machine as another site account (the test site's front end
    shares this machine's filesystem)."""
    subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script], check=True, timeout=60)


def trojan(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran as ' + __import__('getpass').getuser())\n"


def define_run(e, n: int, label: str) -> int:
    return json.loads(e.cli("define", "--label", label, "--stage", "chip", "--limit", str(n), "--json").stdout)["remote_id"]


def check(e) -> tuple[int, dict[str, dict]]:
    p = e.cli("site", "check", "--json", check=False)
    return p.returncode, {d["path"]: d for d in json.loads(p.stdout)["dirs"]}


def test_tools_planted_by_another_account_never_run_and_exec_says_so(sshenv):
    e = sshenv
    other = e.site.otp_users[1]
    marker = e.site.remote_root / f"{e.home.name}-pwned"
    tools = e.permanent / "tools" / tools_hash()
    e.link_start()
    e.cli("demo-data", "--images", "6")
    rid = define_run(e, 6, "plant")
    e.cli("prepare", "chip", "--remote-id", str(rid))
    # before the first exec: the other account makes permanent_root (0777, so ours can write
    # into it) and plants this installation's tools directory, "complete", with a trojan
    as_user(other, f"umask 022; mkdir -p {tools} && chmod 777 {e.permanent} {e.permanent}/tools"
                   f" && printf %s {shlex.quote(trojan(marker))} > {tools}/sc_remote.py && touch {tools}/.complete")  # fmt: skip
    p = e.cli("exec", "--remote-id", str(rid), check=False)
    assert not marker.exists(), marker.read_text()
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    uid = pwd.getpwnam(other).pw_uid
    assert f"remote_id {rid}: exec refused, run stays pending: site mu: tools directory {tools} is owned by uid {uid} ({other})" in p.stderr
    assert "with mode 0755" in p.stderr and "nothing was run" in p.stderr
    assert e.q("select state, fault, job_id from remote_run") == [("pending", 3, None)]
    assert not (e.permanent / "runs").exists()  # nothing was sent
    rc, rows = check(e)
    assert rc == 1
    assert rows[str(tools)]["problems"][0] == f"owned by {other} ({uid}), not by this account"
    assert f"sc_remote.py: owned by {other} (uid {uid}), mode 0644" in rows[str(tools)]["problems"]  # and what is in it
    assert rows[str(e.permanent)]["problems"] == [f"owned by {other} ({uid}), not by this account", "writable by group and others"]
    # the way out: the planted tree goes (its owner, or an admin), exec again ships our own
    as_user(other, f"rm -rf {e.permanent}")
    out = e.cli("exec", "--remote-id", str(rid)).stdout
    assert f"tools shipped to {tools}" in out
    e.cli("poll", "--remote-id", str(rid), "--wait", "180")
    assert e.q("select state from remote_run") == [("full",)]
    assert os.stat(tools).st_uid == pwd.getpwnam(e.user).pw_uid and not marker.exists()


def test_a_tool_changed_after_exec_verified_it_cannot_run_and_the_next_exec_ships_it_again(sshenv):
    e = sshenv
    marker = e.site.remote_root / f"{e.home.name}-pwned"
    tools = e.permanent / "tools" / tools_hash()
    e.link_start()
    e.cli("demo-data", "--images", "8")
    r1 = define_run(e, 4, "swap1")
    r2 = define_run(e, 4, "swap2")
    e.cli("prepare", "chip")
    e.cli("exec", "--remote-id", str(r1))  # the tools shipped and verified
    run_dir = e.run_dir(r1)
    e.wait_for(lambda: (run_dir / "job.exit").exists(), 120, "the job to end")
    st = os.stat(tools / "sc_remote.py")
    (tools / "sc_remote.py").write_text(trojan(marker))  # same owner, same mode: the content alone differs
    os.chown(tools / "sc_remote.py", st.st_uid, st.st_gid)
    p = e.cli("poll", "--remote-id", str(r1), check=False)
    assert not marker.exists(), marker.read_text()
    assert p.returncode == 1 and "poll failed, nothing replayed (the run stays in run" in p.stderr
    assert f"tool {tools}/sc_remote.py does not match this installation" in p.stderr
    assert e.q("select state from remote_run where remote_id=?", r1) == [("run",)]
    rc, rows = check(e)
    assert rc == 1 and any(x.startswith("sc_remote.py: differs") for x in rows[str(tools)]["problems"])
    out = e.cli("exec", "--remote-id", str(r2)).stdout  # exec checks every tool first: ships them again
    assert f"tools at {tools} shipped again: tool {tools}/sc_remote.py does not match this installation" in out
    e.cli("poll", "--wait", "180")
    assert e.q("select state from remote_run order by remote_id") == [("full",), ("full",)]
    assert not marker.exists()


def test_a_look_alike_permanent_root_from_another_account_is_refused_and_reported(sshenv):
    """The test site's permanent root is 0777 without the sticky bit, so the other account can
    rename ours away and put a copy of its own in its place, run directories and all, with
    every tool a trojan. poll refuses it at its first call; site check lists each directory."""
    e = sshenv
    other = e.site.otp_users[1]
    uid = pwd.getpwnam(other).pw_uid
    marker = e.site.remote_root / f"{e.home.name}-pwned"
    e.link_start()
    e.cli("demo-data", "--images", "4")
    rid = define_run(e, 4, "look")
    e.cli("prepare", "chip", "--remote-id", str(rid))
    e.cli("exec", "--remote-id", str(rid))
    run_dir = e.run_dir(rid)
    e.wait_for(lambda: (run_dir / "job.exit").exists(), 120, "the job to end")
    aside = e.permanent.with_name(e.permanent.name + ".mine")
    names = [p.name for p in remote_files() if p.suffix == ".py"]
    # what it can read of ours: not the manifest (0700), which a look-alike need not have
    script = f"mv {e.permanent} {aside} && {{ cp -r {aside} {e.permanent} || true; }} && chmod -R go+w {e.permanent}"
    for n in names:
        script += f" && printf %s {shlex.quote(trojan(marker))} > {e.permanent}/tools/{tools_hash()}/{n}"
    as_user(other, script)
    p = e.cli("poll", "--remote-id", str(rid), check=False)
    assert not marker.exists(), marker.read_text()
    assert p.returncode == 1 and "poll failed, nothing replayed (the run stays in run" in p.stderr
    assert f"is owned by uid {uid} ({other})" in p.stderr
    assert e.q("select state from remote_run") == [("run",)]
    rc, rows = check(e)
    assert rc == 1
    assert rows[str(e.permanent)]["problems"][0] == f"owned by {other} ({uid}), not by this account"
    assert rows[str(run_dir)]["problems"] == [f"owned by {other} ({uid}), not by this account", "writable by group and others"]
    assert rows[str(e.site.permanent_root)]["problems"] == ["writable by group and others (no sticky bit): they can rename what is below"]
    subprocess.run(["rm", "-rf", str(e.permanent)], check=True)  # an admin puts it back
    os.rename(aside, e.permanent)
    e.cli("poll", "--remote-id", str(rid), "--wait", "60")
    assert e.q("select state from remote_run") == [("full",)]
    assert not marker.exists()
