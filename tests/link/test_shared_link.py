"""One shared link for a team, on the real ssh test site: the operator (root here) starts the
master of a site with ``[ssh.shared]``; a second local user in the shared group rides it (its
commands run on the site as the site account), a user outside the group cannot.

OpenSSH's master refuses every uid but its own on its socket, so members go through the
relay `link start` runs beside the master (site/link/relay.py), which passes only
``-O check`` and ``-O proxy``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from cousers import PYTHON, SCBUNDLE_ENV, CoUser, local_group, new_co_user, scbundle_argv
from linkkit import SITE

pytestmark = pytest.mark.slow

RIDE = """
import sys
from scbundle.core.config import load_config
from scbundle.site.link.openssh import OpenSshTransport
t = OpenSshTransport(sys.argv[2], load_config(sys.argv[1]).site(sys.argv[2]))
assert t.link_up(), "no master up"
print(t.run(["sh", "-c", "id -un; echo $HOME"]).text, end="")
"""


@dataclass
class Shared:
    dir: Path
    group: str
    member_config: Path  # a config the co-users can read: the same site, their own database


@contextmanager
def shared_link(sshenv) -> Iterator[Shared]:
    with local_group() as group:
        d = Path(tempfile.mkdtemp(prefix="scbg-", dir="/tmp"))
        d.rmdir()  # `link start` makes it: the operator's, 2750, group `group`
        theirs = Path(tempfile.mkdtemp(prefix="scbm-", dir="/tmp"))
        theirs.chmod(0o1777)
        data = tomllib.loads(sshenv.config.read_text())
        ssh = data["sites"][SITE]["ssh"]
        ssh.update(control_dir=str(d), shared={"operator": "root", "group": group})
        sshenv.config.write_text(tomli_w.dumps(data))
        member = theirs / "scbundle.toml"
        member.write_text(tomli_w.dumps({**data, "database": f"sqlite:///{theirs / 'scbundle.db'}", "workdir": str(theirs / "work")}))
        member.chmod(0o644)
        try:
            yield Shared(d, group, member)
        finally:
            sshenv.cli("link", "stop", check=False)
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(theirs, ignore_errors=True)


def as_user(u: CoUser, shared: Shared, *args: str):
    return u.run(*scbundle_argv("--config", str(shared.member_config), *args), check=False)


def test_a_group_member_rides_the_operators_master_and_cannot_end_or_replace_it(sshenv):
    with shared_link(sshenv) as shared, new_co_user(shared.group) as member:
        sshenv.link_start()
        master = sshenv.master_pid()
        assert master is not None
        st = os.lstat(shared.dir)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o2750) and st.st_gid == os.lstat(shared.dir / f"{SITE}.{sshenv.user}.batch.conf").st_gid
        confs = sorted(shared.dir.glob("*.conf"))
        assert confs and all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in confs)

        # the member's `link check` sees the operator's master, through the relay
        p = as_user(member, shared, "link", "check", "--json")
        assert p.returncode == 0, p.stderr
        (row,) = json.loads(p.stdout)
        assert row["up"] and row["pid"] == master

        # and its commands run on the site as the site account (the operator's login), no prompt
        p = member.run("env", *SCBUNDLE_ENV, PYTHON, "-c", RIDE, str(shared.member_config), SITE, check=False)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[0] == sshenv.user

        # it cannot end the master: not through scbundle, not through the relay
        p = as_user(member, shared, "link", "stop")
        assert p.returncode == 1 and "only root can stop" in p.stderr, p.stderr
        conf = shared.dir / f"{SITE}.{sshenv.user}.batch.conf"
        relay = next(str(s) for s in shared.dir.iterdir() if s.name.endswith(".g"))
        p = member.run("ssh", "-F", str(conf), "-o", f"ControlPath={relay}", "-O", "exit", f"scb-{SITE}-0", check=False)
        assert p.returncode != 0 and "permission denied" in p.stderr.lower(), p.stderr
        # nor reach the master's own socket (ssh's master would refuse its uid anyway)
        p = member.run("ssh", "-F", str(conf), "-O", "check", f"scb-{SITE}-0", check=False)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        assert sshenv.master_pid() == master

        # nor replace the configs or plant a socket in the operator's directory
        p = member.python("import sys; open(sys.argv[1], 'a')", str(conf), check=False)
        assert p.returncode != 0 and "Permission denied" in p.stderr
        p = member.python("import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", str(shared.dir / "planted"), check=False)
        assert p.returncode != 0 and "Permission denied" in p.stderr
        assert not (shared.dir / "planted").exists()


def test_a_user_outside_the_group_cannot_ride_and_is_told_why(sshenv):
    with shared_link(sshenv) as shared, new_co_user() as outsider:
        sshenv.link_start()
        p = as_user(outsider, shared, "link", "check")
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 1 and len(lines) == 1, p.stderr
        assert lines[0] == (f"scbundle: error: site {SITE}: the link is shared with the local group {shared.group}, and you ({outsider.name}) are not in it:"
                            f" ask root or an admin (`usermod -aG {shared.group} {outsider.name}`, then log in again), or use a site of your own")  # fmt: skip
        p = outsider.run("env", *SCBUNDLE_ENV, PYTHON, "-c", RIDE, str(shared.member_config), SITE, check=False)
        assert p.returncode != 0 and "not in it" in p.stderr and p.stdout == ""
        # ssh straight at the relay's socket: the directory keeps it out
        relay = next(str(s) for s in shared.dir.iterdir() if s.name.endswith(".g"))
        p = outsider.run("ssh", "-o", f"ControlPath={relay}", "-O", "proxy", "-T", "ignored", "id", check=False)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        assert sshenv.master_pid() is not None
