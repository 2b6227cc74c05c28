"""A strict, bounded reader of the tar streams a site sends back (``sc_remote.py pack``).

What pack writes, and nothing else, is accepted: POSIX ustar headers, each regular file
preceded by one pax header (at most ``PAX_MAX`` bytes) with its ``SCBUNDLE.sha256``, then
the end-of-archive blocks and at most a record's worth of zero padding (tarfile pads its
output to 10240 bytes), then the end of the stream. Refused, before any of its data is
read: a sparse member (old GNU ``S`` or the pax ``GNU.sparse.*`` records: either can claim
a terabyte from a few blocks), any member that is not a regular file, GNU long-name
headers, global pax headers, unknown pax keywords, base-256 numbers, a bad checksum; and
anything after the end of the archive. Memory stays bounded by ``PAX_MAX`` and the
caller's read size, whatever the stream holds.

Standard library only and no scbundle import: the wire format's shared module (which
remote/ will import too) can take this file as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

SHA_KEY = "SCBUNDLE.sha256"
BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads a stream to a multiple of this
PAX_MAX = 4096  # pack's pax header is ~90 bytes
# pax keywords a returned member may carry (pack writes SHA_KEY, and path/size when needed)
PAX_KEYS = frozenset({"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname", SHA_KEY})
_REGULAR = (b"0", b"\0")
_KINDS = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"5": "a directory", b"6": "a fifo", b"7": "a contiguous file", b"S": "a GNU sparse file",
    b"L": "a GNU long-name header", b"K": "a GNU long-link header", b"g": "a global pax header",
    b"D": "a GNU directory dump", b"M": "a GNU multi-volume member", b"V": "a GNU volume header",
}  # fmt: skip


class TarRefused(ValueError):
    """The stream is not one the local side accepts (the reason, naming the member)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    sha256: str | None
    mode: int


def _number(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise TarRefused(f"{what} in base-256 is not accepted")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if text and not all(48 <= c <= 55 for c in text):
        raise TarRefused(f"bad {what} field {field!r}")
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 12)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            raise TarRefused("bad pax record length")
        end = pos + int(digits)
        rec = data[sp + 1 : end]
        if end > len(data) or not rec.endswith(b"\n") or b"=" not in rec:
            raise TarRefused("bad pax record")
        key_b, _, value = rec[:-1].partition(b"=")
        key = key_b.decode("utf-8", "replace")
        if key not in PAX_KEYS:
            kind = "a sparse-file record" if key.startswith("GNU.sparse") else "an unknown pax keyword"
            raise TarRefused(f"{kind} {key[:64]!r}")
        if key in out:
            raise TarRefused(f"pax keyword {key!r} given twice")
        try:
            out[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TarRefused(f"pax value of {key!r} is not UTF-8") from None
        pos = end
    return out


class TarReader:
    """Iterate the members of a returned stream; ``read`` gives the current member's data.

    Each member's data must be read (or is skipped) before the next header is read."""

    def __init__(self, f: IO[bytes], *, pax_max: int = PAX_MAX, trailing_max: int = RECORD) -> None:
        self.f = f
        self.pax_max = pax_max
        self.trailing_max = trailing_max
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0
        self.count = 0  # members so far

    def _exact(self, n: int, where: str) -> bytes:
        data = self.f.read(n)
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:
                raise TarRefused(f"the stream ends in the middle of {where} (cut short)")
            data += more
        return data

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the current member's data (b"" at its end)."""
        if self._left == 0:
            return b""
        data = self._exact(min(n, self._left), f"member {self.count}")
        self._left -= len(data)
        return data

    def _skip(self) -> None:
        while self._left:
            self.read(1 << 20)
        if self._pad:
            self._exact(self._pad, f"member {self.count}")
            self._pad = 0

    def _end(self) -> None:
        """After the first zero block: zeros only, at most ``trailing_max`` bytes, then the end."""
        seen = 0
        while True:
            chunk = self.f.read(min(BLOCK * 4, self.trailing_max + 1 - seen))
            if not chunk:
                return
            seen += len(chunk)
            if chunk.count(0) != len(chunk):
                raise TarRefused("data after the end of the archive")
            if seen > self.trailing_max:
                raise TarRefused(f"more than {self.trailing_max} bytes after the end of the archive")

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] | None = None
        while True:
            self._skip()
            head = self.f.read(BLOCK)
            if len(head) < BLOCK:
                if head:
                    head += self._exact(BLOCK - len(head), "a header")
                else:
                    raise TarRefused(f"the stream ends after {self.count} member(s) without its end-of-archive blocks (cut short)")
            if head == bytes(BLOCK):
                if pax is not None:
                    raise TarRefused("a pax header with no member after it")
                self._end()
                return
            if _number(head[148:156], "checksum") != sum(head[:148]) + 256 + sum(head[156:]):
                raise TarRefused(f"header checksum mismatch after {self.count} member(s)")
            flag = head[156:157]
            name = head[0:100].split(b"\0", 1)[0]
            if flag != b"x" and flag not in _REGULAR:
                kind = _KINDS.get(flag, f"of unknown type {flag!r}")
                text = (pax or {}).get("path") or name.decode("utf-8", "replace")
                raise TarRefused(f"member {text[:64]!r} is {kind}, not a regular file (nothing else is accepted)")
            if head[257:265] != b"ustar\x0000":
                raise TarRefused(f"not a POSIX ustar header after {self.count} member(s)")
            size = _number(head[124:136], "size")
            if flag == b"x":
                if pax is not None:
                    raise TarRefused("two pax headers for one member")
                if size > self.pax_max:
                    raise TarRefused(f"a pax header of {size} bytes (at most {self.pax_max} accepted)")
                pax = _pax(self._exact(size, "a pax header"))
                self._exact(-size % BLOCK, "a pax header")
                continue
            if head[345]:
                name = head[345:500].split(b"\0", 1)[0] + b"/" + name
            pax = pax or {}
            text = pax.get("path") or name.decode("utf-8", "replace")
            if "size" in pax:
                if not pax["size"].isascii() or not pax["size"].isdigit():
                    raise TarRefused(f"member {text[:64]!r}: bad pax size {pax['size'][:32]!r}")
                size = int(pax["size"])
            self.count += 1
            self._left, self._pad = size, -size % BLOCK
            yield Member(name=text, size=size, sha256=pax.get(SHA_KEY), mode=_number(head[100:108], "mode"))
            pax = None
