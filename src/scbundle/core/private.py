"""Directories and files only the operator can change: the link's control directory (ssh reads
its configs with ``-F`` and finds the master's socket there), the claim locks, the database.

Other local users are not trusted, and /tmp is everyone's. The rules, as OpenSSH applies them
to ~/.ssh (``safe_path`` in misc.c) with the sticky-directory case added:

- every directory on the way (links followed, each link's own directory checked first) is
  owned by you or root and not writable by group or others, unless it is sticky (/tmp): then
  only its entries' owners can rename them, so each entry on the way must be yours or root's;
- the private directory itself is no link, is yours, and is 0700 (created so, whatever the
  umask; tightened with fchmod on the opened directory, never a chmod that follows a link);
- a private file is opened with O_NOFOLLOW and O_CLOEXEC, and used only if it is a regular
  file of yours with no second name (a hard link to another file of yours).

Checked top down, a path that passes stays yours: nobody else can swap anything on it after.
Each refusal is one ``UnsafePathError`` line naming the path and the problem.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from pathlib import Path, PurePosixPath
from typing import Literal

from scbundle.core.errors import UnsafePathError

_MAX_LINKS = 40  # like the kernel's limit on symbolic links in one lookup


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _shared(st: os.stat_result) -> bool:
    return bool(st.st_mode & 0o022)


def _check_on_the_way(path: str, st: os.stat_result, uid: int, what: str, target: str, trust: int | None = None) -> None:
    """A directory ``target``'s lookup passes through."""
    if st.st_uid not in (uid, 0, trust):
        raise UnsafePathError(f"{what} {target}: {path} belongs to {_who(st.st_uid)}, who could swap what is under it; choose a place only you and root can change")
    if _shared(st) and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            f"{what} {target}: {path} is writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {stat.S_IMODE(st.st_mode):04o})"
            " and not sticky, so anyone who can write it could swap what is under it; choose a place only you and root can change"
        )


def _absolute(path: str | os.PathLike[str]) -> PurePosixPath:
    p = PurePosixPath(os.path.expanduser(os.fspath(path)))
    return p if p.is_absolute() else PurePosixPath(os.getcwd()) / p


def secure_parent(path: str | os.PathLike[str], *, what: str, create: bool = True, trust: int | None = None) -> str:
    """The real path of ``path``'s parent, every directory on the way checked (module rules);
    missing ones are created 0700 when ``create``. Returns it with no link left in it.
    ``trust``: one more uid whose directories are as good as yours (a shared link's operator)."""
    uid = os.geteuid()
    target = str(_absolute(path))
    for _ in range(100):  # a directory made while we looked: look again
        cur, missing = _walk(_absolute(path).parent, uid, what, target, trust)
        if not missing:
            return cur
        if not create:
            raise UnsafePathError(f"{what} {target}: {os.path.join(cur, missing[0])} does not exist")
        try:
            os.mkdir(os.path.join(cur, missing[0]), 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise UnsafePathError(f"{what} {target}: cannot create {os.path.join(cur, missing[0])}: {err.strerror}") from None
    raise UnsafePathError(f"{what} {target}: its directories keep changing while they are checked")


def _walk(parent: PurePosixPath, uid: int, what: str, target: str, trust: int | None = None) -> tuple[str, list[str]]:
    """Look ``parent`` up from / one name at a time, checking each directory passed; returns the
    real path reached and the names that do not exist yet."""
    cur = "/"
    _check_on_the_way(cur, os.lstat(cur), uid, what, target, trust)
    pending = list(parent.parts[1:])
    links = 0
    while pending:
        name = pending.pop(0)
        if name in ("", "."):
            continue
        if name == "..":  # cur holds no link, so its parent is its lexical parent
            cur = os.path.dirname(cur) or "/"
            continue
        here = os.path.join(cur, name)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return cur, [name, *pending]
        except OSError as err:
            raise UnsafePathError(f"{what} {target}: cannot look at {here}: {err.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            if _shared(os.lstat(cur)) and st.st_uid not in (uid, 0, trust):  # in /tmp its owner can swap it
                raise UnsafePathError(f"{what} {target}: {here} is a symbolic link of {_who(st.st_uid)} in a shared directory; choose a place only you and root can change")
            links += 1
            if links > _MAX_LINKS:
                raise UnsafePathError(f"{what} {target}: too many symbolic links on the way")
            link = PurePosixPath(os.readlink(here))
            if link.is_absolute():
                cur = "/"
                pending = [*link.parts[1:], *pending]
            else:
                pending = [*link.parts, *pending]
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{what} {target}: {here} is not a directory")
        _check_on_the_way(here, st, uid, what, target, trust)
        cur = here
    return cur, []


def private_dir(path: str | os.PathLike[str], *, what: str, ancestors: bool = True, loose: Literal["refuse", "tighten"] = "refuse") -> Path:
    """Make (or check) ``path`` a directory only you can change: created 0700 whatever the umask;
    refused if it is a link, another user's, or (``loose="refuse"``) writable by group or others,
    which means someone else may have put things in it. ``loose="tighten"``: such a directory of
    yours is made 0700, for one whose every file is checked when opened (the claim locks).
    ``ancestors``: check every directory on the way too (module rules); else just create them."""
    uid = os.geteuid()
    full = _absolute(path)
    if full.name in ("", ".", ".."):
        raise UnsafePathError(f"{what} {path}: not a directory name")
    if ancestors:
        parent = secure_parent(full, what=what)
    else:
        parent = str(full.parent)
        os.makedirs(parent, exist_ok=True)
    here = os.path.join(parent, full.name)
    try:
        os.mkdir(here, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise UnsafePathError(f"{what} {full}: cannot create it: {err.strerror}") from None
    try:
        fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):  # a link gives either, by kernel
            if os.path.islink(here):
                raise UnsafePathError(f"{what} {full} is a symbolic link: refused (whoever made it can point it at their own files); remove it, or choose another place") from None
            raise UnsafePathError(f"{what} {full} is not a directory") from None
        raise UnsafePathError(f"{what} {full}: cannot open it: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            raise UnsafePathError(f"{what} {full} belongs to {_who(st.st_uid)}, not to you ({_who(uid)}): refused; remove it, or choose another place")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and loose == "refuse":
            raise UnsafePathError(
                f"{what} {full} is writable by {'others' if mode & 0o002 else 'its group'} (mode {mode:04o}): someone else may have put"
                f" files in it; check its contents, then `chmod 700 {full}` (or remove it)"
            )
        if mode != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return Path(full)


def open_private(path: str | os.PathLike[str], flags: int = os.O_RDWR, *, what: str, create: bool = True) -> int:
    """Open a file of yours without following a link (O_NOFOLLOW, O_CLOEXEC; created 0600 when
    ``create``); refused unless it is a regular file of yours with no second name. A file
    readable by others is made 0600 (fchmod on the open file). Returns the descriptor."""
    uid = os.geteuid()
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise UnsafePathError(f"{what} {path} is a symbolic link: refused, nothing written through it; remove it") from None
        raise
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != uid:
            problem = f"belongs to {_who(st.st_uid)}, not to you"
        elif st.st_nlink > 1:  # 0: unlinked by its last holder meanwhile, harmless
            problem = f"has {st.st_nlink} names (a hard link to another file)"
        if problem:
            raise UnsafePathError(f"{what} {path} {problem}: refused, nothing written to it; remove it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_file(path: str | os.PathLike[str], *, create: bool = True) -> None:
    """Create ``path`` empty and 0600 if it does not exist (and ``create``); a file of yours
    already there that others can read is made 0600. A link is left as it is (the operator's
    own arrangement, never followed here)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0), 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.ENOENT and not create):
            return
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def shared_dir(path: str | os.PathLike[str], *, what: str, owner: int, gid: int) -> Path:
    """A directory its owner alone can change and one group may read (a shared link's control
    directory: mode 2750, group ``gid``). Its owner makes (or checks and tightens) it like
    ``private_dir``; anyone else only checks it, trusting directories of the owner's on the way:
    no link, ``owner``'s, group ``gid``, writable by nobody but the owner."""
    uid = os.geteuid()
    full = _absolute(path)
    if full.name in ("", ".", ".."):
        raise UnsafePathError(f"{what} {path}: not a directory name")
    mine = uid == owner
    parent = secure_parent(full, what=what, create=mine, trust=None if mine else owner)
    here = os.path.join(parent, full.name)
    if mine:
        try:
            os.mkdir(here, 0o700)
        except FileExistsError:
            pass
        except OSError as err:
            raise UnsafePathError(f"{what} {full}: cannot create it: {err.strerror}") from None
    try:
        fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            if os.path.islink(here):
                raise UnsafePathError(f"{what} {full} is a symbolic link: refused (whoever made it can point it at their own files); remove it, or choose another place") from None
            raise UnsafePathError(f"{what} {full} is not a directory") from None
        if err.errno == errno.ENOENT:
            raise UnsafePathError(f"{what} {full} does not exist yet: {_who(owner)} makes it with `scbundle link start`") from None
        if err.errno == errno.EACCES:
            raise UnsafePathError(f"{what} {full}: permission denied: only {_who(owner)} and the members of group {_group(gid)} may use it") from None
        raise UnsafePathError(f"{what} {full}: cannot open it: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != owner:
            raise UnsafePathError(f"{what} {full} belongs to {_who(st.st_uid)}, not to the shared link's operator {_who(owner)}: refused; remove it, or choose another place")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise UnsafePathError(
                f"{what} {full} is writable by {'others' if mode & 0o002 else 'its group'} (mode {mode:04o}): someone else may have put"
                f" files in it; check its contents, then `chmod 2750 {full}` (or remove it)"
            )
        if mine:
            if st.st_gid != gid:
                os.fchown(fd, -1, gid)
            if mode != 0o2750:
                os.fchmod(fd, 0o2750)
        elif st.st_gid != gid:
            raise UnsafePathError(f"{what} {full} has group {_group(st.st_gid)}, not the shared link's group {_group(gid)}: refused")
    finally:
        os.close(fd)
    return Path(full)


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"
