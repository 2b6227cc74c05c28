"""What a compromised site can send back, through the real transports (OpenSSH riding the
master, paramiko with a key login, both through the bastion), and a co-user racing a push:
everything is refused or confined, with bounded local memory and disk."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import hostile_tar as ht
import pytest
from linkkit import SITE, write_config

from scbundle.core.config import load_config
from scbundle.core.errors import LocalIOError, OversizeError, UnsafeArchiveError
from scbundle.site.layout import roots_args, tool_argv, tools_dir
from scbundle.site.link import transport_for
from scbundle.site.tools import ensure_tools
from scbundle.site.transfer import TarWriter, extract_returned
from scbundle.steps.replay import read_results

pytestmark = pytest.mark.slow

MiB = 1 << 20


@pytest.fixture(params=["openssh", "paramiko"])
def transport(request, sshenv):
    if request.param == "openssh":
        sshenv.link_start()
    else:
        write_config(sshenv.config, sshenv.home, sshenv.site, sshenv.site.key_user, sshenv.control_dir, link="paramiko")
    t = transport_for(SITE, load_config(sshenv.config).site(SITE))
    assert t.link_up()
    yield t
    t.close()


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


# (what the site sends: bytes fed to `cat` on the site, then what a shell appends; the refusal)
CASES = {
    "old GNU sparse": (ht.old_gnu_sparse("0", 64 * MiB) + ht.END, "", "a GNU sparse file"),
    "pax sparse": (ht.pax_sparse("0", 64 * MiB) + ht.END, "", "sparse-file record 'GNU.sparse"),
    "no checksum": (ht.regular("0", b"no sum") + ht.END, "", None),  # built below without its checksum
    "huge pax header": (ht.header(b"PaxHeader", 200 * MiB, b"x"), "head -c 209715200 /dev/zero", "a pax header of 209715200 bytes"),
    "trailing data": (ht.regular("0", b"fine") + ht.END, "yes | head -c 268435456", "data after the end of the archive"),
    "oversized product": (ht.pax_header({ht.SHA_KEY: ht.zeros_sha(64 * MiB)}) + ht.header(b"0", 64 * MiB, b"0"),
                          "head -c 67109888 /dev/zero", "is 67108864 bytes, more than the 1048576 accepted"),
}  # fmt: skip
CASES["no checksum"] = (ht.regular("0", b"no sum", sha=None) + ht.END, "", "carries no SCBUNDLE.sha256 checksum")


@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_pack_stream_is_refused_with_bounded_memory_and_disk(transport, tmp_path, case):
    stream, then, refusal = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    argv = ["sh", "-c", "cat" + (f"; {then}" if then else "")]

    def pull():
        with pytest.raises(UnsafeArchiveError) as ei:
            transport.stream_out(argv, lambda s: extract_returned(s, {0: out / "product.fits"}, [out], max_bytes=MiB), input=stream)
        assert refusal in str(ei.value)
        assert "exit -9" not in str(ei.value)  # the refusal is the error, not the killed sender

    peak = ht.peak_of(pull)
    assert peak < 16 * MiB, f"{case}: {peak} bytes traced"
    # a refused member leaves nothing: no product, no part file
    assert files_under(out) == ([] if case != "trailing data" else ["product.fits"])
    assert transport.run(["echo", "still usable"]).text == "still usable\n"


def test_run_output_is_capped(transport):
    from scbundle.site.link.base import STDOUT_MAX

    def run():
        with pytest.raises(OversizeError, match=f"wrote more than {STDOUT_MAX} bytes to its output; stopped and refused"):
            transport.run(["head", "-c", str(4 * STDOUT_MAX), "/dev/zero"])

    assert ht.peak_of(run) < 2 * STDOUT_MAX  # not the 256 MiB the site sent
    assert transport.run(["head", "-c", "1000", "/dev/zero"]).stdout == bytes(1000)


def test_stream_out_reads_little_past_what_its_consumer_took(transport):
    def run():
        with pytest.raises(OversizeError, match="after the end of what was read"):
            transport.stream_out(["head", "-c", str(512 * MiB), "/dev/zero"], lambda s: s.read(1000))

    assert ht.peak_of(run) < 16 * MiB


def test_a_full_local_disk_is_the_error_not_the_killed_sender(transport, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        data = os.urandom(4 * MiB)
        with pytest.raises(LocalIOError) as ei:
            transport.stream_out(["cat"], lambda s: extract_returned(s, {0: small / "big.fits"}, [small]), input=ht.regular("0", data) + ht.END)
        assert str(ei.value) == f"no space left on device writing {small / 'big.fits'}"
        assert files_under(small) == []  # no partial file
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_huge_rank_file_line_pulled_by_pack_is_refused_naming_file_and_line(transport, sshenv, tmp_path):
    from scbundle.stages.chip import ChipStage

    site = load_config(sshenv.config).site(SITE)
    ensure_tools(transport, site)
    remote = f"{site.permanent_root}/runs/chip.1.a1/results/rank-00000.jsonl"
    good = {"index": 0, "stage_id": 101, "rank": 0, "host": "n1", "attempts": 1, "exit": 0, "phase": "command",
            "start": 1.0, "end": 2.0, "error": None,
            "dbinfo": {"table": "chip_result", "key": {"imfile_id": 101}, "values": {"mean": 1.5}}}  # fmt: skip
    bad = dict(good, index=1, stage_id=102, exit=5, dbinfo=None, error="x" * (24 * MiB))
    # the job's rank file, written on the site as its account
    script = "import sys,os; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())"
    transport.run([site.python, "-c", script, remote], input=(json.dumps(good) + "\n" + json.dumps(bad) + "\n").encode())
    local = tmp_path / "returned" / "results" / "rank-00000.jsonl"
    components = {0: 101, 1: 102}

    def pull_and_read():
        transport.stream_out(
            tool_argv(site.python, tools_dir(site), "sc_remote.py", "pack", *roots_args(site)),
            lambda s: extract_returned(s, {0: local}, [tmp_path / "returned"]),
            input=(remote + "\n").encode(),
        )
        with pytest.raises(Exception) as ei:
            read_results([local], ChipStage(), components)
        assert str(ei.value) == f"{local}:2: a line longer than {1 << 20} bytes; refused"

    assert ht.peak_of(pull_and_read) < 16 * MiB


def test_a_directory_swapped_for_a_symlink_mid_push_writes_nothing_outside_the_root(sshenv):
    """The second site account renames a directory the push already wrote into and puts a link
    to its own directory in its place, while the stream is still arriving."""
    sshenv.link_start()
    site = load_config(sshenv.config).site(SITE)
    t = transport_for(SITE, site)
    ensure_tools(t, site)
    me, other = (pwd.getpwnam(n) for n in sshenv.site.otp_users[:2])
    root = Path(site.remote_root)
    area = root / "project"  # a group-writable project area, as shared sites have
    area.mkdir(parents=True)
    os.chown(root, me.pw_uid, me.pw_gid)
    os.chown(area, me.pw_uid, me.pw_gid)
    area.chmod(0o777)
    outside = root.parent / f"{root.name}-theirs"  # outside every root of the site config
    subprocess.run(["runuser", "-u", other.pw_name, "--", "mkdir", "-m", "777", str(outside)], check=True)
    d = area / "inputs"

    def producer(out):
        w = TarWriter(out)
        for i in range(5):
            w.add_bytes(f"{d}/f{i}", b"before %d" % i)
        out.flush()
        deadline = time.monotonic() + 60
        while not (d / "f4").exists():  # the unpacker on the site has written them
            assert time.monotonic() < deadline, "the first files never arrived"
            time.sleep(0.02)
        subprocess.run(["runuser", "-u", other.pw_name, "--", "sh", "-c", 'mv "$1" "$1.moved" && ln -s "$2" "$1"', "sh",
                        str(d), str(outside)], check=True)  # fmt: skip
        assert d.is_symlink()
        for i in range(5, 10):
            w.add_bytes(f"{d}/f{i}", b"after %d" % i)
        w.close()

    done = t.stream_in(tool_argv(site.python, tools_dir(site), "sc_remote.py", "unpack", *roots_args(site)), producer)
    t.close()
    assert files_under(outside) == []  # nothing followed the link
    assert json.loads(done.stdout) == {"files": 10, "bytes": 5 * len(b"before 0") + 5 * len(b"after 5")}
    assert files_under(area / "inputs.moved") == [f"f{i}" for i in range(10)]  # into the directory checked


def test_poll_with_a_full_local_data_root_names_the_file_and_remote_id(sshenv):
    """A real pull into a full local filesystem: the error is the local one, with the run's
    remote_id, not `exit -9: sc_remote.py pack`; no partial file; poll finishes once there is room."""
    data = sshenv.local_data
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)], check=True)
    try:
        sshenv.link_start()
        sshenv.cli("demo-data", "--images", "4")
        rid = json.loads(sshenv.cli("define", "--label", "full", "--stage", "chip", "--json").stdout)["remote_id"]
        sshenv.cli("prepare", "chip", "--remote-id", str(rid))
        sshenv.cli("exec", "--remote-id", str(rid))
        run_dir = sshenv.run_dir(rid)
        sshenv.wait_for(lambda: (run_dir / "job.exit").exists(), timeout=180, what="the job's exit marker")
        filler = data / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)  # the local disk fills up meanwhile
        try:
            for chunk in (bytes(64 * 1024), bytes(1)):
                try:
                    while os.write(fd, chunk):
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)
        p = sshenv.cli("poll", "--remote-id", str(rid), check=False)
        assert p.returncode != 0
        assert f"remote_id {rid}: poll failed, nothing replayed" in p.stderr and f"no space left on device writing {data}/" in p.stderr, p.stderr
        assert "exit -9" not in p.stderr
        assert not [n for n in files_under(data) if ".part." in n]  # no partial file
        assert sshenv.q("select state from remote_run where remote_id = ?", rid) == [("run",)]
        filler.unlink()
        sshenv.cli("poll", "--remote-id", str(rid))
        assert sshenv.q("select state from remote_run where remote_id = ?", rid) == [("full",)]
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
