"""Tar streams, local side: what is pushed (with checksums) and the safe unpacking of what returns.

Pushed members are named by their remote path (leading '/' dropped); the remote unpacker
refuses anything outside the site's roots. Returned members are named by their line number
in the list the local side asked for, so the remote side never chooses a local destination;
anything else in a returned archive is refused and nothing is written outside.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scbundle.core.errors import LocalIOError, UnsafeArchiveError
from scbundle.site.tarstream import SHA_KEY, Member, TarReader, TarRefused

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


_USTAR_TAIL = bytes(100) + b"ustar\x0000" + bytes(512 - 265)  # linkname, magic+version, the rest
_TAIL_SUM = sum(_USTAR_TAIL) + 8 * 32  # + the checksum field counted as spaces


def _ustar_header(name: bytes, size: int, mode: int, mtime: int, typeflag: bytes) -> bytes:
    # built by concatenation and its checksum summed over the 148 variable bytes only: a
    # bytearray filled by slices and summed whole cost ~50 us a header, most of the writer's time
    head = b"%s%07o\0" b"0000000\0" b"0000000\0" b"%011o\0%011o\0" % (
        name[:99].ljust(100, b"\0"), mode, min(size, _MAX_OCTAL_SIZE), max(0, min(mtime, _MAX_OCTAL_SIZE)))
    return b"%s%06o\0 %s%s" % (head, sum(head) + typeflag[0] + _TAIL_SUM, typeflag, _USTAR_TAIL)


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


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path`` resolves (symlinks followed) to one of ``roots`` or below one."""
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in (Path(os.path.realpath(x)) for x in roots))


@dataclass
class Received:
    indices: set[int]
    bytes: int


# what one returned file may hold unless the caller says otherwise (a stage's products:
# Stage.max_product_bytes, [stages.NAME] max_product_bytes)
DEFAULT_MAX_RETURNED_BYTES = 4 << 30
_PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _open_part(dest: Path) -> tuple[Path, int]:
    """A new private file beside ``dest``: O_EXCL|O_NOFOLLOW, mode 0600, under a name no one
    can guess in advance (a planted file or link there is never written through)."""
    for _ in range(3):
        tmp = dest.with_name(f".{dest.name}.part.{os.getpid()}.{secrets.token_hex(6)}")
        try:
            return tmp, os.open(tmp, _PART_FLAGS, 0o600)
        except FileExistsError:
            continue
    raise UnsafeArchiveError(f"cannot create a private temporary file beside {dest}: names taken; refused")


def _receive(reader: TarReader, member: Member, dest: Path) -> None:
    """Write ``member``'s data beside ``dest``, check its checksum, rename it into place."""
    try:
        tmp, fd = _open_part(dest)
    except OSError as err:
        raise LocalIOError.writing(dest, err) from None
    done = False
    try:
        h = hashlib.sha256()
        while chunk := reader.read(_CHUNK):
            h.update(chunk)
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as err:
                raise LocalIOError.writing(dest, err) from None
        if h.hexdigest() != member.sha256:
            raise UnsafeArchiveError(f"returned file {member.name} for {dest} fails its checksum; refused")
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            os.close(fd)
            fd = -1
            os.replace(tmp, dest)
        except OSError as err:
            raise LocalIOError.writing(dest, err) from None
        done = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def extract_returned(
    stream: IO[bytes],
    destinations: Mapping[int, Path],
    allowed_roots: Iterable[Path],
    *,
    max_bytes: int | Mapping[int, int] = DEFAULT_MAX_RETURNED_BYTES,
) -> Received:
    """Unpack a returned tar whose members are named by index into ``destinations``.

    Read with the strict reader (site/tarstream.py): refuses (UnsafeArchiveError, nothing
    more written) a stream that is not what pack writes, any member that is not a regular
    file named by one of the expected indices (once), a member without its checksum, one
    larger than ``max_bytes`` (one cap, or a cap per index) before any of its data is
    written, any destination outside ``allowed_roots``, any checksum mismatch, and data after
    the archive's end. Each file is written privately beside its destination and renamed in;
    a local failure (a full disk) is a LocalIOError naming the file, and leaves no part file.
    """
    roots = [Path(os.path.realpath(r)) for r in allowed_roots]
    for index, dest in destinations.items():
        dest = Path(dest)
        if not dest.is_absolute() or ".." in dest.parts or not any(r in dest.parents for r in roots):
            raise UnsafeArchiveError(f"destination {dest} (item {index}) is outside the run's destination; refused")
    got = Received(set(), 0)
    reader = TarReader(stream)
    try:
        for member in reader:
            name = member.name
            if not (name.isascii() and name.isdigit() and str(int(name)) == name) or int(name) not in destinations:
                raise UnsafeArchiveError(f"returned archive holds unexpected member {name[:64]!r}; refused")
            index = int(name)
            if index in got.indices:
                raise UnsafeArchiveError(f"returned archive holds member {name} twice; refused")
            dest = Path(destinations[index])
            if member.sha256 is None:
                raise UnsafeArchiveError(f"returned file {name} for {dest} carries no {SHA_KEY} checksum; refused")
            cap = max_bytes if isinstance(max_bytes, int) else max_bytes.get(index, DEFAULT_MAX_RETURNED_BYTES)
            if member.size > cap:
                raise UnsafeArchiveError(f"returned file {name} for {dest} is {member.size} bytes, more than the {cap} accepted; refused")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise LocalIOError.writing(dest.parent, err) from None
            if not inside(dest.parent, roots) or dest.is_symlink():
                raise UnsafeArchiveError(f"destination {dest} resolves outside the run's destination; refused")
            _receive(reader, member, dest)
            got.indices.add(index)
            got.bytes += member.size
    except TarRefused as err:
        raise UnsafeArchiveError(f"returned archive refused: {err}") from None
    return got
