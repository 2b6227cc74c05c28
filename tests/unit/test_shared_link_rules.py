"""A shared link's pure parts and local checks, in one process: the [ssh.shared] table, the
ControlPath with the local host (%l) and its length limit, the relay's verdict on each mux
request, and the shared control directory's owner / group / mode rules (core/private.py)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scbundle.core.config import (
    SOCKET_PATH_LIMIT,
    Site,
    config_from_dict,
    control_path,
    control_path_problem,
)
from scbundle.core.errors import ConfigError, ScbundleError
from scbundle.core.private import shared_dir
from scbundle.site.link import relay
from scbundle.site.link.openssh import OpenSshLink, render_ssh_config


def site(**ssh: object) -> Site:
    return Site.model_validate({"link": "ssh", "remote_root": "/r", "permanent_root": "/p",
                                "ssh": {"hosts": ["fe.invalid"], "user": "op", **ssh}})  # fmt: skip


def config(**ssh: object) -> None:
    config_from_dict({"database": "sqlite:///x.db", "workdir": "/w", "default_site": "mu", "sites": {"mu": site_dict(**ssh)}}, "t.toml")


def site_dict(**ssh: object) -> dict:
    return {"link": "ssh", "remote_root": "/r", "permanent_root": "/p", "ssh": {"hosts": ["fe.invalid"], "user": "op", **ssh}}


# --- config --------------------------------------------------------------------------------


def test_the_shared_table_is_strict_and_needs_an_absolute_control_dir():
    s = site(control_dir="/tmp/scb-mu", shared={"operator": "ipp", "group": "scbops"})
    assert s.ssh is not None and s.ssh.shared is not None and (s.ssh.shared.operator, s.ssh.shared.group) == ("ipp", "scbops")
    with pytest.raises(ConfigError, match=r"unknown key 'sites.mu.ssh.shared.mode'"):
        config(control_dir="/tmp/scb-mu", shared={"operator": "ipp", "group": "scbops", "mode": "0777"})
    with pytest.raises(ConfigError, match=r"missing key 'sites.mu.ssh.shared.group'"):
        config(control_dir="/tmp/scb-mu", shared={"operator": "ipp"})
    with pytest.raises(ConfigError, match=r"sites.mu.ssh.shared.group: String should match pattern"):
        config(control_dir="/tmp/scb-mu", shared={"operator": "ipp", "group": "ops; rm"})
    with pytest.raises(ConfigError, match=r"a shared link needs a control_dir that every member names the same way: an absolute path"):
        config(shared={"operator": "ipp", "group": "scbops"})  # the default ~/.scb is each member's own


def test_controlpath_carries_the_local_host_and_the_limit_names_it():
    text = render_ssh_config("mu", site(control_dir="/tmp/scb-mu").ssh, None, batch=True)  # type: ignore[arg-type]
    assert "  ControlPath /tmp/scb-mu/%l-%C\n" in text
    assert control_path("/tmp/scb-mu", "fe-login1") == "/tmp/scb-mu/fe-login1-" + "c" * 40
    # the limit is counted with this host's name: what fits on one host may not on another
    d = "/tmp/" + "d" * 30
    assert control_path_problem(d, "h") is None
    problem = control_path_problem(d, "a-rather-long-login-host")
    assert problem is not None and f"{d}/%l-%C is {len(d) + 1 + 24 + 1 + 40} bytes on this host ('a-rather-long-login-host' for %l, 40 for %C)" in problem
    assert f"over the {SOCKET_PATH_LIMIT}-byte limit" in problem
    long_dir = "/tmp/" + "d" * (SOCKET_PATH_LIMIT - 5 - 41 - len(socket.gethostname()) - 1 + 1)
    with pytest.raises(ConfigError, match=r"too long for a ControlPath socket: .* bytes on this host .* over the 90-byte limit"):
        config(control_dir=long_dir)
    config(control_dir=long_dir[:-1])  # one byte less fits
    with pytest.raises(ConfigError, match=r"must be an absolute path without spaces, quotes, # or %"):
        config(control_dir="/tmp/scb %h")


# --- the relay's verdict ---------------------------------------------------------------------


def packet(kind: int, rid: int = 7, rest: bytes = b"") -> bytes:
    return struct.pack(">II", kind, rid) + rest


@pytest.mark.parametrize(("kind", "expected"), [
    (relay.MUX_MSG_HELLO, "pass"), (relay.MUX_C_ALIVE_CHECK, "pass"), (relay.MUX_C_PROXY, "splice"),
    (0x10000002, "deny"),  # MUX_C_NEW_SESSION: hands the master the member's file descriptors
    (0x10000005, "deny"),  # MUX_C_TERMINATE: -O exit
    (0x10000006, "deny"),  # MUX_C_OPEN_FWD: a forward the master would open here, as the operator
    (0x10000008, "deny"),  # MUX_C_NEW_STDIO_FWD
    (0x10000009, "deny"),  # MUX_C_STOP_LISTENING: -O stop
])  # fmt: skip
def test_the_relay_passes_only_hello_check_and_proxy(kind, expected):
    assert relay.verdict(packet(kind)) == expected
    assert relay.verdict(b"\x00\x01") == "deny"


def test_a_denied_request_reaches_neither_the_master_nor_goes_unanswered(tmp_path):
    """The relay between a client and a listening 'master' socket: a terminate request gets
    MUX_S_PERMISSION_DENIED with its request id, and the master receives only the hello."""
    master_path = str(tmp_path / "m")
    m = socket.socket(socket.AF_UNIX)
    m.bind(master_path)
    m.listen(1)
    got = bytearray()

    def master() -> None:
        conn, _ = m.accept()
        while chunk := conn.recv(4096):
            got.extend(chunk)
        conn.close()

    t = threading.Thread(target=master)
    t.start()
    a, b = socket.socketpair()
    s = threading.Thread(target=relay.serve, args=(b, master_path))
    s.start()
    hello = packet(relay.MUX_MSG_HELLO, 4)
    a.sendall(struct.pack(">I", len(hello)) + hello)
    term = packet(0x10000005, 42)
    a.sendall(struct.pack(">I", len(term)) + term)
    reply = a.recv(4096)
    s.join(timeout=10)
    t.join(timeout=10)
    m.close()
    kind, rid = struct.unpack(">II", reply[4:12])
    assert (kind, rid) == (relay.MUX_S_PERMISSION_DENIED, 42) and b"permission denied" in reply
    assert bytes(got) == struct.pack(">I", len(hello)) + hello  # the terminate never reached it
    assert a.recv(10) == b""  # and the member's connection is closed


# --- the shared control directory -------------------------------------------------------------


@pytest.fixture
def short() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="scbu-", dir="/tmp"))
    yield d
    shutil.rmtree(d)


def a_group() -> int:
    """A group that is not root's: the shared directory must be handed to it."""
    for g in grp.getgrall():
        if g.gr_gid not in (0, os.getegid()):
            return g.gr_gid
    pytest.skip("no second group on this machine")


def test_the_operator_makes_the_shared_directory_2750_with_the_group(short):
    gid = a_group()
    d = short / "scb"
    shared_dir(d, what="control directory", owner=os.geteuid(), gid=gid)
    st = os.lstat(d)
    assert (stat.S_IMODE(st.st_mode), st.st_gid, st.st_uid) == (0o2750, gid, os.geteuid())
    d.chmod(0o2770)  # group-writable: a member could replace the configs
    with pytest.raises(ScbundleError, match=r"control directory .*/scb is writable by its group \(mode 2770\)"):
        shared_dir(d, what="control directory", owner=os.geteuid(), gid=gid)
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o2770  # refused, not quietly fixed


def test_a_shared_directory_of_someone_else_or_a_link_is_refused(short):
    gid = a_group()
    d = short / "scb"
    d.mkdir()
    os.chown(d, 54321, gid)
    with pytest.raises(ScbundleError, match=r"belongs to uid 54321, not to the shared link's operator"):
        shared_dir(d, what="control directory", owner=os.geteuid(), gid=gid)
    (short / "ln").symlink_to(d)
    with pytest.raises(ScbundleError, match=r"is a symbolic link: refused"):
        shared_dir(short / "ln", what="control directory", owner=os.geteuid(), gid=gid)


def test_configs_and_slots_of_a_shared_link_are_group_readable_and_the_operator_alone_writes_them(short, monkeypatch):
    gid = a_group()
    name = grp.getgrgid(gid).gr_name
    me = pwd.getpwuid(os.geteuid()).pw_name
    lk = OpenSshLink("mu", site(control_dir=str(short / "scb"), shared={"operator": me, "group": name}))
    assert not lk.rider
    lk.write_configs()
    for p in (short / "scb").glob("*.conf"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.stat().st_gid == gid
    with lk.session_slot():
        pass
    assert stat.S_IMODE((short / "scb" / "mu.slot.0").stat().st_mode) == 0o640
    with pytest.raises(ConfigError, match=r"shared.group 'no-such-group' is no local group"):
        OpenSshLink("mu", site(control_dir=str(short / "scb"), shared={"operator": me, "group": "no-such-group"})).ensure_dir()
