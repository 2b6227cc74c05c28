"""The local digest cache (site/digests.py): a file hashed once across runs and processes, by
(st_dev, st_ino, st_size, st_mtime_ns); private; a bad cache rebuilt, never trusted."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scbundle.site.digests import DigestCache, cache_path

OLD = time.time_ns() - 3600 * 10**9  # an mtime an hour ago: past the racy window


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make(d: Path, n: int, size: int = 3000) -> dict[str, bytes]:
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(n):
        p, data = d / f"f{i}", os.urandom(size)
        p.write_bytes(data)
        os.utime(p, ns=(OLD, OLD))
        files[str(p)] = data
    return files


def rows(workdir: Path) -> dict[tuple[int, int], str]:
    with sqlite3.connect(cache_path(workdir)) as c:
        return {(dev, ino): s.hex() for dev, ino, s in c.execute("select dev, ino, sha256 from digest")}


def digests_in_a_new_process(workdir: Path, paths: list[str]) -> tuple[dict[str, str], int]:
    code = (
        "import json, sys; from scbundle.site.digests import DigestCache\n"
        "with DigestCache.for_workdir(sys.argv[1]) as c: d, s = c.digests(sys.argv[2:])\n"
        "print(json.dumps([{p: v.sha256 for p, v in d.items()}, s.hashed]))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code, str(workdir), *paths], capture_output=True, text=True, check=True, timeout=60)
    got, hashed = json.loads(out.stdout)
    return got, hashed


def test_an_unchanged_file_is_hashed_once_across_processes(tmp_path):
    work = tmp_path / "work"
    files = make(tmp_path / "data", 20)
    with DigestCache.for_workdir(work) as c:
        got, st = c.digests(files)
    assert {p: d.sha256 for p, d in got.items()} == {p: sha(v) for p, v in files.items()}
    assert (st.hashed, st.cached, st.hashed_bytes) == (20, 0, 60000)
    assert sorted(rows(work).values()) == sorted(sha(v) for v in files.values())  # one row a file
    # the trade-off: content changed in place with (dev, ino, size, mtime_ns) restored is not
    # seen (only the owner or root can set mtime back); this proves the file is not read again
    kept, normal = list(files)[:2]
    ino = os.stat(kept).st_ino
    with open(kept, "r+b") as f:
        f.write(b"Z" * 3000)
    os.utime(kept, ns=(OLD, OLD))
    assert (os.stat(kept).st_ino, os.stat(kept).st_size, os.stat(kept).st_mtime_ns) == (ino, 3000, OLD)
    with open(normal, "r+b") as f:  # an ordinary edit: a new mtime
        f.write(b"Y" * 3000)
    got2, hashed = digests_in_a_new_process(work, list(files))
    assert hashed == 1  # only the edited file was read
    assert got2[kept] == sha(files[kept])  # from the cache, as documented
    assert got2[normal] == sha(b"Y" * 3000)


def test_a_file_modified_just_now_is_not_cached(tmp_path):
    work = tmp_path / "work"
    p = tmp_path / "fresh"
    p.write_bytes(b"new")  # mtime = now: a second write in the same tick could keep it
    with DigestCache.for_workdir(work) as c:
        assert c.digests([str(p)])[1].hashed == 1
        assert c.digests([str(p)])[1].hashed == 1
    assert rows(work) == {}


def test_the_cache_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        work = tmp_path / "work"
        files = make(tmp_path / "data", 1)
        with DigestCache.for_workdir(work) as c:
            c.digests(files)
    finally:
        os.umask(old)
    f = cache_path(work)
    assert oct(f.parent.stat().st_mode & 0o777) == "0o700"
    for p in f.parent.iterdir():
        assert oct(p.stat().st_mode & 0o777) == "0o600", p


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-table", "bad-digest", "symlink"])
def test_a_bad_cache_is_rebuilt_never_trusted(tmp_path, damage):
    work = tmp_path / "work"
    files = make(tmp_path / "data", 5)
    with DigestCache.for_workdir(work) as c:
        c.digests(files)
    f = cache_path(work)
    victim = tmp_path / "victim"
    victim.write_bytes(b"the operator's file")
    if damage == "garbage":
        f.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "other-table":
        f.unlink()
        with sqlite3.connect(f) as db:
            db.execute("create table digest (x)")
            db.execute("pragma user_version=7")
    elif damage == "bad-digest":  # a row whose digest is not one: ignored, the file hashed
        with sqlite3.connect(f) as db:
            db.execute("update digest set sha256 = 'not a digest of 32 bytes'")
    else:
        f.unlink()
        f.symlink_to(victim)
    with DigestCache.for_workdir(work) as c:
        got, st = c.digests(files)
    assert {p: d.sha256 for p, d in got.items()} == {p: sha(v) for p, v in files.items()}
    assert st.hashed == 5 and st.cached == 0
    if damage != "bad-digest":
        assert st.problems and "rebuilt" in st.problems[0]
    assert victim.read_bytes() == b"the operator's file"  # a planted link is never written through
    assert not f.is_symlink() and len(rows(work)) == 5  # a sound cache again


def test_several_processes_at_once(tmp_path):
    work = tmp_path / "work"
    files = make(tmp_path / "data", 300, size=500)
    paths = list(files)
    code = "import sys; from scbundle.site.digests import DigestCache\nwith DigestCache.for_workdir(sys.argv[1]) as c: c.digests(sys.argv[2:])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(work), *paths[k * 50 : k * 50 + 150]], stderr=subprocess.PIPE) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0] * 4, [p.stderr.read() for p in procs]
    assert len(rows(work)) == 300  # overlapping sets, written at once: every row there, once
    with DigestCache.for_workdir(work) as c:
        assert c.digests(paths)[1].hashed == 0


def test_a_file_gone_or_not_regular_is_an_error(tmp_path):
    (tmp_path / "d").mkdir()
    with DigestCache.for_workdir(tmp_path / "work") as c:
        with pytest.raises(FileNotFoundError):
            c.digests([str(tmp_path / "absent")])
        with pytest.raises(OSError, match="not a regular file"):
            c.digests([str(tmp_path / "d")])
