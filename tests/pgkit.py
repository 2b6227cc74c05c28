"""A private PostgreSQL server for the tests: its own cluster in a temporary directory, reached
only through a Unix socket in that directory (no TCP port, nothing shared with a system cluster).

    from pgkit import start_server
    pg = start_server()              # initdb + pg_ctl start, ~1-2 s
    try:
        url = pg.url                 # postgresql+psycopg://scb@/scbtest?host=<socket dir>&port=5432
        other = pg.create_database("t2")
        pg.restart()                 # every connection is cut; the data stays
    finally:
        pg.stop()

or, in a conftest.py:

    from pgkit import pg_fixtures
    pg_server, pg_url = pg_fixtures()     # session scope; skip (with the reason) when unavailable

PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (Debian's
packages create it), otherwise as the current user. The binaries are Debian's
(/usr/lib/postgresql/<major>/bin, installed by scripts/install-test-services.sh) or whatever
`initdb` / `pg_ctl` are on PATH. Set SCBPG_KEEP=1 to keep the directory after stop().
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-test-services.sh"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
PORT = 5432  # only names the socket file: the socket directory is private
ROLE = "scb"
DATABASE = "scbtest"
SERVER_OPTIONS = {  # a throwaway cluster: durability off, quick start and stop
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "64MB",
}
_counter = itertools.count()
_LIVE: dict[int, "PgServer"] = {}


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (binaries missing and not installable, no driver)."""


@dataclass
class PgServer:
    base: Path  # temporary directory: data/ (the cluster), the socket, server.log
    bindir: Path
    user: str  # the OS user the server runs as
    databases: list[str] = field(default_factory=lambda: [DATABASE])

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{ROLE}@/{database}?host={self.socket_dir}&port={PORT}"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser; returns psql's output."""
        p = self._run(
            [self.bindir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-p", str(PORT),
             "-U", "postgres", "-d", database, "-At", "-c", sql],
        )  # fmt: skip
        return p.stdout

    def create_database(self, name: str) -> str:
        """A new empty database owned by the test role; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        self.databases.append(name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def connections(self, database: str | None = None) -> int:
        """Client backends connected now (to ``database``, or to any)."""
        where = f" AND datname = '{database}'" if database else ""
        return int(self.psql(f"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid(){where}"))

    def start(self) -> None:
        opts = " ".join(f"-c {k}={v}" for k, v in SERVER_OPTIONS.items())
        self._run([self.bindir / "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", f"-k {self.socket_dir} -p {PORT} {opts}", "start"])  # fmt: skip

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: every session is cut, transactions in flight roll back; ``immediate``:
        as a crash) and start again. Clients see their connections fail on the next statement."""
        self._run([self.bindir / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])
        self.start()

    def running(self) -> bool:
        p = self._run([self.bindir / "pg_ctl", "-D", str(self.data), "status"], check=False)
        return p.returncode == 0

    def stop(self) -> None:
        _LIVE.pop(id(self), None)
        if self.data.is_dir() and self.running():
            self._run([self.bindir / "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop"], check=False)
        if os.environ.get("SCBPG_KEEP") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _run(self, argv: list, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(a) for a in argv]
        if os.geteuid() == 0 and self.user != "root":
            argv = ["runuser", "-u", self.user, "--", *argv]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.base, env=_env())
        if check and p.returncode != 0:
            raise PgUnavailable(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}\n{self.log_tail()}")
        return p


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


def find_bindir() -> Path | None:
    """Debian's newest /usr/lib/postgresql/<major>/bin, else the directory of `initdb` on PATH."""
    if DEBIAN_ROOT.is_dir():
        majors = sorted((p for p in DEBIAN_ROOT.iterdir() if (p / "bin" / "initdb").is_file()), key=lambda p: int(p.name) if p.name.isdigit() else 0)
        if majors:
            return majors[-1] / "bin"
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def _install() -> Path:
    """Install Debian's postgresql with the project's script (root only); the binary directory."""
    if os.geteuid() != 0:
        raise PgUnavailable("PostgreSQL is not installed (initdb, pg_ctl) and installing it needs root: "
                            "run scripts/install-test-services.sh as root")  # fmt: skip
    p = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1200)
    bindir = find_bindir()
    if p.returncode != 0 or bindir is None:
        raise PgUnavailable(f"PostgreSQL could not be installed ({INSTALL_SCRIPT} exited {p.returncode}): {p.stderr.strip()[-500:]}")
    return bindir


def _server_user() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PgUnavailable("running as root, and there is no `postgres` user to run the server as "
                            "(Debian's postgresql package creates it)") from None  # fmt: skip
    return "postgres"


def start_server() -> PgServer:
    """initdb a new cluster in a temporary directory, start it, create the test role and database."""
    try:
        import psycopg  # noqa: F401  - the driver scbundle uses: postgresql+psycopg://
    except ImportError:
        raise PgUnavailable("the psycopg driver is missing: pip install -e '.[test]' (or '.[postgres]')") from None
    bindir = find_bindir() or _install()
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix=f"scbpg{next(_counter)}-", dir="/tmp"))  # short: socket paths stay < 107 bytes
    server = PgServer(base, bindir, user)
    if user != pwd.getpwuid(os.geteuid()).pw_name:
        os.chown(base, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    try:
        server._run([bindir / "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                     "--no-sync", "--no-instructions"])  # fmt: skip
        server.start()
        _LIVE[id(server)] = server
        server.psql(f"CREATE ROLE {ROLE} LOGIN")
        server.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    except BaseException:
        server.stop()
        raise
    return server


def wait_until(predicate: Callable[[], bool], timeout: float = 60, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@atexit.register
def _stop_all() -> None:  # a test run killed by an exception still leaves no server behind
    for server in list(_LIVE.values()):
        server.stop()


def pg_fixtures(scope: str = "session") -> tuple[Callable, Callable]:
    """(pg_server, pg_url) pytest fixtures: one server for the session; skip with the reason when
    it cannot run here."""
    import pytest

    @pytest.fixture(scope=scope, name="pg_server")
    def pg_server():
        try:
            server = start_server()
        except PgUnavailable as err:
            pytest.skip(f"no PostgreSQL for the tests: {err}")
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope=scope, name="pg_url")
    def pg_url(pg_server: PgServer) -> str:
        return pg_server.url

    return pg_server, pg_url
