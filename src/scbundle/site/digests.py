"""The local side's sha256 of each input, cached by file state so an unchanged file is hashed once.

The cache is one small SQLite file per host and workdir (stdlib sqlite3, not the main
database): ``<workdir>/.cache/digests.sqlite3``, WAL, mode 0600 in a 0700 directory, safe with
several processes at once. A row is (st_dev, st_ino) -> (st_size, st_mtime_ns, sha256: 32 bytes) and is
believed only while the file's size and mtime_ns are still the ones recorded.

The trade-off (the one make, rsync and git make): content changed in place with its size and
mtime_ns restored is not seen. Only the file's owner (or root) can set mtime back
(utimensat with explicit times), so no other local user can hide a change this way; anyone
else's write leaves a new mtime. A file modified within RACY_NS of being hashed is hashed
again next time instead of being cached (a second write in the same timestamp tick could
otherwise keep its mtime). A cache that cannot be opened, is not a database or has another
shape is moved aside and rebuilt; one that cannot be rebuilt is not used (every file is hashed).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CACHE_NAME = "digests.sqlite3"
SCHEMA_VERSION = 1
RACY_NS = 2_000_000_000  # a file younger than this when hashed is not cached
_CHUNK = 1 << 20
THREADED_SIZE = 1 << 20  # files from this size are hashed by a few threads at once
_LOOKUP_CHUNK = 900  # parameters a query (SQLite's old limit is 999)


class FileDigest(NamedTuple):  # a NamedTuple: tens of thousands are made per exec
    path: str
    size: int
    sha256: str


@dataclass
class DigestStats:
    """What one digests() call did: files found in the cache, files hashed, and their cost."""

    cached: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    hash_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def cache_path(workdir: str | Path) -> Path:
    return Path(workdir) / ".cache" / CACHE_NAME


def sha256_of(path: str) -> tuple[str, os.stat_result]:
    """(sha256, stat) of the regular file at ``path``; OSError if it is not one, or if it
    changed while it was read (its stat before and after differ)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(f"{path} is not a regular file")
        h = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _key(after) != _key(before):
        raise OSError(f"{path} changed while it was being hashed")
    return h.hexdigest(), before


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"{path} is not a directory of this user's")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)  # a real directory of ours (lstat above): chmod follows nothing


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(f"{path} is not a file of this user's")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class DigestCache:
    """sha256 of local files by (st_dev, st_ino, st_size, st_mtime_ns). ``path=None``: no
    cache, every file is hashed."""

    def __init__(self, path: Path | None, *, threads: int = 4) -> None:
        self.path = path
        self.threads = threads
        self._db: sqlite3.Connection | None = None
        self.problems: list[str] = []
        if path is not None:
            self._db = self._open()

    @classmethod
    def for_workdir(cls, workdir: str | Path) -> DigestCache:
        return cls(cache_path(workdir))

    # -- the cache file -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        _private_file(self.path)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # not made meanwhile by another process
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS digest (dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,"
                        " mtime_ns INTEGER NOT NULL, sha256 BLOB NOT NULL, hashed_at REAL NOT NULL, PRIMARY KEY (dev, ino)) WITHOUT ROWID"
                    )
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
            db.execute("SELECT dev, ino, size, mtime_ns, sha256, hashed_at FROM digest LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection | None:
        assert self.path is not None
        try:
            _private_dir(self.path.parent)
        except OSError as err:  # not ours to repair: go without
            self.problems.append(f"digest cache directory {self.path.parent} unusable ({err}); every input is hashed")
            return None
        try:
            return self._connect()
        except (sqlite3.Error, OSError) as err:
            self.problems.append(f"digest cache {self.path} unusable ({err}); rebuilt")
        self._discard()
        try:
            return self._connect()
        except (sqlite3.Error, OSError) as err:
            self.problems.append(f"digest cache {self.path} cannot be rebuilt ({err}); every input is hashed")
            return None

    def _discard(self) -> None:
        """Move a bad cache aside (with its WAL and shared-memory files): never trusted again."""
        assert self.path is not None
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{self.path}{suffix}")
            try:
                if suffix:
                    p.unlink()
                else:  # the last bad one kept beside, for a person to look at (rename follows no link)
                    os.replace(p, p.with_name(f"{p.name}.bad"))
            except FileNotFoundError:
                pass
            except OSError:
                try:
                    p.unlink()
                except OSError:
                    pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> DigestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lookup(self, keys: dict[tuple[int, int], tuple[int, int]]) -> dict[tuple[int, int], str]:
        """sha256 of the (dev, ino) whose row still has the file's (size, mtime_ns)."""
        if self._db is None or not keys:
            return {}
        out: dict[tuple[int, int], str] = {}
        try:
            if self._db.execute("SELECT count(*) FROM digest").fetchone()[0] <= 4 * len(keys):
                # most of the table is wanted: one scan beats thousands of bound lookups
                for dev, ino, size, mtime_ns, sha in self._db.execute("SELECT dev, ino, size, mtime_ns, sha256 FROM digest"):
                    if keys.get((dev, ino)) == (size, mtime_ns) and type(sha) is bytes and len(sha) == 32:
                        out[(dev, ino)] = sha.hex()
                return out
            by_dev: dict[int, list[int]] = {}
            for dev, ino in keys:
                by_dev.setdefault(dev, []).append(ino)
            for dev, inos in by_dev.items():
                for start in range(0, len(inos), _LOOKUP_CHUNK):
                    chunk = inos[start : start + _LOOKUP_CHUNK]
                    q = f"SELECT ino, size, mtime_ns, sha256 FROM digest WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})"
                    for ino, size, mtime_ns, sha in self._db.execute(q, (dev, *chunk)):
                        if keys.get((dev, ino)) == (size, mtime_ns) and type(sha) is bytes and len(sha) == 32:
                            out[(dev, ino)] = sha.hex()
        except sqlite3.Error as err:  # corrupt under us: nothing it said is used
            self.problems.append(f"digest cache {self.path} unreadable ({err}); rebuilt")
            self.close()
            self._discard()
            self._db = self._open()
            return {}
        return out

    def _store(self, rows: list[tuple[int, int, int, int, str, float]]) -> None:
        if self._db is None or not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO digest (dev, ino, size, mtime_ns, sha256, hashed_at) VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self.problems.append(f"digest cache {self.path} not updated ({err})")
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # -- digests --------------------------------------------------------------------------
    def digests(self, paths: Iterable[str]) -> tuple[dict[str, FileDigest], DigestStats]:
        """The size and sha256 of each file now; OSError naming a file that is gone or not a
        regular file. Files whose state is in the cache are not read."""
        stats = DigestStats()
        wanted = list(dict.fromkeys(paths))
        sts = list(map(os.stat, wanted))
        regular = stat.S_ISREG
        for p, st in zip(wanted, sts):
            if not regular(st.st_mode):
                raise OSError(f"{p} is not a regular file")
        keys = {(st.st_dev, st.st_ino): (st.st_size, st.st_mtime_ns) for st in sts}
        known = self._lookup(keys)
        out: dict[str, FileDigest] = {}
        todo: list[str] = []
        for p, st in zip(wanted, sts):
            sha = known.get((st.st_dev, st.st_ino))
            if sha is None:
                todo.append(p)
            else:
                out[p] = FileDigest(p, st.st_size, sha)
        stats.cached = len(out)
        t0 = time.perf_counter()
        size_of = {p: st.st_size for p, st in zip(wanted, sts)}
        big = [p for p in todo if size_of[p] >= THREADED_SIZE]
        got = {}
        if len(big) > 1 and self.threads > 1:  # hashlib and reads release the GIL on large files
            with ThreadPoolExecutor(self.threads) as pool:
                got = dict(zip(big, pool.map(sha256_of, big), strict=True))
        hashed = [got.get(p) or sha256_of(p) for p in todo]  # small files: threads only cost here
        stats.hash_seconds = time.perf_counter() - t0
        now_ns = time.time_ns()
        rows = []
        for p, (sha, st) in zip(todo, hashed, strict=True):
            out[p] = FileDigest(p, st.st_size, sha)
            stats.hashed += 1
            stats.hashed_bytes += st.st_size
            if now_ns - st.st_mtime_ns > RACY_NS:
                rows.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, bytes.fromhex(sha), now_ns / 1e9))
        self._store(rows)
        stats.problems = self.problems[:]
        return out, stats
