"""Hand-made tar streams a compromised site could send back as `sc_remote.py pack` output
(byte by byte, so nothing here depends on the reader under test)."""

from __future__ import annotations

import hashlib
import tracemalloc

BLOCK = 512
SHA_KEY = "SCBUNDLE.sha256"
END = bytes(2 * BLOCK)
POSIX = b"ustar\x0000"
GNU = b"ustar  \x00"


def pad(n: int) -> bytes:
    return bytes(-n % BLOCK)


def header(name: bytes, size: int, flag: bytes, *, magic: bytes = POSIX, extra: dict[int, bytes] | None = None) -> bytes:
    h = bytearray(BLOCK)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[156:157] = flag
    h[257:265] = magic
    for offset, data in (extra or {}).items():
        h[offset : offset + len(data)] = data
    h[148:156] = b"        "
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def pax_header(records: dict[str, str]) -> bytes:
    data = b"".join(pax_record(k, v) for k, v in records.items())
    return header(b"PaxHeader", len(data), b"x") + data + pad(len(data))


def regular(name: str, data: bytes, *, sha: str | None = "auto", more: dict[str, str] | None = None) -> bytes:
    """One member as pack writes it: a pax header with its sha256, then the file."""
    records = dict(more or {})
    if sha == "auto":
        sha = hashlib.sha256(data).hexdigest()
    if sha is not None:
        records[SHA_KEY] = sha
    head = pax_header(records) if records else b""
    return head + header(name.encode(), len(data), b"0") + data + pad(len(data))


def old_gnu_sparse(name: str, realsize: int) -> bytes:
    """A GNU sparse member ('S'): one data byte stored, ``realsize`` bytes claimed."""
    extra = {386: b"%011o\0" % (realsize - 1), 398: b"%011o\0" % 1, 483: b"%011o\0" % realsize}
    return header(name.encode(), 1, b"S", magic=GNU, extra=extra) + b"x" + pad(1)


def pax_sparse(name: str, realsize: int) -> bytes:
    """A pax (GNU 1.0) sparse member: a regular-looking file whose records claim ``realsize``."""
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name,
               "GNU.sparse.realsize": str(realsize)}  # fmt: skip
    sparse_map = b"1\n%d\n1\n" % (realsize - 1)
    data = sparse_map + pad(len(sparse_map)) + b"x"
    return pax_header(records) + header(b"GNUSparseFile.0/" + name.encode(), len(data), b"0") + data + pad(len(data))


def zeros_sha(n: int) -> str:
    h = hashlib.sha256()
    chunk = bytes(1 << 20)
    while n:
        h.update(chunk[: min(n, len(chunk))])
        n -= min(n, len(chunk))
    return h.hexdigest()


def peak_of(fn) -> int:
    """Peak bytes traced (in every thread: a transport's readers too) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
