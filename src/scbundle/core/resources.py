"""Where the templates and the remote tools are: inside the wheel, or in the source tree."""

from __future__ import annotations

import hashlib
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


@cache
def tools_hash() -> str:
    """Content hash of remote/: a new version of the tools lands in a new directory."""
    h = hashlib.sha256()
    root = remote_dir()
    for p in remote_files():
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]
