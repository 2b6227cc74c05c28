"""A second local user against the link's control directory, on the real ssh test site.

The control directory sits in /tmp (the ~90-byte ControlPath pushes people there) and ssh reads
the configs in it with ``-F``, checking neither their owner nor their mode. The co-user
pre-creates the directory's name as a symlink to a directory the operator owns, then keeps
flipping it to their own directory, which holds a config with ``Match exec``: the operator's
ssh would run that command as the operator."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import pytest
from cousers import co_user, remove_paths  # noqa: F401  (co_user is a fixture)
from linkkit import SITE, write_config

pytestmark = pytest.mark.slow

FLIPPER = r"""
import os, sys, time
link, mine, theirs, stop, names, payload = sys.argv[1:7]
os.mkdir(theirs, 0o755)
def plant():  # the operator's scbundle may have replaced them: put the payload back
    for name in names.split(","):
        p = os.path.join(theirs, name)
        try:
            with open(p) as f:
                if f.read() == payload:
                    continue
        except OSError:
            pass
        with open(p + ".t", "w") as f:
            f.write(payload)
        os.replace(p + ".t", p)
plant()
os.symlink(mine, link)  # at first: a directory the operator owns
print("ready", flush=True)
while not os.path.exists(stop):
    for target in (mine, theirs):
        try:
            os.unlink(link + ".t")
        except FileNotFoundError:
            pass
        os.symlink(target, link + ".t")
        os.rename(link + ".t", link)  # one atomic flip
        plant()
        time.sleep(0.0005)
"""


def test_a_co_user_racing_the_control_directory_never_runs_a_command_as_the_operator(sshenv, co_user):  # noqa: F811
    tag = secrets.token_hex(4)
    token = Path(f"/tmp/pwned-{tag}")  # what the co-user's command would create, as the operator
    link, theirs, stop = Path(f"/tmp/scbr-{tag}"), Path(f"/tmp/scba-{tag}"), Path(f"/tmp/scbr-{tag}.stop")
    mine = Path(tempfile.mkdtemp(prefix="scbo-", dir="/tmp"))  # the operator's own, 0700
    names = [f"{SITE}.{sshenv.user}.{kind}.conf" for kind in ("batch", "interactive")]
    payload = f'Match exec "touch {token}"\n'
    write_config(sshenv.config, sshenv.home, sshenv.site, sshenv.user, link)
    flipper = co_user.spawn_python(FLIPPER, str(link), str(mine), str(theirs), str(stop), ",".join(names), payload)
    try:
        assert flipper.stdout is not None and flipper.stdout.readline().strip() == "ready", flipper.stderr.read() if flipper.stderr else ""
        checks = [sshenv.cli("link", "check", check=False, timeout=60) for _ in range(30)]
        started = sshenv.link_start(expect_ok=False)
        stop.touch()
        flipper.wait(timeout=30)
        assert not token.exists(), "the co-user's Match exec ran as the operator"
        for p in checks:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            assert p.returncode == 1 and len(lines) == 1, p.stderr
            assert lines[0] == f"scbundle: error: site {SITE}: control directory {link} is a symbolic link: refused (whoever made it can point it at their own files); remove it, or choose another place"
        assert "is a symbolic link: refused" in started and "Password" not in started  # refused before ssh asked anything
        assert sorted(p.name for p in mine.iterdir()) == []  # nothing written through the link either

        # the co-user's own directory in its place: refused too, and their command never runs
        remove_paths(link)
        co_user.python("import os, sys; os.rename(sys.argv[2], sys.argv[1])", str(link), str(theirs))
        p = sshenv.cli("link", "check", check=False)
        assert f"control directory {link} belongs to uid {co_user.uid} ({co_user.name}), not to you" in p.stderr
        assert not token.exists()
    finally:
        stop.touch()
        write_config(sshenv.config, sshenv.home, sshenv.site, sshenv.user, sshenv.control_dir)  # for the fixture's `link stop`
        remove_paths(link, theirs, stop, mine, Path(f"{link}.t"), token)
