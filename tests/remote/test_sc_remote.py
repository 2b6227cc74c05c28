"""sc_remote.py: missing / unpack / pack, run as real subprocesses, and root confinement."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

PY = os.environ.get("SCBUNDLE_REMOTE_PYTHON", sys.executable)  # e.g. the remote's python3.9

REMOTE = Path(__file__).resolve().parents[2] / "remote"
TOOL = REMOTE / "sc_remote.py"
sys.path.insert(0, str(REMOTE))
from sc_remote import within_roots  # noqa: E402


def tool(cmd, roots, stdin: bytes):
    argv = [PY, str(TOOL), cmd]
    for r in roots:
        argv += ["--root", str(r)]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


def rel(path) -> str:
    """A remote path as a member name: the leading '/' removed."""
    return str(path).lstrip("/")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_member(name, data, digest="auto"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    if digest == "auto":
        digest = sha(data)
    if digest is not None:
        info.pax_headers = {"SCBUNDLE.sha256": digest}
    return info, io.BytesIO(data)


def make_tar(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, data)
    return buf.getvalue()


def all_files(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


@pytest.fixture
def area(tmp_path):
    root, root2, outside = tmp_path / "scratch", tmp_path / "perm", tmp_path / "outside"
    for d in (root, root2, outside):
        d.mkdir()
    return root, root2, outside


# ---------------------------------------------------------------------------------------
# within_roots


def test_within_roots(area):
    root, root2, outside = area
    (root / "sub").mkdir()
    (root / "to_outside").symlink_to(outside)
    (root / "file_link").symlink_to(outside / "f")
    (root / "to_root2").symlink_to(root2)
    roots = [str(root), str(root2)]
    assert within_roots(str(root / "a"), roots)
    assert within_roots(str(root / "new" / "deeper" / "x"), roots)
    assert within_roots(str(root2 / "b"), roots)
    assert within_roots(str(root / "sub" / ".." / "a"), roots)
    assert within_roots(str(root / "to_root2" / "x"), roots)
    assert within_roots(str(root), roots)
    assert not within_roots(str(root / ".." / "outside" / "x"), roots)
    assert not within_roots(str(root / "to_outside" / "x"), roots)
    assert not within_roots(str(root / "file_link"), roots)
    assert not within_roots(str(outside / "x"), roots)
    assert not within_roots(str(root) + "-sibling/x", roots)  # a prefix is not a parent
    assert not within_roots("relative/path", roots)
    assert not within_roots("", roots)
    assert not within_roots(str(root / "a\0b"), roots)


# ---------------------------------------------------------------------------------------
# missing


def test_missing_lists_absent_and_wrong_size(area):
    root, root2, _ = area
    (root / "ok").write_bytes(b"abc")
    (root / "short").write_bytes(b"ab")
    (root / "dir").mkdir()
    odd = root2 / "with space & 'q'\ttab"
    odd.write_bytes(b"12345")
    lines = [f"{root / 'ok'}\t3", f"{root / 'short'}\t3", f"{root / 'absent'}\t0",
             f"{root / 'dir'}\t4096", f"{root2 / 'with space'}\t5",
             f"{odd}\t5", f"{root / 'nodir' / 'x'}\t1"]
    r = tool("missing", [root, root2], ("\n".join(lines) + "\n").encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [lines[1], lines[2], lines[3], lines[4],
                                              lines[6]]


@pytest.mark.parametrize("bad", ["outside", "dotdot", "symlink", "relative", "badsize"])
def test_missing_refuses_paths_outside_roots(area, bad):
    root, _, outside = area
    (root / "link").symlink_to(outside)
    line = {"outside": f"{outside / 'x'}\t1",
            "dotdot": f"{root}/../outside/x\t1",
            "symlink": f"{root / 'link' / 'x'}\t1",
            "relative": "scratch/x\t1",
            "badsize": f"{root / 'x'}\tbig"}[bad]
    r = tool("missing", [root], f"{root / 'a'}\t1\n{line}\n".encode())
    assert r.returncode == 3
    assert r.stdout == b""  # nothing printed before the refusal
    assert b"refused" in r.stderr


# ---------------------------------------------------------------------------------------
# unpack


def test_unpack_writes_files_and_dirs(area):
    root, root2, _ = area
    big = os.urandom(3 * 1024 * 1024 + 7)
    dirinfo = tarfile.TarInfo(rel(root / "made" / "dir"))
    dirinfo.type = tarfile.DIRTYPE
    data = make_tar(
        (dirinfo, None),
        file_member(rel(root / "a" / "b" / "big.bin"), big),
        file_member(rel(root2 / "empty"), b""),
        file_member(rel(root2 / "nosum"), b"no checksum header", digest=None),
    )
    r = tool("unpack", [root, root2], data)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"files": 3, "bytes": len(big) + 18}
    assert (root / "made" / "dir").is_dir()
    assert (root / "a" / "b" / "big.bin").read_bytes() == big
    assert (root2 / "empty").read_bytes() == b""
    assert (root2 / "nosum").read_bytes() == b"no checksum header"
    assert not [p for p in all_files(root) + all_files(root2) if ".part." in p]


def test_unpack_empty_stream(area):
    root = area[0]
    r = tool("unpack", [root], b"")
    assert r.returncode == 0 and json.loads(r.stdout) == {"files": 0, "bytes": 0}
    r = tool("unpack", [root], make_tar())
    assert r.returncode == 0 and json.loads(r.stdout) == {"files": 0, "bytes": 0}


def _evil(kind, root, outside):
    if kind == "dotdot":
        return file_member(rel(root) + "/../outside/evil", b"x")
    if kind == "outside":
        return file_member(rel(outside / "evil"), b"x")
    if kind == "absolute":
        return file_member("/" + rel(root / "evil"), b"x")
    if kind == "double_slash":
        return file_member("/" + rel(outside / "evil"), b"x")
    if kind == "through_symlink":  # an existing link inside the root points outside
        (root / "link").symlink_to(outside)
        return file_member(rel(root / "link" / "evil"), b"x")
    info = tarfile.TarInfo(rel(root / "evil"))
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, str(outside)
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, rel(outside / "target")
    elif kind == "device":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    return info, None


@pytest.mark.parametrize("kind", ["dotdot", "outside", "absolute", "double_slash",
                                  "through_symlink", "symlink", "hardlink", "device",
                                  "fifo"])
def test_unpack_refuses_escapes(area, kind):
    root, _, outside = area
    (outside / "target").write_bytes(b"precious")
    before_outside = all_files(outside)
    first = file_member(rel(root / "first"), b"complete before the error")
    after = file_member(rel(root / "after"), b"never reached")
    r = tool("unpack", [root], make_tar(first, _evil(kind, root, outside), after))
    assert r.returncode == 3, r.stderr
    assert b"refused" in r.stderr
    assert all_files(outside) == before_outside
    assert (outside / "target").read_bytes() == b"precious"
    assert not (root / "evil").exists() and not os.path.lexists(root / "evil")
    assert not (root / "after").exists()
    # files renamed into place before the error are complete and stay
    assert (root / "first").read_bytes() == b"complete before the error"
    assert not [p for p in all_files(root) if ".part." in p]


def tar_members(*members) -> bytes:
    """The members of a tar stream without its end-of-archive blocks (a stream still arriving)."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    for info, data in members:
        tf.addfile(info, data)
    return buf.getvalue()  # before close(): no end blocks yet


def test_unpack_directory_swapped_for_a_link_mid_stream_writes_nothing_outside(area):
    """A co-user swaps a directory the unpacker already wrote into for a symlink while the
    stream is still arriving: the rest of its files must not follow the link."""
    root, _, outside = area
    d = root / "inputs"
    p = subprocess.Popen([PY, str(TOOL), "unpack", "--root", str(root)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(tar_members(*(file_member(rel(d / ("f%d" % i)), b"before %d" % i)
                                    for i in range(3))))
        p.stdin.flush()
        deadline = time.monotonic() + 30
        while not (d / "f2").exists():  # the unpacker has written the first files
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
            time.sleep(0.01)
        os.rename(d, root / "inputs.moved")
        os.symlink(outside, d)
        p.stdin.write(make_tar(*(file_member(rel(d / ("f%d" % i)), b"after %d" % i)
                                 for i in range(3, 6))))
        p.stdin.close()
        p.wait(timeout=60)
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        p.kill()
    assert all_files(outside) == []  # nothing followed the link
    assert p.returncode == 0, err
    assert json.loads(out)["files"] == 6
    # the writes went on into the directory that was checked, wherever its name now points
    assert sorted(all_files(root / "inputs.moved")) == ["f%d" % i for i in range(6)]


def test_unpack_follows_a_link_only_into_the_roots(area):
    """A directory symlink already in place is resolved once, to a directory inside a root, and
    walked there without following links; one leading outside is refused."""
    root, root2, outside = area
    (root / "to_root2").symlink_to(root2)
    r = tool("unpack", [root, root2], make_tar(file_member(rel(root / "to_root2" / "x" / "f"), b"in")))
    assert r.returncode == 0, r.stderr
    assert (root2 / "x" / "f").read_bytes() == b"in"
    (root2 / "x" / "out").symlink_to(outside)
    r = tool("unpack", [root, root2], make_tar(file_member(rel(root / "to_root2" / "x" / "out" / "f"), b"no")))
    assert r.returncode == 3 and b"outside the roots" in r.stderr
    assert all_files(outside) == []


def test_unpack_sha_mismatch_leaves_nothing(area):
    root = area[0]
    data = make_tar(file_member(rel(root / "d" / "x"), b"payload", digest=sha(b"other")))
    r = tool("unpack", [root], data)
    assert r.returncode == 3 and b"sha256" in r.stderr
    assert not (root / "d" / "x").exists()
    assert not [p for p in all_files(root) if ".part." in p]


def test_unpack_cut_short_stream_leaves_nothing(area):
    root = area[0]
    payload = os.urandom(100_000)
    data = make_tar(file_member(rel(root / "x"), payload))
    r = tool("unpack", [root], data[:60_000])
    assert r.returncode == 3
    assert not (root / "x").exists()
    assert not [p for p in all_files(root) if ".part." in p]


def test_unpack_garbage_is_refused(area):
    r = tool("unpack", [area[0]], b"this is not a tar stream at all" * 40)
    assert r.returncode == 3


# ---------------------------------------------------------------------------------------
# pack


def read_tar(data: bytes):
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            out[m.name] = (tf.extractfile(m).read(), dict(m.pax_headers))
    return out


def test_pack_names_members_by_line_and_skips_absent(area):
    root, root2, _ = area
    files = {0: (root / "a.bin", os.urandom(2 * 1024 * 1024 + 3)),
             2: (root2 / "sub" / "c d.txt", b"hello"),
             4: (root / "empty", b"")}
    for path, data in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "adir").mkdir()
    os.mkfifo(root / "fifo")  # must be skipped, not block the pack
    lines = [files[0][0], root / "absent", files[2][0], root / "adir", files[4][0],
             root / "fifo"]
    r = tool("pack", [root, root2], "".join(f"{p}\n" for p in lines).encode())
    assert r.returncode == 0, r.stderr
    members = read_tar(r.stdout)
    assert sorted(members) == ["0", "2", "4"]
    for i, (_, data) in files.items():
        got, headers = members[str(i)]
        assert got == data
        assert headers["SCBUNDLE.sha256"] == sha(data)


def test_pack_unpack_round_trip(area, tmp_path):
    root, _, _ = area
    dest = tmp_path / "dest"
    dest.mkdir()
    originals = [os.urandom(n) for n in (0, 1, 511, 512, 513, 1_500_000)]
    paths = []
    for i, data in enumerate(originals):
        p = root / ("f%d" % i)
        p.write_bytes(data)
        paths.append(p)
    r = tool("pack", [root], "".join(f"{p}\n" for p in paths).encode())
    assert r.returncode == 0, r.stderr
    # the local side renames members to their destinations and sends them back
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r|") as src, \
            tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for m in src:
            data = src.extractfile(m).read()
            m.name = rel(dest / "copy" / ("g" + m.name))
            out.addfile(m, io.BytesIO(data))
    r = tool("unpack", [dest], buf.getvalue())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == len(originals)
    for i, data in enumerate(originals):
        assert (dest / "copy" / ("g%d" % i)).read_bytes() == data


@pytest.mark.parametrize("bad", ["outside", "dotdot", "symlink", "blank", "relative"])
def test_pack_refuses_paths_outside_roots(area, bad):
    root, _, outside = area
    (outside / "secret").write_bytes(b"secret")
    (root / "ok").write_bytes(b"ok")
    (root / "link").symlink_to(outside / "secret")
    line = {"outside": str(outside / "secret"), "dotdot": f"{root}/../outside/secret",
            "symlink": str(root / "link"), "blank": "", "relative": "secret"}[bad]
    r = tool("pack", [root], f"{root / 'ok'}\n{line}\n".encode())
    # the path is refused on its own (named on stderr) and the others still come back, so one
    # product swapped for a symlink on the site fails its component, not the whole run
    assert r.returncode == 0, r.stderr
    assert b"refused" in r.stderr
    assert sorted(read_tar(r.stdout)) == ["0"]
    assert b"secret" not in r.stdout


def test_usage_error_exits_3(area):
    r = tool("missing", [], b"")
    assert r.returncode == 3
