"""A second local user for attack tests: a real unprivileged account, made with useradd for the
test and removed after, whose actions run with `runuser -u NAME --` (the tests run as root,
the operator). Its processes are the test's own, ended by their pid."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import site
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"  # the system's: the venv may be private


@dataclass
class CoUser:
    name: str
    uid: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", self.name, "--", *argv], capture_output=True, text=True, check=check, cwd="/", timeout=60)

    def python(self, code: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(PYTHON, "-c", code, *args, check=check)

    def spawn_python(self, code: str, *args: str) -> subprocess.Popen:
        p = subprocess.Popen(["runuser", "-u", self.name, "--", PYTHON, "-c", code, *args], cwd="/",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.procs.append(p)
        return p


@contextmanager
def new_co_user(*groups: str) -> Iterator[CoUser]:
    """A second local user (in these local groups too), removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to make a second local user")
    name = "scbx" + secrets.token_hex(4)
    extra = ["--groups", ",".join(groups)] if groups else []
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", *extra, name], check=True, capture_output=True)
    user = CoUser(name, pwd.getpwnam(name).pw_uid)
    try:
        yield user
    finally:
        for p in user.procs:  # only what the test started, by its pid
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def co_user() -> Iterator[CoUser]:
    with new_co_user() as user:
        yield user


@contextmanager
def local_group() -> Iterator[str]:
    """A local group for the test, removed afterwards."""
    name = "scbg" + secrets.token_hex(4)
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


# scbundle as a co-user: the system python with this checkout's code and the venv's packages
# (the venv's own interpreter may sit under root's private home)
SCBUNDLE_ENV = [f"PYTHONPATH={Path(__file__).resolve().parents[1] / 'src'}:{site.getsitepackages()[0]}", "HOME=/nonexistent"]


def scbundle_argv(*args: str) -> list[str]:
    return ["env", *SCBUNDLE_ENV, PYTHON, "-m", "scbundle.cli", *args]


def remove_paths(*roots: Path) -> None:
    """Remove what the co-user left at these paths (the test's own places only)."""
    for root in roots:
        if os.path.lexists(root):
            if os.path.islink(root) or not os.path.isdir(root):
                os.unlink(root)
            else:
                shutil.rmtree(root, ignore_errors=True)
