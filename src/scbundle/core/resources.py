"""Where the templates and the remote tools are: inside the wheel, or in the source tree;
the tools' digests and the inline bootstrap that verifies them on the site."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]  # the scbundle package


def _find(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"scbundle's {name}/ directory is missing from the installation")


def templates_dir() -> Path:
    return _find("templates")


def remote_dir() -> Path:
    return _find("remote")


def remote_files() -> list[Path]:
    """The remote tools that are shipped (no caches, no tests)."""
    root = remote_dir()
    return sorted(
        p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )


def content_hash(files: Mapping[str, bytes]) -> str:
    """Content hash of a set of files (relative name -> bytes): a new version of them lands in a
    new directory on the site (the engine's tools, a stage's shipped files)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        h.update(files[name] + b"\0")
    return h.hexdigest()[:16]


def digest_list(files: Mapping[str, bytes]) -> str:
    """``name=sha256,...`` of ``files``: what the bootstrap (remote/sc_boot.py) checks on the site."""
    return ",".join(f"{name}={hashlib.sha256(files[name]).hexdigest()}" for name in sorted(files))


def _tool_files() -> dict[str, bytes]:
    root = remote_dir()
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in remote_files()}


@cache
def tools_hash() -> str:
    """Content hash of remote/: a new version of the tools lands in a new directory."""
    return content_hash(_tool_files())


@cache
def tool_digests() -> str:
    """``name=sha256,...`` of every shipped tool: what the bootstrap checks on the site."""
    return digest_list(_tool_files())


def inline_code(name: str) -> str:
    """remote/<name> as one line of Python for ``python3 -S -c``: its comment lines dropped and
    the rest wrapped in exec(), so it is one shell word without a newline (a csh login shell
    refuses a quoted newline) and without "!" (csh history expansion)."""
    lines = (remote_dir() / name).read_text().splitlines()
    code = "\n".join(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")) + "\n"
    word = f"exec({code!r})"
    if "!" in word:
        raise RuntimeError(f"remote/{name} holds an exclamation mark: a csh login shell would expand it")
    return word


# remote/sc_boot.py's exit codes (tests/remote/test_boot.py holds them equal)
BOOT_ABSENT = 90  # the tools directory is not there
BOOT_UNSAFE = 91  # a directory or tool another account could change: nothing ran
BOOT_MISMATCH = 92  # a tool is missing from the directory or differs from this installation's


@cache
def boot_code() -> str:
    """The bootstrap every tool invocation goes through (remote/sc_boot.py), inline."""
    return inline_code("sc_boot.py")
