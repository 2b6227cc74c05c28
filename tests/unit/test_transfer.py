import hashlib
import io
import os
import tarfile

import hostile_tar as ht
import pytest

from scbundle.core.errors import UnsafeArchiveError
from scbundle.site.transfer import SHA_KEY, extract_returned, write_push_tar


def tar_of(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def regular(name, data=b"hello", sha="auto"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    if sha == "auto":
        sha = hashlib.sha256(data).hexdigest()
    if sha:
        info.pax_headers = {SHA_KEY: sha}
    return info, data


def test_returned_files_land_at_their_destinations(tmp_path):
    dest = {0: tmp_path / "out" / "a.json", 1: tmp_path / "out" / "sub" / "b.json"}
    got = extract_returned(tar_of(regular("0", b"A"), regular("1", b"BB")), dest, [tmp_path / "out"])
    assert got.indices == {0, 1} and got.bytes == 3
    assert (tmp_path / "out" / "sub" / "b.json").read_bytes() == b"BB"


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "2", "0/../../x", "abc"])
def test_unexpected_member_names_refused(tmp_path, name):
    dest = {0: tmp_path / "out" / "a"}
    with pytest.raises(UnsafeArchiveError):
        extract_returned(tar_of(regular(name)), dest, [tmp_path / "out"])
    assert not (tmp_path / "evil").exists()
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))


def test_symlink_member_refused(tmp_path):
    link = tarfile.TarInfo("0")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        extract_returned(tar_of((link, None)), {0: tmp_path / "out" / "a"}, [tmp_path / "out"])
    assert not (tmp_path / "out" / "a").exists()


def test_destination_outside_roots_refused_before_anything_is_written(tmp_path):
    dest = {0: tmp_path / "out" / "ok", 1: tmp_path / "out" / ".." / "escape"}
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_returned(tar_of(regular("0"), regular("1")), dest, [tmp_path / "out"])
    assert not (tmp_path / "out" / "ok").exists() and not (tmp_path / "escape").exists()


def test_destination_through_symlinked_dir_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "link")
    with pytest.raises(UnsafeArchiveError, match="resolves outside"):
        extract_returned(tar_of(regular("0")), {0: tmp_path / "out" / "link" / "f"}, [tmp_path / "out"])
    assert list(outside.iterdir()) == []


def test_checksum_mismatch_refused_and_nothing_left(tmp_path):
    with pytest.raises(UnsafeArchiveError, match="checksum"):
        extract_returned(tar_of(regular("0", b"data", sha="0" * 64)), {0: tmp_path / "out" / "f"}, [tmp_path / "out"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_push_tar_carries_checksums(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    buf = io.BytesIO()
    write_push_tar(buf, [(str(f), "/remote/root/x.bin")])
    buf.seek(0)
    with tarfile.open(fileobj=buf) as t:
        (m,) = t.getmembers()
    assert m.name == "remote/root/x.bin"
    assert m.pax_headers[SHA_KEY] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_lean_writer_is_read_alike_by_tarfile_gnu_tar_and_the_remote_reader(tmp_path, monkeypatch):
    import hashlib
    import importlib.util
    import subprocess

    import scbundle.site.transfer as tr
    from scbundle.core.resources import remote_dir

    files = []
    for i, size in enumerate([0, 1, 511, 512, 513, 70000]):
        p = tmp_path / f"in{i}"
        p.write_bytes(os.urandom(size))
        files.append((str(p), f"/remote/{'d' * 120}/f{i} with space"))
    buf = io.BytesIO()
    monkeypatch.setattr(tr, "_SMALL", 600)  # the two larger files take the streaming branch
    write_push_tar(buf, files)
    raw = buf.getvalue()
    assert len(raw) % 512 == 0 and raw.endswith(bytes(1024))
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        got = {m.name: (t.extractfile(m).read(), m.pax_headers[SHA_KEY]) for m in t}
    for local, remote in files:
        data = open(local, "rb").read()
        assert got[remote.lstrip("/")] == (data, hashlib.sha256(data).hexdigest())
    spec = importlib.util.spec_from_file_location("sc_remote_under_test", remote_dir() / "sc_remote.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ts = mod.TarStream(io.BytesIO(raw))
    seen = {m.name: ts.extractfile(m).read() for m in ts}
    assert seen == {k: v[0] for k, v in got.items()}
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(out)], input=raw, check=True, capture_output=True)
    for local, remote in files:
        assert (out / remote.lstrip("/")).read_bytes() == open(local, "rb").read()


# ---------------------------------------------------------------------------------------
# hostile returned streams (tests/hostile_tar.py): refused, with bounded memory and disk


class Lazy(io.RawIOBase):
    """``head`` then ``n`` generated bytes: a huge stream that costs nothing until it is read."""

    def __init__(self, head: bytes, n: int = 0, fill: bytes = b"\0", tail: bytes = b"") -> None:
        self.parts = [head, (n, fill), tail]
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.parts:
            part = self.parts[0]
            if isinstance(part, tuple):
                n, fill = part
                k = min(n, len(b))
                if k:
                    b[:k] = (fill * (k // len(fill) + 1))[:k]
                    self.parts[0] = (n - k, fill)
                    self.read_bytes += k
                    return k
            elif part:
                k = min(len(part), len(b))
                b[:k] = part[:k]
                self.parts[0] = part[k:]
                self.read_bytes += k
                return k
            self.parts.pop(0)
        return 0


def _files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


@pytest.mark.parametrize(
    "case, stream, match",
    [
        ("old GNU sparse", lambda: io.BytesIO(ht.old_gnu_sparse("0", 64 << 20) + ht.END), "GNU sparse"),
        ("pax sparse", lambda: io.BytesIO(ht.pax_sparse("0", 64 << 20) + ht.END), "sparse-file record"),
        ("no checksum", lambda: io.BytesIO(ht.regular("0", b"data", sha=None) + ht.END), "carries no SCBUNDLE.sha256"),
        ("huge pax header", lambda: Lazy(ht.header(b"PaxHeader", 200 << 20, b"x"), 200 << 20), "pax header of 209715200 bytes"),
        ("trailing data", lambda: Lazy(ht.regular("0", b"ok") + ht.END, 64 << 20, b"x"), "after the end of the archive"),
        ("too much padding", lambda: Lazy(ht.regular("0", b"ok") + ht.END, 64 << 20), "more than 10240 bytes after the end"),
        ("oversized product", lambda: Lazy(ht.pax_header({ht.SHA_KEY: ht.zeros_sha(64 << 20)}) + ht.header(b"0", 64 << 20, b"0"), 64 << 20, tail=ht.END), "more than the 1048576 accepted"),
        ("gnu long name", lambda: io.BytesIO(ht.header(b"././@LongLink", 4, b"L", magic=ht.GNU) + b"0\0\0\0" + ht.pad(4) + ht.regular("0", b"x") + ht.END), "GNU long-name"),
        ("twice", lambda: io.BytesIO(ht.regular("0", b"a") + ht.regular("0", b"b") + ht.END), "member 0 twice"),
        ("not canonical", lambda: io.BytesIO(ht.regular("00", b"a") + ht.END), "unexpected member '00'"),
        ("no end blocks", lambda: io.BytesIO(ht.regular("0", b"a")), "without its end-of-archive blocks"),
    ],
)  # fmt: skip
def test_hostile_returned_streams_are_refused_with_bounded_memory_and_disk(tmp_path, case, stream, match):
    import tracemalloc

    out = tmp_path / "out"
    out.mkdir()
    src = stream()
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchiveError, match=match):
            extract_returned(src, {0: out / "f"}, [out], max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{case}: peak {peak} bytes"
    if isinstance(src, Lazy):
        assert src.read_bytes < 2 << 20, f"{case}: read {src.read_bytes} bytes"  # stopped reading
    # nothing of the refused member written, no part file left; a complete, checked file
    # renamed into place before the refusal stays
    complete = ["f"] if case in ("twice", "trailing data", "too much padding", "no end blocks") else []
    assert _files_under(out) == complete, case


def test_returned_part_files_are_private_and_never_follow_a_planted_link(tmp_path, monkeypatch):
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.write_bytes(b"precious")
    monkeypatch.setattr("secrets.token_hex", lambda n: "guess")  # so the test can plant at the name
    for name in (f".f.part.{os.getpid()}", f".f.part.{os.getpid()}.guess"):  # before and after this change
        (out / name).symlink_to(victim)
    with pytest.raises(UnsafeArchiveError, match="names taken"):
        extract_returned(io.BytesIO(ht.regular("0", b"new") + ht.END), {0: out / "f"}, [out])
    assert victim.read_bytes() == b"precious" and not os.path.lexists(out / "f")
    monkeypatch.undo()
    old = os.umask(0o027)
    try:
        extract_returned(io.BytesIO(ht.regular("0", b"new") + ht.END), {0: out / "g"}, [out])
    finally:
        os.umask(old)
    assert (out / "g").read_bytes() == b"new" and oct((out / "g").stat().st_mode & 0o777) == "0o640"


def test_a_full_disk_is_named_with_the_file_and_leaves_no_part(tmp_path, monkeypatch):
    import errno

    out = tmp_path / "out"
    out.mkdir()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.write", full)
    with pytest.raises(Exception) as ei:
        extract_returned(io.BytesIO(ht.regular("0", b"x" * 5000) + ht.END), {0: out / "f"}, [out])
    assert str(ei.value) == f"no space left on device writing {out / 'f'}"
    assert _files_under(out) == []
