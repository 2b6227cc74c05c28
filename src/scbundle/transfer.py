"""Tar streams, local side: what is pushed (with checksums) and the safe unpacking of what returns.

Pushed members are named by their remote path (leading '/' dropped); the remote unpacker
refuses anything outside the site's roots. Returned members are named by their line number
in the list the local side asked for, so the remote side never chooses a local destination;
anything else in a returned archive is refused and nothing is written outside.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import UnsafeArchiveError

SHA_KEY = "SCBUNDLE.sha256"
_CHUNK = 1 << 20
_SMALL = 64 << 20  # files up to this size are read into memory once


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_push_tar(out: IO[bytes], files: Iterable[tuple[str, str]], *, on_file=None) -> None:
    """Stream (local path, remote path) pairs as a PAX tar with a sha256 per member."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for local, remote in files:
            with open(local, "rb") as f:
                st = os.fstat(f.fileno())
                info = tarfile.TarInfo(remote.lstrip("/"))
                info.size = st.st_size
                info.mtime = int(st.st_mtime)
                info.mode = 0o644
                if st.st_size <= _SMALL:  # read once: hash and send the same bytes
                    data = f.read()
                    info.size = len(data)
                    info.pax_headers = {SHA_KEY: hashlib.sha256(data).hexdigest()}
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.pax_headers = {SHA_KEY: _sha256_file(local)}
                    tar.addfile(info, f)
            if on_file is not None:
                on_file(info.size)


def write_text_tar(out: IO[bytes], files: Mapping[str, bytes]) -> None:
    """Stream in-memory files (remote path -> bytes), e.g. a bundle's own files."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for remote, data in files.items():
            info = tarfile.TarInfo(remote.lstrip("/"))
            info.size = len(data)
            info.mode = 0o755 if remote.endswith((".sh", "/srun")) else 0o644
            info.pax_headers = {SHA_KEY: hashlib.sha256(data).hexdigest()}
            tar.addfile(info, io.BytesIO(data))


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
