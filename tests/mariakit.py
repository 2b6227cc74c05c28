"""A private MariaDB server for the tests: its own data directory in a temporary directory,
reached only through a Unix socket in that directory (``skip-networking``: no TCP port, nothing
shared with a system server).

    from mariakit import start_server
    maria = start_server()             # mariadb-install-db + mariadbd, ~2-4 s
    try:
        url = maria.url                # mysql+pymysql://scb@localhost/scbtest?unix_socket=<dir>/mysqld.sock&charset=utf8mb4
        other = maria.create_database("t2")
        maria.restart()                # every connection is cut; the data stays
    finally:
        maria.stop()

or, in a conftest.py:

    from mariakit import maria_fixtures
    maria_server, maria_url = maria_fixtures()   # session scope; skip (with the reason) when unavailable

As root the server runs as the ``mysql`` user (Debian's mariadb-server creates it; mariadbd
drops to it with ``--user``), otherwise as the current user. The binaries are Debian's
(installed by scripts/install-test-services.sh) or whatever ``mariadbd`` / ``mariadb-install-db``
are on PATH. A server left behind by a test session that was killed (its owner pid is gone) is
stopped by the next session's start. Set SCBMARIA_KEEP=1 to keep the directory after stop().
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pgkit import wait_until  # one poll-until helper for both test servers

INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-test-services.sh"
PREFIX = "scbmaria"
ROLE = "scb"
DATABASE = "scbtest"
SERVER_OPTIONS = [  # a throwaway server: durability off, small buffers, quick start and stop
    "--skip-networking",
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=32M",
    "--innodb-fast-shutdown=2",
    "--sync-frm=0",
    "--max-connections=300",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",  # MariaDB's usual default: a team's database has it
    "--performance-schema=0",
]
_counter = itertools.count()
_LIVE: dict[int, "MariaServer"] = {}


class MariaUnavailable(RuntimeError):
    """No MariaDB server can be started here (binaries missing and not installable, no driver)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")


@dataclass
class MariaServer:
    base: Path  # temporary directory: data/, the socket, server.log, mariadbd.pid, owner.pid
    mariadbd: str
    user: str  # the OS user the server runs as
    proc: subprocess.Popen | None = None
    databases: list[str] = field(default_factory=lambda: [DATABASE])

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket(self) -> Path:
        return self.base / "mysqld.sock"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url_for(self, database: str) -> str:
        return f"mysql+pymysql://{ROLE}@localhost/{database}?unix_socket={self.socket}&charset=utf8mb4"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def sql(self, statement: str, database: str | None = None) -> list[tuple]:
        """Run ``statement`` as the server's root; returns its rows."""
        import pymysql

        conn = pymysql.connect(unix_socket=str(self.socket), user="root", database=database, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """A new empty database the test role may use; returns its URL."""
        self.sql(f"CREATE DATABASE `{name}`")
        self.sql(f"GRANT ALL ON `{name}`.* TO '{ROLE}'@'localhost'")
        self.databases.append(name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        for (pid,) in self.sql(f"SELECT id FROM information_schema.processlist WHERE db = '{name}' AND id <> connection_id()"):
            try:
                self.sql(f"KILL {int(pid)}")
            except Exception:  # gone already
                pass
        self.sql(f"DROP DATABASE IF EXISTS `{name}`")
        if name in self.databases:
            self.databases.remove(name)

    def connections(self, database: str | None = None) -> int:
        """Client connections now (to ``database``, or to any), this one not counted."""
        where = f" AND db = '{database}'" if database else ""
        return int(self.sql(f"SELECT count(*) FROM information_schema.processlist WHERE id <> connection_id() "
                            f"AND command <> 'Daemon'{where}")[0][0])  # fmt: skip

    def start(self) -> None:
        argv = [self.mariadbd, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
                f"--pid-file={self.base / 'mariadbd.pid'}", f"--log-error={self.log}", f"--user={self.user}",
                f"--tmpdir={self.base}", *SERVER_OPTIONS]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, env=_env())  # fmt: skip
        (self.base / "mariadbd.ppid").write_text(str(self.proc.pid))
        if not wait_until(self._ready, timeout=60, interval=0.05):
            code = self.proc.poll()
            raise MariaUnavailable(f"mariadbd did not accept connections within 60 s (exit {code}):\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise MariaUnavailable(f"mariadbd exited {self.proc.returncode}:\n{self.log_tail()}")
        if not self.socket.exists():
            return False
        try:
            self.sql("SELECT 1")
        except Exception:
            return False
        return True

    def restart(self) -> None:
        """Stop (SIGKILL: as a crash; every session is cut, transactions in flight roll back)
        and start again. Clients see their connections fail on the next statement."""
        self._kill()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.proc = None

    def stop(self) -> None:
        _LIVE.pop(id(self), None)
        self._kill()
        if os.environ.get("SCBMARIA_KEEP") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_left_behind() -> list[str]:
    """Stop the servers of earlier test sessions whose owner process is gone, and remove their
    directories; returns the directories removed."""
    gone = []
    for d in glob.glob(f"/tmp/{PREFIX}[0-9]*-*"):
        base = Path(d)
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if _pid_alive(owner):
            continue
        try:
            server_pid = int((base / "mariadbd.ppid").read_text())
            if _pid_alive(server_pid) and f"--datadir={base / 'data'}".encode() in Path(f"/proc/{server_pid}/cmdline").read_bytes():
                os.kill(server_pid, signal.SIGKILL)
                wait_until(lambda: not _pid_alive(server_pid), timeout=30)
        except (OSError, ValueError):
            pass
        shutil.rmtree(base, ignore_errors=True)
        gone.append(d)
    return gone


def _install() -> None:
    """Install Debian's mariadb-server with the project's script (root only)."""
    if os.geteuid() != 0:
        raise MariaUnavailable("MariaDB is not installed (mariadbd, mariadb-install-db) and installing it needs root: "
                               "run scripts/install-test-services.sh as root")  # fmt: skip
    p = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1200)
    if p.returncode != 0 or not (_which("mariadbd") and _which("mariadb-install-db")):
        raise MariaUnavailable(f"MariaDB could not be installed ({INSTALL_SCRIPT} exited {p.returncode}): {p.stderr.strip()[-500:]}")


def _server_user() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        return "root"  # mariadbd runs as root when told --user=root
    return "mysql"


def start_server() -> MariaServer:
    """mariadb-install-db a new data directory in a temporary directory, start mariadbd on it,
    create the test role and database."""
    try:
        import pymysql  # noqa: F401  - the driver scbundle uses: mysql+pymysql://
    except ImportError:
        raise MariaUnavailable("the PyMySQL driver is missing: pip install -e '.[test]' (or '.[mysql]')") from None
    if not (_which("mariadbd") and _which("mariadb-install-db")):
        _install()
    reap_left_behind()
    mariadbd, install_db = _which("mariadbd"), _which("mariadb-install-db")
    assert mariadbd and install_db
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{next(_counter)}-", dir="/tmp"))  # short: socket paths stay < 107 bytes
    (base / "owner.pid").write_text(str(os.getpid()))
    base.chmod(0o755)  # the server user writes data/ and the socket here; the socket is the only way in
    server = MariaServer(base, mariadbd, user)
    if user != pwd.getpwuid(os.geteuid()).pw_name:
        os.chown(base, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    try:
        p = subprocess.run(
            [install_db, "--no-defaults", f"--datadir={server.data}", f"--user={user}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", "--innodb-log-file-size=32M", "--innodb-buffer-pool-size=64M"],
            capture_output=True, text=True, timeout=300, env=_env(),
        )  # fmt: skip
        if p.returncode != 0:
            raise MariaUnavailable(f"mariadb-install-db exited {p.returncode}: {(p.stderr or p.stdout).strip()[-1000:]}")
        server.start()
        _LIVE[id(server)] = server
        server.sql(f"CREATE USER '{ROLE}'@'localhost'")
        server.create_database(DATABASE)
        server.databases = [DATABASE]
    except BaseException:
        server.stop()
        raise
    return server


@atexit.register
def _stop_all() -> None:  # a test run killed by an exception still leaves no server behind
    for server in list(_LIVE.values()):
        server.stop()


def maria_fixtures(scope: str = "session") -> tuple[Callable, Callable]:
    """(maria_server, maria_url) pytest fixtures: one server for the session; skip with the
    reason when it cannot run here."""
    import pytest

    @pytest.fixture(scope=scope, name="maria_server")
    def maria_server():
        try:
            server = start_server()
        except MariaUnavailable as err:
            pytest.skip(f"no MariaDB for the tests: {err}")
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope=scope, name="maria_url")
    def maria_url(maria_server: MariaServer) -> str:
        return maria_server.url

    return maria_server, maria_url
