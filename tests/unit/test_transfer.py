import io
import os
import tarfile

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


def regular(name, data=b"hello", sha=None):
    info = tarfile.TarInfo(name)
    info.size = len(data)
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
