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
from sc_remote import RootCheck, within_roots  # noqa: E402


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


def test_root_check_answers_as_within_roots(area):
    """missing's RootCheck (each parent resolved once) gives within_roots' answer, links and all."""
    root, root2, outside = area
    (root / "sub").mkdir()
    (root / "to_outside").symlink_to(outside)
    (root / "file_link").symlink_to(outside / "f")
    (root / "in_link").symlink_to(root2 / "f")
    (root / "to_root2").symlink_to(root2)
    (root / "sub" / "up").symlink_to("../..")
    roots = [str(root), str(root2)]
    check = RootCheck(roots)
    paths = [str(root / "a"), str(root / "new" / "deeper" / "x"), str(root2 / "b"), str(root / "sub" / ".." / "a"),
             str(root / "to_root2" / "x"), str(root), str(root2), str(root / ".." / "outside" / "x"), str(root / "to_outside" / "x"),
             str(root / "file_link"), str(root / "in_link"), str(outside / "x"), str(root) + "-sibling/x", "relative/path", "",
             str(root / "a\0b"), str(root / "sub" / "up"), str(root / "sub" / "up" / "x"), str(root / "sub") + "/", "/", str(root / ".")]
    for _ in range(2):  # the second time from the cache of parents
        assert [check(p) for p in paths] == [within_roots(p, roots) for p in paths]


# ---------------------------------------------------------------------------------------
# missing


def test_missing_lists_absent_wrong_size_and_wrong_content(area):
    root, root2, _ = area
    (root / "ok").write_bytes(b"abc")
    (root / "short").write_bytes(b"ab")
    (root / "other").write_bytes(b"abd")  # the right size, another content
    (root / "dir").mkdir()
    odd = root2 / "with space & 'q'\ttab"
    odd.write_bytes(b"12345")
    abc, five = sha(b"abc"), sha(b"12345")
    lines = [f"{root / 'ok'}\t3\t{abc}", f"{root / 'short'}\t3\t{abc}", f"{root / 'absent'}\t0\t{sha(b'')}",
             f"{root / 'dir'}\t4096\t{abc}", f"{root2 / 'with space'}\t5\t{five}",
             f"{odd}\t5\t{five}", f"{root / 'nodir' / 'x'}\t1\t{abc}", f"{root / 'other'}\t3\t{abc}"]
    r = tool("missing", [root, root2], ("\n".join(lines) + "\n").encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [lines[1], lines[2], lines[3], lines[4], lines[6], lines[7]]


@pytest.mark.parametrize("bad", ["outside", "dotdot", "symlink", "relative", "badsize", "nosha", "badsha"])
def test_missing_refuses_paths_outside_roots_and_bad_lines(area, bad):
    root, _, outside = area
    (root / "link").symlink_to(outside)
    z = sha(b"")
    line = {"outside": f"{outside / 'x'}\t1\t{z}",
            "dotdot": f"{root}/../outside/x\t1\t{z}",
            "symlink": f"{root / 'link' / 'x'}\t1\t{z}",
            "relative": f"scratch/x\t1\t{z}",
            "badsize": f"{root / 'x'}\tbig\t{z}",
            "nosha": f"{root / 'x'}\t1",  # the old two-field form
            "badsha": f"{root / 'x'}\t1\t{z.upper()}"}[bad]
    r = tool("missing", [root], f"{root / 'a'}\t1\t{z}\n{line}\n".encode())
    assert r.returncode == 3
    assert r.stdout == b""  # nothing printed before the refusal
    assert b"refused" in r.stderr and b"line 2" in r.stderr


# ---------------------------------------------------------------------------------------
# the manifest: unpack records what it wrote, missing answers from stat + manifest


def push(root2, files: dict, roots, manifest=True):
    """unpack files {path: bytes} with the manifest under root2 (the permanent root)."""
    argv = ["--manifest", str(root2 / "manifest")] if manifest else []
    r = subprocess.run([PY, str(TOOL), "unpack", *sum((["--root", str(x)] for x in roots), []), *argv],
                       input=make_tar(*(file_member(rel(p), d) for p, d in files.items())), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def ask(root2, files: dict, roots, manifest=True):
    """missing for files {path: wanted bytes}: (the paths listed, the counts it reports)."""
    argv = ["--manifest", str(root2 / "manifest")] if manifest else []
    listing = "".join(f"{p}\t{len(d)}\t{sha(d)}\n" for p, d in files.items()).encode()
    r = subprocess.run([PY, str(TOOL), "missing", *sum((["--root", str(x)] for x in roots), []), *argv],
                       input=listing, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stderr.decode().strip().splitlines()[-1].split(": ", 1)[1])
    return [line.split("\t")[0] for line in r.stdout.decode().splitlines()], counts


def shard_lines(root2) -> list[bytes]:
    return [line for f in sorted((root2 / "manifest").rglob("*")) if f.is_file() for line in f.read_bytes().splitlines() if line]


def test_missing_answers_from_the_manifest_and_finds_changes_on_the_site(area):
    root, root2, _ = area
    roots = [root, root2]
    files = {str(root / "d" / f"f{i}"): os.urandom(1000) for i in range(6)}
    push(root2, files, roots)
    m = root2 / "manifest"
    assert oct(m.stat().st_mode & 0o777) == "0o700" and len(shard_lines(root2)) == 6
    assert ask(root2, files, roots) == ([], {"checked": 6, "by_manifest": 6, "hashed": 0, "hashed_bytes": 0, "missing": 0})

    f0, f1, f2, f3 = (Path(p) for p in list(files)[:4])
    st = f0.stat()  # changed in place, same size, its mtime set back: only ctime tells
    with open(f0, "r+b") as f:
        f.write(b"X" * 1000)
    os.utime(f0, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f0.stat().st_size, f0.stat().st_mtime_ns, f0.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    f1.unlink()  # purged
    tmp = f2.with_name("tmp")  # replaced by another file of the same content: re-hashed, present
    tmp.write_bytes(files[str(f2)])
    os.replace(tmp, f2)
    st3 = f3.stat()  # replaced by another content of the same size, mtime restored
    tmp.write_bytes(os.urandom(1000))
    os.utime(tmp, ns=(st3.st_atime_ns, st3.st_mtime_ns))
    os.replace(tmp, f3)
    listed, counts = ask(root2, files, roots)
    assert listed == [str(f0), str(f1), str(f3)]
    assert counts == {"checked": 6, "by_manifest": 2, "hashed": 3, "hashed_bytes": 3000, "missing": 3}
    # what missing hashed is recorded, other content too: the next call reads no file
    assert ask(root2, files, roots) == ([str(f0), str(f1), str(f3)], {"checked": 6, "by_manifest": 5, "hashed": 0, "hashed_bytes": 0, "missing": 3})
    pushed = {p: files[p] for p in (str(f0), str(f1), str(f3))}
    push(root2, pushed, roots)  # pushed again: present, by the manifest alone
    assert ask(root2, files, roots) == ([], {"checked": 6, "by_manifest": 6, "hashed": 0, "hashed_bytes": 0, "missing": 0})
    assert [Path(p).read_bytes() for p in files] == list(files.values())
    # unpack without --manifest (exec's bundle files) records nothing
    before = shard_lines(root2)
    push(root2, {str(root / "d" / "bundle.json"): b"{}"}, roots, manifest=False)
    assert shard_lines(root2) == before


def test_manifest_lines_cut_short_or_garbled_are_skipped(area):
    root, root2, _ = area
    roots = [root, root2]
    files = {str(root / "d" / f"f{i}"): os.urandom(100) for i in range(3)}
    push(root2, files, roots)
    (shard,) = [f for f in (root2 / "manifest").rglob("*") if f.is_file()]
    lines = [line for line in shard.read_bytes().splitlines(keepends=True) if line.strip()]
    assert len(lines) == 3
    forged = lines[1].replace(lines[1].split(b"\t")[1], sha(b"forged").encode())  # crc no longer matches
    # a writer killed in the middle of a line, a garbled line, a line whose crc fails
    shard.write_bytes(lines[0] + forged + lines[2] + b"\0\0\0garbage\n" + lines[0][:40])
    assert ask(root2, files, roots) == ([], {"checked": 3, "by_manifest": 2, "hashed": 1, "hashed_bytes": 100, "missing": 0})
    assert ask(root2, files, roots)[1]["hashed"] == 0  # the re-hash was recorded, after the cut line


def test_concurrent_pushes_and_checks_lose_no_entry(area):
    root, root2, _ = area
    roots = [root, root2]
    groups = [{str(root / "d" / f"g{g}-{i}"): os.urandom(2000) for i in range(400)} for g in range(4)]
    argv = [PY, str(TOOL), "unpack", "--root", str(root), "--root", str(root2), "--manifest", str(root2 / "manifest")]
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in groups]
    checks = [subprocess.Popen(argv[:2] + ["missing", *argv[3:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(2)]  # reading the same shard meanwhile
    for p, g in zip(procs, groups):
        p.stdin.write(make_tar(*(file_member(rel(x), d) for x, d in g.items())))
        p.stdin.close()
    for c in checks:
        c.stdin.write("".join(f"{x}\t2000\t{sha(d)}\n" for x, d in groups[0].items()).encode())
        c.stdin.close()
    assert all(p.wait(60) == 0 for p in procs + checks)
    everything = {k: v for g in groups for k, v in g.items()}
    listed, counts = ask(root2, everything, roots)
    assert listed == [] and counts["hashed"] in (0, 400, 800)  # a check that hashed a file before its push won't count twice
    assert ask(root2, everything, roots)[1] == {"checked": 1600, "by_manifest": 1600, "hashed": 0, "hashed_bytes": 0, "missing": 0}


def test_a_shard_of_mostly_dead_entries_is_compacted(area):
    root, root2, _ = area
    roots = [root, root2]
    files = {str(root / "d" / f"f{i}"): os.urandom(100) for i in range(4)}
    for _ in range(10):  # each push rewrites the files: a new entry each, the older ones dead
        push(root2, files, roots)
    assert len(shard_lines(root2)) == 40
    assert ask(root2, files, roots) == ([], {"checked": 4, "by_manifest": 4, "hashed": 0, "hashed_bytes": 0, "missing": 0})
    assert len(shard_lines(root2)) == 4  # one live entry a file
    Path(list(files)[0]).unlink()
    assert ask(root2, files, roots)[0] == [list(files)[0]]


@pytest.mark.parametrize("kind", ["symlink", "group-writable", "foreign"])
def test_a_manifest_directory_not_the_accounts_own_is_refused(area, kind):
    root, root2, outside = area
    m = root2 / "manifest"
    if kind == "symlink":  # to a directory inside the roots (one outside fails the root check first)
        (root2 / "elsewhere").mkdir(mode=0o700)
        m.symlink_to(root2 / "elsewhere")
    else:
        m.mkdir()
        m.chmod(0o770 if kind == "group-writable" else 0o700)
        if kind == "foreign":
            if os.geteuid() != 0:
                pytest.skip("needs root to give the directory away")
            os.chown(m, 65534, 65534)
    for cmd in ("unpack", "missing"):
        stdin = make_tar(file_member(rel(root / "x"), b"abc")) if cmd == "unpack" else f"{root / 'x'}\t3\t{sha(b'abc')}\n".encode()
        r = subprocess.run(
            [PY, str(TOOL), cmd, "--root", str(root), "--root", str(root2), "--manifest", str(m)], input=stdin, capture_output=True, timeout=60)
        assert r.returncode == 3 and r.stdout == b""
        line = r.stderr.decode()
        assert "refused: manifest directory" in line and str(m) in line
        assert {"symlink": "symbolic link", "group-writable": "writable by group", "foreign": "uid 65534"}[kind] in line
    assert not (root / "x").exists() and list(outside.iterdir()) == []  # nothing written, nothing followed
    if kind == "symlink":
        assert list((root2 / "elsewhere").iterdir()) == []


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
