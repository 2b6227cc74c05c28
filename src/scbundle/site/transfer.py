"""Tar streams, local side: what is pushed (with checksums) and the safe unpacking of what returns.

Pushed members are named by their remote path (leading '/' dropped); the remote unpacker
refuses anything outside the site's roots. Returned members are named by their line number
in the list the local side asked for, so the remote side never chooses a local destination;
anything else in a returned archive is refused and nothing is written outside.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scbundle.core.errors import UnsafeArchiveError

SHA_KEY = "SCBUNDLE.sha256"
_CHUNK = 1 << 20
_SMALL = 64 << 20  # files up to this size are read into memory once


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


_ZERO = bytes(512)
_MAX_OCTAL_SIZE = 8**11 - 1


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _ustar_header(name: bytes, size: int, mode: int, mtime: int, typeflag: bytes) -> bytes:
    h = bytearray(512)
    h[0:100] = name[:99].ljust(100, b"\0")
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % min(size, _MAX_OCTAL_SIZE)
    h[136:148] = b"%011o\0" % max(0, min(mtime, _MAX_OCTAL_SIZE))
    h[148:156] = b"        "
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


class TarWriter:
    """A lean POSIX (pax) tar writer for scbundle's push streams: one pax header per member
    (its path, its sha256, its size when over 8 GiB), then the ustar header and the data.
    Readable by GNU tar, Python's tarfile and remote/sc_remote.py. tarfile's generality
    costs ~100 us a member; this is most of a 10,000-small-file push."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def _member(self, path: str, size: int, mode: int, mtime: int, sha: str, data: bytes | None, f: IO[bytes] | None) -> None:
        name = path.lstrip("/")
        recs = _pax_record("path", name) + _pax_record(SHA_KEY, sha)
        if size > _MAX_OCTAL_SIZE:
            recs += _pax_record("size", str(size))
        parts = [_ustar_header(b"PaxHeader", len(recs), 0o644, mtime, b"x"), recs, _ZERO[: -len(recs) % 512]]
        parts.append(_ustar_header(name.encode("utf-8", "surrogateescape"), size, mode, mtime, b"0"))
        if data is not None:
            parts += [data, _ZERO[: -size % 512]]
            self.out.write(b"".join(parts))
            return
        self.out.write(b"".join(parts))
        assert f is not None
        left = size
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise OSError(f"{path}: file shrank while it was being sent")
            self.out.write(chunk)
            left -= len(chunk)
        self.out.write(_ZERO[: -size % 512])

    def add_bytes(self, path: str, data: bytes, *, mode: int = 0o644, mtime: int | None = None) -> None:
        self._member(path, len(data), mode, int(time.time()) if mtime is None else mtime, hashlib.sha256(data).hexdigest(), data, None)

    def add_file(self, local: str, path: str) -> int:
        with open(local, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size <= _SMALL:  # read once: hash and send the same bytes
                data = f.read()
                self._member(path, len(data), 0o644, int(st.st_mtime), hashlib.sha256(data).hexdigest(), data, None)
                return len(data)
            sha = _sha256_file(local)
            self._member(path, st.st_size, 0o644, int(st.st_mtime), sha, None, f)
            return st.st_size

    def close(self) -> None:
        self.out.write(_ZERO + _ZERO)
        self.out.flush()


def write_push_tar(out: IO[bytes], files: Iterable[tuple[str, str]], *, on_file=None) -> None:
    """Stream (local path, remote path) pairs as a pax tar with a sha256 per member."""
    w = TarWriter(out)
    for local, remote in files:
        n = w.add_file(local, remote)
        if on_file is not None:
            on_file(n)
    w.close()


def write_text_tar(out: IO[bytes], files: Mapping[str, bytes]) -> None:
    """Stream in-memory files (remote path -> bytes), e.g. a bundle's own files."""
    w = TarWriter(out)
    for remote, data in files.items():
        w.add_bytes(remote, data, mode=0o755 if remote.endswith((".sh", "/srun")) else 0o644)
    w.close()


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in (Path(os.path.realpath(x)) for x in roots))


@dataclass
class Received:
    indices: set[int]
    bytes: int


def extract_returned(
    stream: IO[bytes], destinations: Mapping[int, Path], allowed_roots: Iterable[Path]
) -> Received:
    """Unpack a returned tar whose members are named by index into ``destinations``.

    Refuses (UnsafeArchiveError, nothing more written) any member that is not a regular
    file named by one of the expected indices, any destination outside ``allowed_roots``,
    and any checksum mismatch. Each file is written beside its destination and renamed in.
    """
    roots = [Path(os.path.realpath(r)) for r in allowed_roots]
    for index, dest in destinations.items():
        dest = Path(dest)
        if not dest.is_absolute() or ".." in dest.parts or not any(r in dest.parents for r in roots):
            raise UnsafeArchiveError(f"destination {dest} (item {index}) is outside the run's destination; refused")
    got = Received(set(), 0)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name
            if not name.isdigit() or int(name) not in destinations:
                raise UnsafeArchiveError(f"returned archive holds unexpected member {name!r}; refused")
            if not member.isfile():
                raise UnsafeArchiveError(f"returned archive member {name!r} is not a regular file (links are refused)")
            dest = Path(destinations[int(name)])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(dest.parent, roots) or dest.is_symlink():
                raise UnsafeArchiveError(f"destination {dest} resolves outside the run's destination; refused")
            src = tar.extractfile(member)
            assert src is not None
            tmp = dest.with_name(f".{dest.name}.part.{os.getpid()}")
            h = hashlib.sha256()
            try:
                with open(tmp, "wb") as f:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        h.update(chunk)
                        f.write(chunk)
                want = member.pax_headers.get(SHA_KEY)
                if want is not None and want != h.hexdigest():
                    raise UnsafeArchiveError(f"returned file {name} for {dest} fails its checksum; refused")
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()
            got.indices.add(int(name))
            got.bytes += member.size
    return got
