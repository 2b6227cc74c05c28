"""The fork server behind tests/clirun.py (read its docstring first).

Started as ``python clirun_server.py SOCKET``. It imports the heavy third-party libraries that
every scbundle command imports, never scbundle itself, then answers on SOCKET: one connection
is one command. For each, a handler child forks the command's own process, sends back its pid,
waits for it (and kills its process group after the caller's timeout, if one was given), and
sends back its exit code.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import struct
import sys

PRELOAD = (
    "sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.mysql", "sqlalchemy.ext.compiler",
    "alembic", "alembic.command", "alembic.config", "alembic.script", "alembic.runtime.migration",
    "alembic.operations", "mako.template",
    "pydantic", "jinja2", "click", "rich.console", "rich.table", "rich.progress", "rich.text",
    "platformdirs", "psutil", "tomllib", "email.parser", "importlib.metadata", "asyncio",
)  # fmt: skip


def _recv(conn: socket.socket) -> dict:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("caller went away")
            buf += chunk
        return buf

    return json.loads(exact(struct.unpack("!I", exact(4))[0]))


def _reply(conn: socket.socket, obj: dict) -> None:
    data = json.dumps(obj).encode()
    conn.sendall(struct.pack("!I", len(data)) + data)


def _command(req: dict, listener: socket.socket, conn: socket.socket) -> None:
    """In the command's own process: become ``python -m scbundle.cli ARGS``. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter sets them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # SIGPIPE stays ignored, as Python has it
        listener.close()
        conn.close()
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        import time

        time.tzset()
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, to in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, to)
            os.close(fd)
        os.closerange(3, 4096)  # as subprocess's close_fds: the command inherits 0, 1 and 2 only
        import io

        for name, errors in (("stdout", "strict"), ("stderr", "backslashreplace")):
            old = getattr(sys, name)
            new = io.TextIOWrapper(io.FileIO(1 if name == "stdout" else 2, "w", closefd=False), encoding=old.encoding,
                                   errors=errors, line_buffering=False, write_through=name == "stderr")  # fmt: skip
            setattr(sys, name, new)
            setattr(sys, f"__{name}__", new)
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding=sys.stdout.encoding)
        import random
        import site

        random.seed()  # a fresh interpreter's generator, not the server's
        sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
        for d in site.getsitepackages():
            site.addsitedir(d)  # .pth files of packages installed since the server started
        importlib.invalidate_caches()
        import runpy

        sys.argv = ["-m", *req["args"]]
        try:
            runpy.run_module("scbundle.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        import atexit
        import threading

        threading._shutdown()  # as the interpreter's exit: threading's own exit hooks (concurrent.futures
        # tells its workers to stop there), then every non-daemon thread joined
        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code & 0xFF)


def _handle(conn: socket.socket, listener: socket.socket) -> None:
    """In a handler child: run one command, wait for it, answer the caller. Never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        req = _recv(conn)
        pid = os.fork()
        if pid == 0:
            _command(req, listener, conn)
        listener.close()
        _reply(conn, {"pid": pid})
        pidfd = os.pidfd_open(pid)
        ready, _, _ = select.select([pidfd], [], [], req.get("timeout"))
        timed_out = not ready
        if timed_out:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        _reply(conn, {"rc": rc, "timeout": timed_out})
    finally:
        os._exit(0)


def main() -> None:
    path = sys.argv[1]
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handler children reap themselves
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    os.chmod(path + ".tmp", 0o600)
    listener.listen(64)
    os.rename(path + ".tmp", path)
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            _handle(conn, listener)
        conn.close()


if __name__ == "__main__":
    main()
