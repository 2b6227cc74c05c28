"""One contract, two transports, the real sshd: OpenSSH riding a human-authenticated master
(password + one-time code) and paramiko with a key login, both through the bastion."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from linkkit import SITE, write_config

from scbundle.core.config import load_config
from scbundle.core.errors import CommandError, HostKeyError
from scbundle.site.layout import tool_argv, tools_dir
from scbundle.site.link import transport_for
from scbundle.site.transfer import extract_returned, write_push_tar

pytestmark = pytest.mark.slow


@pytest.fixture(params=["openssh", "paramiko"])
def transport(request, sshenv):
    if request.param == "openssh":
        sshenv.link_start()
    else:
        key_user = sshenv.site.key_user
        write_config(sshenv.config, sshenv.home, sshenv.site, key_user, sshenv.control_dir, link="paramiko")
    t = transport_for(SITE, load_config(sshenv.config).site(SITE))
    assert t.link_up()
    yield t
    t.close()


def test_arguments_arrive_one_each(transport):
    args = ["a b", "it's", 'say "hi"; rm -rf /tmp/nothing', "$HOME", "`id`", "*", "tab\there"]
    out = transport.run(["printf", r"%s\n", *args]).text
    assert out.splitlines() == args


def test_exit_codes_and_stderr_tail(transport):
    done = transport.run(["sh", "-c", "echo oops >&2; exit 3"], check=False)
    assert done.returncode == 3 and b"oops" in done.stderr
    with pytest.raises(CommandError) as ei:
        transport.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 5"])
    assert ei.value.returncode == 5 and "last words" in str(ei.value) and "exit 5" in str(ei.value)


def test_stdin_round_trip(transport):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert transport.run(["cat"], input=data).stdout == data


def test_stream_in_and_out_through_the_remote_tools(transport, sshenv, tmp_path):
    from scbundle.site.tools import ensure_tools

    cfg = load_config(sshenv.config)
    ensure_tools(transport, cfg.site(SITE))
    tools, py = tools_dir(cfg.site(SITE)), cfg.site(SITE).python
    roots = ["--root", cfg.site(SITE).remote_root]
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for i in range(50):
        p = src / f"f{i}.bin"
        p.write_bytes(hashlib.sha256(str(i).encode()).digest() * (i * 37 + 1))
        files.append((str(p), f"{cfg.site(SITE).remote_root}/contract/f{i}.bin"))
    before = transport.invocations
    transport.stream_in(tool_argv(py, tools, "sc_remote.py", "unpack", *roots), lambda out: write_push_tar(out, files))
    listing = "".join(r + "\n" for _, r in files).encode()
    dest = tmp_path / "back"
    got = {}
    transport.stream_out(tool_argv(py, tools, "sc_remote.py", "pack", *roots),
                         lambda s: got.setdefault("r", extract_returned(s, {i: dest / f"g{i}" for i in range(50)}, [dest])),
                         input=listing)  # fmt: skip
    assert transport.invocations - before == 2  # one invocation each way, whatever the file count
    assert got["r"].indices == set(range(50))
    for i, (local, _) in enumerate(files):
        assert (dest / f"g{i}").read_bytes() == Path(local).read_bytes()


def test_large_stream_out(transport):
    n = 64 << 20
    count = {"n": 0}

    def consume(stream):
        while chunk := stream.read(1 << 20):
            count["n"] += len(chunk)

    transport.stream_out(["head", "-c", str(n), "/dev/zero"], consume)
    assert count["n"] == n


def test_concurrent_sessions_stay_within_the_cap(transport):
    errors, outs = [], []

    def one(i):
        try:
            outs.append(transport.run(["sh", "-c", f"sleep 0.3; echo {i}"]).text.strip())
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(outs, key=int) == [str(i) for i in range(16)]


def test_paramiko_refuses_a_wrong_host_key(sshenv):
    key_user = sshenv.site.key_user
    write_config(sshenv.config, sshenv.home, sshenv.site, key_user, sshenv.control_dir, link="paramiko",
                 known_hosts=sshenv.site.wrong_known_hosts)  # fmt: skip
    t = transport_for(SITE, load_config(sshenv.config).site(SITE))
    with pytest.raises(HostKeyError, match="nothing sent"):
        t.run(["true"])
    t.close()
