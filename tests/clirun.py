"""Run the real `scbundle` command line from tests, fast: a fork server.

Every test drives scbundle the way an operator does, as its own process with its own
environment (``python -m scbundle.cli ARGS``). Most of each such process's CPU went to
importing the same third-party libraries (SQLAlchemy, Alembic, pydantic, Jinja2, click) again:
about 1.3 of 2 CPU-seconds on the CI machine, thousands of times a run. So a test session
keeps one small server process that has imported those libraries and nothing of scbundle; for
each command it forks a child, which takes the caller's environment, working directory and
arguments, points fds 0/1/2 at /dev/null and the caller's output files, imports scbundle from
scratch and runs ``scbundle.cli`` as ``__main__``. The child is a separate process as before:
its own pid, environment, exit code and process group; scbundle's own modules are imported
fresh in every command, so no scbundle state carries over from one command to the next.

Where a fresh interpreter would start differently (a ``PYTHON*`` variable, the locale or the
interpreter itself differ from the server's), `run` starts a real ``python -m scbundle.cli``
instead. ``SCBUNDLE_TEST_NO_FORKSERVER=1`` does that for every command.

`Cli` is the tests' handle on one scbundle home (the `cli` fixture of tests/conftest.py):
it lives here, not in a conftest, so test modules import it by a name no other file shares.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

#: what a fresh interpreter reads at start-up: a difference here means a real subprocess
STARTUP_KEYS = ("LANG", "LC_ALL", "LC_CTYPE")

_lock = threading.Lock()
_server: tuple[subprocess.Popen, str, dict[str, str]] | None = None


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") or k in STARTUP_KEYS}


def _send(sock: socket.socket, obj: object) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv(sock: socket.socket) -> object:
    head = _recv_exact(sock, 4)
    return json.loads(_recv_exact(sock, struct.unpack("!I", head)[0]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("fork server closed the connection")
        buf += chunk
    return buf


def _start_server() -> tuple[subprocess.Popen, str, dict[str, str]] | None:
    sockdir = tempfile.mkdtemp(prefix="scb-fork-")
    path = os.path.join(sockdir, "s")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("clirun_server.py")), path], env=env,
                            stdin=subprocess.DEVNULL)  # fmt: skip
    for _ in range(600):  # the imports take a few seconds on a busy machine
        if os.path.exists(path) or proc.poll() is not None:
            break
        threading.Event().wait(0.05)
    if not os.path.exists(path):
        proc.kill()
        return None

    def stop() -> None:
        proc.kill()
        proc.wait()
        for p in (path, sockdir):
            try:
                os.rmdir(p) if p == sockdir else os.unlink(p)
            except OSError:
                pass

    atexit.register(stop)
    return proc, path, _startup_env(env)


def _server_for(env: dict[str, str]) -> str | None:
    global _server
    if os.environ.get("SCBUNDLE_TEST_NO_FORKSERVER") or env.get("SCBUNDLE_TEST_NO_FORKSERVER"):
        return None
    with _lock:
        if _server is None or _server[0].poll() is not None:
            _server = _start_server()
        if _server is None or _startup_env(env) != _server[2]:
            return None
        return _server[1]


def _text(path: str) -> str:
    """A captured stream as ``subprocess.run(text=True)`` gives it: decoded in the locale's
    encoding, newlines translated."""
    data = Path(path).read_bytes() if os.path.exists(path) else b""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


class Proc:
    """A command started through the fork server, with the parts of `subprocess.Popen` the
    tests use (text mode, stdout and stderr captured): pid, poll, wait, communicate, kill,
    terminate, returncode."""

    def __init__(self, args: list[str], env: dict[str, str], path: str, cwd: str | None = None) -> None:
        self.args = [sys.executable, "-m", "scbundle.cli", *args]
        self._tmp = tempfile.TemporaryDirectory(prefix="scb-cli-")
        self._out, self._err = os.path.join(self._tmp.name, "out"), os.path.join(self._tmp.name, "err")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        _send(self._sock, {"args": list(args), "env": env, "cwd": cwd or os.getcwd(), "out": self._out, "err": self._err,
                           "timeout": None})  # fmt: skip
        self.pid = int(_recv(self._sock)["pid"])  # type: ignore[index]
        self.returncode: int | None = None
        self._texts: tuple[str, str] | None = None

    def _finish(self, reply: object) -> int:
        assert isinstance(reply, dict)
        self.returncode = int(reply["rc"])
        self._texts = (_text(self._out), _text(self._err))
        self._sock.close()
        self._tmp.cleanup()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            r, _, _ = select.select([self._sock], [], [], 0)
            if r:
                self._finish(_recv(self._sock))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            r, _, _ = select.select([self._sock], [], [], timeout)
            if not r:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._finish(_recv(self._sock))
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        assert self._texts is not None
        return self._texts

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def popen(args: list[str], *, env: dict[str, str], cwd: str | None = None) -> Proc | subprocess.Popen:
    """``python -m scbundle.cli *args`` started and left running, output captured as text."""
    path = _server_for(env)
    if path is None:
        return subprocess.Popen([sys.executable, "-m", "scbundle.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return Proc(args, env, path, cwd)


def run(args: list[str], *, env: dict[str, str], timeout: float | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    """``python -m scbundle.cli *args`` with ``env``, stdin /dev/null, output captured as text:
    what ``subprocess.run(..., capture_output=True, text=True)`` returns, and
    `subprocess.TimeoutExpired` after ``timeout`` seconds (the command is killed)."""
    argv = [sys.executable, "-m", "scbundle.cli", *args]
    path = _server_for(env)
    if path is None:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="scb-cli-") as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            _send(s, {"args": list(args), "env": env, "cwd": cwd or os.getcwd(), "out": out, "err": err, "timeout": timeout})
            _recv(s)  # the command's pid
            reply = _recv(s)
        assert isinstance(reply, dict)
        stdout, stderr = _text(out), _text(err)
    if reply.get("timeout"):
        raise subprocess.TimeoutExpired(argv, timeout or 0, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(argv, int(reply["rc"]), stdout, stderr)


@dataclass
class Cli:
    home: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True, failpoint: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if failpoint:
            env["SCBUNDLE_FAILPOINT"] = failpoint
        p = run(list(args), env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"scbundle {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)

    @property
    def db_path(self) -> Path:
        return self.home / "scbundle.db"

    @property
    def site_root(self) -> Path:
        return self.home / "site-local"

    def run_dir(self, remote_id: int = 1) -> Path:
        """The run's directory on the local site, as prepare gave it (it carries the
        database's installation id)."""
        with sqlite3.connect(self.db_path) as c:
            row = c.execute("select remote_dir from remote_run where remote_id = ?", (remote_id,)).fetchone()
        assert row and row[0], f"remote_id {remote_id} has no run directory yet"
        return Path(row[0])

    def job_files(self) -> list[str]:
        """The local scheduler's registry records the runs' job names should have, sorted."""
        with sqlite3.connect(self.db_path) as c:
            return sorted(f"{n}.job" for (n,) in c.execute("select job_name from remote_run where job_name is not null"))
