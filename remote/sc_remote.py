#!/usr/bin/env python3
"""Validation and transfers on the remote side (Python 3 standard library only).

    python3 sc_remote.py missing --root R [...] [--manifest DIR]  < "path<TAB>size<TAB>sha256" lines
    python3 sc_remote.py unpack  --root R [...] [--manifest DIR]  < tar stream
    python3 sc_remote.py pack    --root R [...]             < paths, one a line  > tar stream

See docs/remote-protocol.md ("sc_remote.py"). Every path must lie under one of the roots
after resolving '..' and symlinks; anything else is refused with exit 3. Tar streams are
processed member by member (tarfile stream modes), so large transfers never sit in memory.

Exit codes: 0 done; 3 refusal, malformed input or checksum/size mismatch; 2 an operating
system error (disk full, permission denied, broken pipe...).
"""

import argparse
import collections
import errno
import functools
import hashlib
import json
import os
import re
import stat
import sys
import tarfile
import zlib

SHA_HEADER = "SCBUNDLE.sha256"
_PID = os.getpid()
CHUNK = 1 << 20
EXIT_REFUSED = 3
EXIT_OS = 2


class Refused(Exception):
    """A path, member or stream the contract refuses (exit 3)."""


# ---------------------------------------------------------------------------------------
# Root confinement


def real_roots(roots) -> "list[str]":
    return list(_real_roots(tuple(roots)))


@functools.lru_cache(maxsize=16)
def _real_roots(roots) -> "tuple[str, ...]":
    # the roots are fixed for the life of one tool process: resolve them once
    return tuple(os.path.realpath(r) for r in roots)


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def within_roots(path, roots) -> bool:
    """True if the absolute `path` lies under one of `roots` once '..' and symlinks are
    resolved: the real path of its parent directory joined with its last component, and
    (when it is itself a symlink) the real path of its target, must both be inside.
    """
    if not isinstance(path, str) or not path or "\0" in path or not os.path.isabs(path):
        return False
    rroots = real_roots(roots)
    stripped = path.rstrip("/") or "/"
    parent, base = os.path.split(stripped)
    if base in ("", ".", ".."):
        candidate = os.path.realpath(stripped)
    else:
        candidate = os.path.join(os.path.realpath(parent), base)
    resolved = os.path.realpath(candidate)
    return any(_inside(candidate, r) and _inside(resolved, r) for r in rroots)


class RootCheck:
    """within_roots() for many paths in few directories (missing's 40,000 inputs in a few
    hundred): each parent directory's real path is resolved once per process, and a path's
    own last component is resolved only when it is a symbolic link. The same answer as
    within_roots(); only for checks that read (a directory swapped for a link meanwhile is
    no more than a swap after the check), never for unpack's writes."""

    def __init__(self, roots):
        self.roots = real_roots(roots)
        self.prefixes = tuple(r.rstrip("/") + "/" for r in self.roots)
        self.parents = {}

    def _inside(self, path: str) -> bool:
        return path in self.roots or path.startswith(self.prefixes)

    def __call__(self, path) -> bool:
        if not isinstance(path, str) or not path or "\0" in path or not os.path.isabs(path):
            return False
        parent, base = os.path.split(path.rstrip("/") or "/")
        if base in ("", ".", ".."):
            return within_roots(path, self.roots)
        real_parent = self.parents.get(parent)
        if real_parent is None:
            real_parent = self.parents[parent] = os.path.realpath(parent)
        candidate = os.path.join(real_parent, base)
        if not self._inside(candidate):
            return False
        try:
            link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:
            link = False
        if not link:
            return True
        resolved = os.path.realpath(candidate)  # both inside one and the same root
        return any(_inside(candidate, r) and _inside(resolved, r) for r in self.roots)


def check_path(path, roots) -> None:
    if not within_roots(path, roots):
        raise Refused("path %r is not under any --root (%s)"
                      % (path, ", ".join(roots)))


# ---------------------------------------------------------------------------------------
# Input helpers


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def read_lines(stream) -> "list[str]":
    """stdin as lines split on '\\n' only (a path may hold any other character)."""
    lines = _decode(stream.read()).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------------------------------
# missing: which wanted inputs the site lacks, by content


_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def parse_missing_input(lines, roots) -> "list[tuple[str, int, str, str]]":
    """(path, size, sha256, line) of each 'remote_path<TAB>size<TAB>sha256' line."""
    out = []
    inside = RootCheck(roots)
    for n, line in enumerate(lines):
        if line == "":
            continue
        parts = line.rsplit("\t", 2)
        if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit() \
                or not _SHA256.match(parts[2]):
            raise Refused("input line %d is not 'remote_path<TAB>size<TAB>sha256' (64 lower-case "
                          "hex digits): %r" % (n + 1, line))
        path, size, digest = parts
        if not inside(path):
            raise Refused("input line %d: path %r is not under any --root (%s)"
                          % (n + 1, path, ", ".join(roots)))
        out.append((path, int(size), digest, line))
    return out


def stat_key(st) -> bytes:
    """What identifies a file's present state, as the manifest writes it: size and mtime
    (which its owner can set back) with ctime, inode and device (which no user can set: any
    write, chmod, rename or replacement changes them). b'size TAB mtime_ns TAB ctime_ns TAB
    ino TAB dev'."""
    return b"%d\t%d\t%d\t%d\t%d" % (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def hash_file(path: str):
    """(sha256, stat key) of the regular file at `path`, or None when it is not a regular
    file or changed while it was read (its key before and after differ)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return None
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            h.update(chunk)
        key = stat_key(before)
        if stat_key(os.fstat(fd)) != key:
            return None
        return h.hexdigest(), key, before.st_size
    finally:
        os.close(fd)


def _hash_all(entries):
    """hash_file over the entries' paths (files of 1 MiB and more by a few threads: hashlib
    releases the GIL on large buffers; for small ones threads only cost); None for a file
    that vanished or could not be read."""
    def one(path):
        try:
            return hash_file(path)
        except OSError:
            return None
    big = [e[0] for e in entries if e[1] >= 1 << 20]
    got = {}
    if len(big) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as pool:
            got = dict(zip(big, pool.map(one, big)))
    return [got[e[0]] if e[0] in got else one(e[0]) for e in entries]


def find_missing(entries, manifest):
    """The entries whose file on the site is absent, of another size, or of other content.

    A file whose stat key and wanted digest match a manifest entry is present without being
    read; any other file of the right size is hashed here (and the result recorded, so the
    next call answers from stat alone). Returns (missing entries, counts)."""
    known = manifest.lookup([e[0] for e in entries]) if manifest is not None else {}
    missing, to_hash = [], []
    current = {}  # path -> its stat key now (None: absent or not a regular file)
    by_manifest = 0
    regular, os_stat = stat.S_ISREG, os.stat
    for entry in entries:
        path, size, digest, _ = entry
        try:
            st = os_stat(path)
        except OSError:
            st = None
        if st is None or not regular(st.st_mode):
            current[path] = None
            missing.append(entry)
            continue
        key = current[path] = b"%d\t%d\t%d\t%d\t%d" % (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)  # stat_key(st)
        if st.st_size != size:
            missing.append(entry)
            continue
        recorded = known.get((path, key))
        if recorded is None:
            to_hash.append(entry)  # no entry for the file as it is now
            continue
        by_manifest += 1
        if recorded != digest:
            missing.append(entry)  # known to hold other content
    hashed = _hash_all(to_hash)
    nbytes = 0
    for entry, got in zip(to_hash, hashed):
        if got is None:
            current.pop(entry[0], None)
            missing.append(entry)
            continue
        digest, key, size = got
        nbytes += size
        current[entry[0]] = key
        if manifest is not None:
            manifest.record(entry[0], digest, key)
        if digest != entry[2] or size != entry[1]:
            missing.append(entry)
    if manifest is not None:
        manifest.close(current)
    if to_hash and missing:  # back in input order
        order = {id(e): i for i, e in enumerate(entries)}
        missing.sort(key=lambda e: order[id(e)])
    counts = {"checked": len(entries), "by_manifest": by_manifest, "hashed": len(to_hash),
              "hashed_bytes": nbytes, "missing": len(missing)}
    return missing, counts


def cmd_missing(args) -> int:
    roots = real_roots(args.root)
    entries = parse_missing_input(read_lines(sys.stdin.buffer), roots)
    manifest = Manifest.open(args.manifest, roots) if args.manifest else None
    missing, counts = find_missing(entries, manifest)
    out = sys.stdout.buffer
    out.write(b"".join(_encode(e[3]) + b"\n" for e in missing))
    out.flush()
    sys.stderr.write("sc_remote.py missing: %s\n" % json.dumps(counts, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------------
# The manifest: what this account wrote (or hashed) on the site, by file state


class Manifest:
    """A record, under a directory only this account can write, of the content of the files
    the push wrote and missing hashed: for each, its sha256 and its stat key (stat_key()).

    Layout: DIR/<ab>/<40 hex>: one shard a data directory (the hex is the sha256 of the
    directory's path, ab its first two digits), append-only. A line is
    crc32 TAB sha256 TAB size TAB mtime_ns TAB ctime_ns TAB ino TAB dev TAB path, written
    with O_APPEND in whole batches. No lock is needed and nothing here can give a wrong
    answer: an entry is believed only while the file's stat key is still the one recorded,
    and a line cut short (a killed writer), torn or interleaved (a filesystem whose appends
    are not atomic) fails its crc and is skipped. The worst a lost line costs is one re-hash.
    A shard grown to more than twice its live entries is rewritten (temp file + rename);
    an append racing that rename can be lost, with the same cost.
    """

    FLUSH_EVERY = 1000  # records held in memory at most (what a killed writer can lose)

    def __init__(self, root: str):
        self.root = root
        self._pending = {}  # shard path -> [line bytes]
        self._n_pending = 0
        self._read = {}  # shard path -> [(path, key, sha)], the shards lookup() read
        self._shards = {}  # directory -> its shard
        self.problems = []

    @classmethod
    def open(cls, path: str, roots) -> "Manifest":
        check_path(path, roots)
        _private_dir(path, "manifest directory")
        return cls(path)

    def shard(self, path: str) -> str:
        d = path[:path.rfind("/")]
        shard = self._shards.get(d)
        if shard is None:
            key = hashlib.sha256(_encode(d)).hexdigest()[:40]
            shard = self._shards[d] = os.path.join(self.root, key[:2], key)
        return shard

    # -- reading --------------------------------------------------------------------------
    def _entries(self, shard: str):
        """[(path, stat key, sha256)] of the shard's sound lines (crc checked)."""
        try:
            fd = os.open(shard, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return []
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        out = []
        crc32 = zlib.crc32
        for raw in data.split(b"\n")[:-1]:  # the part after the last newline: cut short
            body = raw[9:]
            try:
                if raw[8:9] != b"\t" or int(raw[:8], 16) != crc32(body) or body[64:65] != b"\t":
                    continue
            except ValueError:
                continue
            rest = body[65:]
            parts = rest.split(b"\t", 5)
            if len(parts) == 6:
                out.append((_decode(parts[5]), rest[:len(rest) - len(parts[5]) - 1], body[:64].decode("ascii")))
        return out

    def lookup(self, paths) -> "dict[tuple[str, bytes], str]":
        """{(path, stat key): sha256} of every entry in the shards of `paths`' directories."""
        out = {}
        for shard in sorted({self.shard(d + "/") for d in {p[:p.rfind("/")] for p in paths}}):
            entries = self._read[shard] = self._entries(shard)
            out.update({(path, key): digest for path, key, digest in entries})
        return out

    # -- writing --------------------------------------------------------------------------
    def record(self, path: str, digest: str, key) -> None:
        if "\n" in path or "\0" in path:
            return  # not representable in a line (and never a wanted input)
        self._pending.setdefault(self.shard(path), []).append(_line(digest, key, path))
        self._n_pending += 1
        if self._n_pending >= self.FLUSH_EVERY:
            self.flush()

    def record_written(self, path: str, digest: str, dev_ino) -> None:
        """Record a file unpack has just renamed into place, if `path` still names the inode
        it wrote (`dev_ino`); its stat key is taken after the rename (which sets ctime)."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == tuple(dev_ino) and stat.S_ISREG(st.st_mode):
            self.record(path, digest, stat_key(st))

    def _write(self, shard: str, data: bytes, flags: int) -> None:
        try:
            os.mkdir(os.path.dirname(shard), 0o700)
        except FileExistsError:
            pass
        fd = os.open(shard, os.O_WRONLY | os.O_CREAT | flags | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Append the pending lines, one write a shard. A failure is reported, not raised:
        the files themselves are in place, only their next check costs a re-hash."""
        pending, self._pending, self._n_pending = self._pending, {}, 0
        for shard, lines in sorted(pending.items()):
            try:  # the leading newline ends a line a killed writer left cut short
                self._write(shard, b"\n" + b"".join(lines), os.O_APPEND)
            except OSError as e:
                self.problems.append("manifest %s not written: %s" % (shard, e))

    def close(self, current=None) -> None:
        """Flush; first rewrite the shards lookup() read that are mostly dead entries.
        `current`: {path: stat key, or None when absent} as the caller just saw it."""
        current = current or {}
        for shard, entries in sorted(self._read.items()):
            if len(entries) <= 2 * len({e[0] for e in entries}) + 16:
                continue
            live = {}
            for path, key, digest in entries:
                live.setdefault(path, {})[key] = digest
            keep = []
            for path, keys in live.items():
                if path in current:
                    now = current[path]
                    chosen = [now] if now in keys else []
                else:  # not looked at: keep its newest state(s), by ctime
                    newest = max(int(k.split(b"\t")[2]) for k in keys)
                    chosen = [k for k in keys if int(k.split(b"\t")[2]) == newest]
                keep += [_line(keys[key], key, path) for key in chosen]
            keep += self._pending.pop(shard, [])
            tmp = "%s.tmp.%d" % (shard, _PID)
            try:
                self._write(tmp, b"".join(keep), os.O_EXCL)
                os.replace(tmp, shard)
            except OSError as e:
                self.problems.append("manifest %s not compacted: %s" % (shard, e))
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._read = {}
        self.flush()
        for problem in self.problems:
            sys.stderr.write("sc_remote.py: warning: %s\n" % problem)
        self.problems = []


def _line(digest: str, key: bytes, path: str) -> bytes:
    """A manifest line: crc32 TAB sha256 TAB stat key TAB path, the crc of what follows it."""
    body = b"%s\t%s\t%s" % (digest.encode("ascii"), key, _encode(path))
    return b"%08x\t%s\n" % (zlib.crc32(body), body)


def _private_dir(path: str, what: str) -> None:
    """Create `path` (mode 0700) or check it: a real directory (not a symbolic link), owned
    by this account and writable by nobody else; anything else is refused (exit 3)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise Refused("%s %s is not a directory (a symbolic link or a file): remove it" % (what, path))
    if st.st_uid != os.geteuid():
        raise Refused("%s %s belongs to uid %d, not this account (uid %d): remove it, it must be "
                      "this account's own" % (what, path, st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        raise Refused("%s %s is writable by group or others (mode %04o): chmod 700 it"
                      % (what, path, stat.S_IMODE(st.st_mode)))


# ---------------------------------------------------------------------------------------
# a lean reader of the tar streams unpack accepts (ustar + pax headers; regular files and
# directories only, everything else refused by member_path). Python's tarfile spends ~100 us
# a member on generality; this spends a fraction, which is most of a 10,000-file push.


class StreamError(tarfile.TarError):
    """A tar stream that is malformed or cut short."""


_TYPES = {b"0": tarfile.REGTYPE, b"\0": tarfile.AREGTYPE, b"5": tarfile.DIRTYPE, b"1": tarfile.LNKTYPE,
          b"2": tarfile.SYMTYPE, b"3": tarfile.CHRTYPE, b"4": tarfile.BLKTYPE, b"6": tarfile.FIFOTYPE,
          b"7": tarfile.CONTTYPE}


class _Member(tarfile.TarInfo):
    """A TarInfo (isreg(), isdir(), ... as usual) filled in by TarStream."""


_new_member = tarfile.TarInfo.__new__


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:
        raise StreamError("%s in base-256 is not accepted" % what)
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise StreamError("bad %s field %r" % (what, field))


class TarStream:
    """Iterate a tar stream's members; extractfile() reads the current member's data."""

    def __init__(self, f):
        self.f = f
        self._left = 0  # data bytes of the current member not yet read
        self._pad = 0

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        while len(data) < n:
            more = self.f.read(n - len(data))
            if not more:
                raise StreamError("the stream ends in the middle of a member")
            data += more
        return data

    def _skip_rest(self) -> None:
        while self._left:
            chunk = self._read(min(self._left, CHUNK))
            self._left -= len(chunk)
        if self._pad:
            self._read(self._pad)
            self._pad = 0

    def __iter__(self):
        pax = {}
        while True:
            self._skip_rest()
            head = self.f.read(512)
            if len(head) < 512:
                if not head and not pax:
                    return  # no end-of-archive blocks: tolerated, as tarfile does
                raise StreamError("the stream ends in the middle of a header")
            if head == bytes(512):
                return
            want = _octal(head[148:156], "checksum")
            if want != sum(head) - sum(head[148:156]) + 256:
                raise StreamError("header checksum mismatch")
            flag = head[156:157]
            size = _octal(head[124:136], "size")
            if flag in (b"x", b"g"):
                data = self._read(size)
                self._read(-size % 512)
                if flag == b"x":
                    pax.update(_pax_records(data))
                continue
            if flag not in _TYPES:
                raise StreamError("unsupported tar member type %r" % flag)
            name = head[0:100].split(b"\0", 1)[0]
            if head[257:265] == b"ustar\x0000" and head[345]:
                name = head[345:500].split(b"\0", 1)[0] + b"/" + name
            m = _new_member(_Member)  # TarInfo.__init__'s defaults are all overwritten here
            m.name = pax.get("path") or name.decode("utf-8", "surrogateescape")
            m.type = _TYPES[flag]
            m.size = int(pax["size"]) if "size" in pax else size
            m.mode = _octal(head[100:108], "mode")
            m.linkname = pax.get("linkpath") or head[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            m.pax_headers = pax
            pax = {}
            if not m.isreg():
                m.size = 0  # only regular files carry data
            self._left = m.size if m.isreg() else 0
            self._pad = -self._left % 512
            yield m

    def extractfile(self, member):
        return _MemberData(self)


class _MemberData:
    """The current member's data (one class, not one made per member: that cost ~40 us each)."""

    __slots__ = ("stream",)

    def __init__(self, stream):
        self.stream = stream

    def read(self, n=-1):
        stream = self.stream
        if stream._left == 0:
            return b""
        n = stream._left if n is None or n < 0 else min(n, stream._left)
        data = stream._read(n)
        stream._left -= len(data)
        return data


def _pax_records(data: bytes) -> dict:
    out = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            raise StreamError("bad pax record")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise StreamError("bad pax record length")
        rec = data[sp + 1:pos + length]
        if length <= 0 or not rec.endswith(b"\n") or b"=" not in rec:
            raise StreamError("bad pax record")
        key, _, value = rec[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


# ---------------------------------------------------------------------------------------
# unpack
#
# Every directory is reached by descriptor: from a root's own descriptor, one component at a
# time, never following a link (O_NOFOLLOW), and each file is created (O_EXCL|O_NOFOLLOW) and
# renamed relative to its directory's descriptor. The descriptors are cached, so a co-user who
# swaps a directory for a symbolic link while a stream is still arriving changes nothing: the
# writes go on into the directory that was checked, whatever its old name points at now. A
# link met on a first walk is resolved once, and only to a directory inside the roots, which is
# then walked the same way (so a link that changes meanwhile still cannot lead out).

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # O_NOFOLLOW met a link (EMLINK: BSD)


def _fd_cap() -> int:
    """How many directory descriptors to keep open: well within the process's limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 4096
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(16, min(1024, soft // 2 - 16))


def _under(path: str, prefix: str):
    """The components of `path` below `prefix` ([] for prefix itself), or None."""
    if path == prefix:
        return []
    if prefix == "/":
        return path[1:].split("/")
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix) + 1:].split("/")
    return None


class Confined:
    """The directories under the roots, by descriptor (see above). One per unpack."""

    def __init__(self, roots):
        self._roots = []  # (prefix, real, is_real): each root as given and as resolved, deepest first
        for given in roots:
            real = os.path.realpath(given)
            for prefix in sorted({os.path.normpath(given), real}):
                self._roots.append((prefix, real, prefix == real))
        self._roots.sort(key=lambda r: -len(r[0]))
        self._root_fds = {}  # real root -> descriptor, opened when first needed
        self._names = ", ".join(roots)
        self._fds = collections.OrderedDict()  # absolute directory path -> its own descriptor
        self._cap = _fd_cap()

    def close(self) -> None:
        for fd in list(self._fds.values()) + list(self._root_fds.values()):
            os.close(fd)
        self._fds.clear()
        self._root_fds.clear()

    def _root_fd(self, real: str) -> int:
        fd = self._root_fds.get(real)
        if fd is None:
            # a root itself is the operator's configuration (made if absent, as unpack always
            # did), opened once, as resolved at start
            os.makedirs(real, exist_ok=True)
            fd = self._root_fds[real] = os.open(real, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        return fd

    def _root_of(self, path: str, real_only: bool = False):
        for prefix, real, is_real in self._roots:
            if is_real or not real_only:
                parts = _under(path, prefix)
                if parts is not None:
                    return prefix, self._root_fd(real), parts
        return None

    def dir_fd(self, path: str) -> int:
        """The descriptor of directory `path` (absolute, normalised), made if absent."""
        fd = self._fds.get(path)
        if fd is not None:
            self._fds.move_to_end(path)
            return fd
        found = self._root_of(path)
        if found is not None:
            return self._walk(found, resolve=True)  # cached under `path` by the walk
        # not under a root by name: perhaps a root spelled through a link
        real = os.path.realpath(path)
        found = self._root_of(real, real_only=True)
        if found is None:
            raise Refused("%r is not under any --root (%s)" % (path, self._names))
        fd = os.dup(self._walk(found, resolve=False))
        self._keep(path, fd)
        return fd

    def _keep(self, path: str, fd: int) -> None:
        self._fds[path] = fd
        while len(self._fds) > self._cap:  # the newest (the one being returned) stays
            os.close(self._fds.popitem(last=False)[1])

    def _walk(self, found, resolve: bool) -> int:
        prefix, fd, parts = found
        cur = prefix.rstrip("/")
        opened = []  # (path, fd) opened here: cached once the walk is done
        try:
            for part in parts:
                if part in ("", ".", ".."):
                    raise Refused("%r: bad path component %r" % (prefix + "/" + "/".join(parts), part))
                cur = cur + "/" + part
                cached = self._fds.get(cur)
                if cached is not None:
                    fd = cached
                    continue
                fd = self._child(fd, part, cur, resolve)
                opened.append((cur, fd))
        except BaseException:
            for _, d in opened:
                os.close(d)
            raise
        for p, d in opened:
            self._keep(p, d)
        return fd

    def _child(self, parent: int, name: str, path: str, resolve: bool) -> int:
        for attempt in (1, 2):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if attempt == 2:
                    raise Refused("directory %r vanished as it was made" % path)
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)
                except FileExistsError:
                    pass  # made meanwhile (another stream): opened like any other
            except OSError as e:
                if e.errno not in _LINK_ERRNOS:
                    raise
                return self._through_link(parent, name, path, resolve)
        raise AssertionError("unreachable")

    def _through_link(self, parent: int, name: str, path: str, resolve: bool) -> int:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise Refused("%r vanished as it was opened" % path)
        if not stat.S_ISLNK(st.st_mode):
            raise Refused("%r is not a directory" % path)
        real = os.path.realpath(path)
        found = self._root_of(real, real_only=True) if resolve else None
        if found is None:
            raise Refused("%r is a symbolic link leading outside the roots (to %r)" % (path, real))
        return os.dup(self._walk(found, resolve=False))  # the caller caches it under the link's name


def member_path(member) -> str:
    """The absolute destination of a tar member (not yet confined: see Confined), or Refused."""
    name = member.name
    if not name or "\0" in name:
        raise Refused("tar member with an empty or invalid name")
    if name.startswith("/"):
        raise Refused("tar member %r has an absolute name (the leading '/' must be "
                      "removed)" % name)
    if ".." in name.split("/"):
        raise Refused("tar member %r has a '..' component" % name)
    path = os.path.normpath("/" + name)
    if member.isdir():
        pass
    elif member.isreg():
        pass
    elif member.issym():
        raise Refused("tar member %r is a symbolic link (to %r)" % (name, member.linkname))
    elif member.islnk():
        raise Refused("tar member %r is a hard link (to %r)" % (name, member.linkname))
    elif member.ischr() or member.isblk():
        raise Refused("tar member %r is a device" % name)
    elif member.isfifo():
        raise Refused("tar member %r is a fifo" % name)
    else:
        raise Refused("tar member %r has unsupported type %r" % (name, member.type))
    if path == "/":
        raise Refused("tar member %r is the root directory" % name)
    return path


def _open_part(part: str, mode: int, dir_fd: int) -> int:
    try:
        return os.open(part, _PART_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        # Our own name: a leftover of an earlier process that had the same pid (or anything
        # planted there, a link included: unlinking a name never follows it).
        os.unlink(part, dir_fd=dir_fd)
        return os.open(part, _PART_FLAGS, mode, dir_fd=dir_fd)


def unpack_file(tf, member, path, confined, fsync=False, manifest=None) -> int:
    """Write one regular member through <path>.part.<pid> in its directory (by descriptor)
    and rename it into place there; returns its size. With a `manifest`, what was written
    (its digest, and its stat key once in place) is recorded."""
    parent, base = os.path.split(path)
    dfd = confined.dir_fd(parent)
    part = "%s.part.%d" % (base, _PID)
    expected = member.pax_headers.get(SHA_HEADER)
    mode = (member.mode & 0o755) | 0o600
    fd = _open_part(part, mode, dfd)
    done = False
    try:
        h = hashlib.sha256()
        n = 0
        src = tf.extractfile(member)
        try:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                view = memoryview(chunk)
                while view:  # raw writes: no buffered-file set-up per member
                    view = view[os.write(fd, view):]
                n += len(chunk)
            if fsync:
                os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        if n != member.size:
            raise Refused("tar member %r: got %d bytes, header says %d"
                          % (member.name, n, member.size))
        if expected is not None and h.hexdigest() != expected.strip().lower():
            raise Refused("tar member %r: sha256 mismatch (header %s, data %s)"
                          % (member.name, expected, h.hexdigest()))
        try:
            # a rename replaces a link at the final name; it never writes through one
            os.replace(part, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        except IsADirectoryError:
            raise Refused("tar member %r: %s is a directory" % (member.name, path))
        done = True
        if manifest is not None:
            try:  # by the directory written into: the inode renamed in, not whatever the name now is
                st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == (written.st_dev, written.st_ino) and stat.S_ISREG(st.st_mode):
                manifest.record(path, h.hexdigest(), stat_key(st))
    finally:
        if not done:
            try:
                os.unlink(part, dir_fd=dfd)
            except OSError:
                pass
    return n


def cmd_unpack(args) -> int:
    manifest = Manifest.open(args.manifest, real_roots(args.root)) if args.manifest else None
    try:
        return _unpack_stream(args, manifest)
    finally:
        if manifest is not None:
            manifest.close()  # what was written before a refusal or error is recorded too


def _unpack_stream(args, manifest) -> int:
    stdin = sys.stdin.buffer
    files = total = 0
    peek = getattr(stdin, "peek", None)
    if peek is not None and not peek(1):
        print(json.dumps({"files": 0, "bytes": 0}))  # an empty stream carries nothing
        return 0
    confined = Confined(args.root)
    try:
        tf = TarStream(stdin)
        members = iter(tf)
        while True:
            try:
                member = next(members)
            except StopIteration:
                break
            except tarfile.TarError as e:
                raise Refused("bad tar stream after %d files: %s" % (files, e))
            path = member_path(member)
            if member.isdir():
                confined.dir_fd(path)
                continue
            try:
                total += unpack_file(tf, member, path, confined, fsync=args.fsync, manifest=manifest)
            except tarfile.TarError as e:
                raise Refused("tar member %r is cut short: %s" % (member.name, e))
            files += 1
    finally:
        confined.close()
    print(json.dumps({"files": files, "bytes": total}))
    return 0


# ---------------------------------------------------------------------------------------
# pack


class _HashingReader:
    """A file wrapper that hashes what tarfile reads through it."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n=-1):
        data = self.f.read(n)
        self.h.update(data)
        return data


def cmd_pack(args) -> int:
    roots = real_roots(args.root)
    paths = read_lines(sys.stdin.buffer)
    out = sys.stdout.buffer
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8")
    with tf:
        for i, path in enumerate(paths):
            if not within_roots(path, roots):
                # a path that resolves outside the roots (a product swapped for a symlink, say)
                # is not sent, like an absent file: the local side reports that product missing
                sys.stderr.write("sc_remote.py pack: refused %r: not under any --root\n" % path)
                continue
            try:
                # O_NONBLOCK: opening a fifo must not hang (it is skipped just below)
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                sys.stderr.write("sc_remote.py pack: skipping %r: %s\n" % (path, e))
                continue
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                continue  # a directory, fifo, device...: not a file to bring back
            with os.fdopen(fd, "rb") as f:
                h = hashlib.sha256()
                size = 0
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    size += len(chunk)
                f.seek(0)
                info = tarfile.TarInfo(str(i))
                info.size = size
                info.mtime = int(st.st_mtime)
                info.mode = 0o644
                info.type = tarfile.REGTYPE
                info.pax_headers = {SHA_HEADER: h.hexdigest()}
                reader = _HashingReader(f)
                tf.addfile(info, reader)
                if reader.h.hexdigest() != h.hexdigest():
                    raise OSError("%r changed while it was being packed" % path)
    out.flush()
    return 0


# ---------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(EXIT_REFUSED)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sc_remote.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", metavar="{missing,unpack,pack}", parser_class=_Parser)
    sub.required = True
    for name, func, text in (
        ("missing", cmd_missing, "print the 'path<TAB>size<TAB>sha256' lines whose file is "
                                 "absent or has another size or content"),
        ("unpack", cmd_unpack, "write a tar stream from stdin under the roots"),
        ("pack", cmd_pack, "write the files named on stdin as a tar stream"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--root", action="append", required=True, metavar="DIR",
                        help="a directory every path must lie under (repeatable)")
        if name in ("missing", "unpack"):
            sp.add_argument("--manifest", metavar="DIR", default=None,
                            help="this account's record of what the site holds (created 0700; "
                                 "refused unless it is this account's own): unpack records what "
                                 "it writes, missing answers from it and records what it hashes")
        if name == "unpack":
            sp.add_argument("--fsync", action="store_true",
                            help="fsync each file before renaming it into place (power-loss "
                                 "durability; without it a killed transfer still never leaves "
                                 "a partial file under its final name)")
        sp.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Refused as e:
        sys.stderr.write("sc_remote.py %s: refused: %s\n" % (args.cmd, e))
        return EXIT_REFUSED
    except BrokenPipeError:
        try:  # nothing more can be written; keep the interpreter's final flush quiet
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        sys.stderr.write("sc_remote.py %s: broken pipe\n" % args.cmd)
        return EXIT_OS
    except OSError as e:
        sys.stderr.write("sc_remote.py %s: %s\n" % (args.cmd, e))
        return EXIT_OS


if __name__ == "__main__":
    sys.exit(main())
