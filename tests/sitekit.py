"""A real two-hop ssh test site on this machine: bastion (publickey, forwarding only) -> front end.

The front end asks the OTP users for a password (pam_unix) and then a typed TOTP code (pam_oath),
like the supercomputer scbundle talks to; the key user logs in with publickey (paramiko transport).

    from sitekit import start_site
    site = start_site()            # needs root; ~1 s
    try:
        ...                        # site.write_ssh_config(tmp / "cfg", "scbkey"), site.totp("scbotp"), ...
    finally:
        site.stop()

or, in a conftest.py:

    from sitekit import site_fixture
    test_site = site_fixture(scope="session")   # skips when not root, installs packages when missing

Topology with network namespaces (the default when `ip netns add` works):

    root netns 10.231.N.1 <-veth-> 10.231.N.2 bastion netns 10.231.N+1.1 <-veth-> 10.231.N+1.2 front netns

N is odd and chosen free per start. The bastion does not forward IP, so the front end is reachable only
by ssh through the bastion. The root netns gets a route for the front subnet into the bastion veth, so a
direct connect fails at once ("No route to host") and never leaves the machine. Without namespaces
(SCBSITE_NETNS=0, or `ip netns add` fails) both sshds listen on 127.0.0.1 with free ports.

route_front_to_host(site, ip) adds, on demand, a veth root <-> front that carries only traffic to one
root-netns address (the test Slurm's daemons, tests/slurmkit.py); ssh still reaches the front end only
through the bastion.

PAM: OpenSSH calls pam_start(SSHD_PAM_SERVICE, ...) and SSHD_PAM_SERVICE defaults to __progname, the
basename of argv[0] (auth-pam.h; Debian does not override it). Each sshd therefore runs through a
symlink /usr/local/sbin/sshd-<prefix>front|bastion -> /usr/sbin/sshd and gets /etc/pam.d/sshd-<prefix>...
written here; the system's /etc/pam.d/sshd and sshd_config are never read nor touched.

Environment knobs: SCBSITE_NETNS=0 forces the loopback fallback; SCBSITE_KEEP=1 keeps `base` after stop().
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

SSHD = "/usr/sbin/sshd"
SBIN = Path("/usr/local/sbin")
PAM_D = Path("/etc/pam.d")
RUN_DIR = Path("/run/scbsite")  # root-owned 0755 all the way up: authorized_keys live here
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-test-services.sh"
TOTP_STEP = 30
OATH_WINDOW = 10
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,4}")
_counter = itertools.count()
_LIVE: dict[int, "TestSite"] = {}
_SHARED: dict[str, tuple["TestSite", int]] = {}  # prefix -> (site, fixtures using it)


class SiteUnavailable(RuntimeError):
    """The site cannot be built here (not root, or its packages are missing and cannot be installed)."""


@dataclass
class SiteUser:
    name: str
    password: str | None  # None for key-only users
    oath_secret: str | None  # hex TOTP secret (pam_oath usersfile), None if no OTP
    key: Path | None  # private key file (ed25519, no passphrase), None if not allowed


@dataclass
class _Runtime:
    """What a start created, so that stop() (or a failed start) can undo exactly that."""

    prefix: str
    base: Path
    lock_fd: int | None = None
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    uids: set[int] = field(default_factory=set)
    run_dir: Path | None = None
    stopped: bool = False
    net_n: int = 0  # the start's namespace number and first octet (_setup_netns)
    net_octet: int = 0

    def teardown(self, keep_base: bool = False) -> None:
        if self.stopped:
            return
        self.stopped = True
        listeners = [p for p in self.procs.values() if p.poll() is None]
        children = [c for p in listeners for c in _descendants(p.pid)]
        for p in listeners:  # the listeners first, so no new connection is forked meanwhile
            _signal(p.pid, signal.SIGTERM)
        children += [c for p in listeners for c in _descendants(p.pid) if c not in children]
        for child in children:
            _signal(child, signal.SIGKILL)
        for p in listeners:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        for ns in self.namespaces:
            _kill_netns_pids(ns)
            _run(["ip", "netns", "del", ns], check=False)
        for link in self.host_links:
            if Path(f"/sys/class/net/{link}").exists():
                _run(["ip", "link", "del", link], check=False)
        _kill_uids(self.uids)
        _wait_gone(children, timeout=5)  # reaped (by the listener or init), not even a zombie
        _wait_no_comm({f"sshd-{self.prefix}{role}"[:15] for role in ("bastion", "front")}, timeout=5)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        if not keep_base:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class TestSite:
    __test__ = False  # not a pytest test class

    base: Path  # its own dir under /tmp (mode 0755): keys, configs, logs
    bastion_host: str
    bastion_port: int
    front_host: str
    front_port: int
    namespaces: bool  # False when it fell back to loopback ports
    users: dict[str, SiteUser]
    known_hosts: Path  # both host keys, as "[host]:port" (or host when port 22)
    wrong_known_hosts: Path  # same hosts, OTHER keys
    remote_root: Path  # writable by every site user (0777, no sticky bit)
    permanent_root: Path
    python: str = SYSTEM_PYTHON  # the site users cannot read /root/.pyenv
    mode_note: str = ""  # one line: which topology this is (printed at start)
    start_seconds: float = 0.0
    bastion_ns: str | None = None
    front_ns: str | None = None
    prefix: str = "scb"
    # root-netns address -> the front's address on its link to it (route_front_to_host)
    host_routes: dict[str, str] = field(default_factory=dict)
    # every front end (the first is front_host/front_ns): start_site(fronts=3) adds two more,
    # each its own netns and sshd behind the bastion; (bastion-side veth, front-side veth) each
    front_hosts: list[str] = field(default_factory=list)
    front_nss: list[str | None] = field(default_factory=list)
    front_links: list[tuple[str, str]] = field(default_factory=list)
    _rt: _Runtime | None = field(default=None, repr=False)
    _totp_steps: dict[str, int] = field(default_factory=dict, repr=False)
    _totp_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- names ------------------------------------------------------------------------------
    @property
    def bastion_alias(self) -> str:
        return f"{self.prefix}-bastion"

    @property
    def front_alias(self) -> str:
        return f"{self.prefix}-front"

    @property
    def otp_users(self) -> list[str]:
        return [u.name for u in self.users.values() if u.oath_secret]

    @property
    def key_user(self) -> str:
        return f"{self.prefix}key"

    def log_path(self, role: str) -> Path:
        """sshd's -E log of "bastion" or "front"."""
        return self.base / f"{role}.log"

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for role in ("bastion", "front"):
            for suffix in ("log", "stderr"):
                path = self.base / f"{role}.{suffix}"
                if path.exists() and path.stat().st_size:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                    out.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(out)

    # -- one-time codes ---------------------------------------------------------------------
    def totp(self, user: str) -> str:
        """A TOTP code for `user` that the front end will accept once: `oathtool --totp <secret>`.

        pam_oath (liboath) refuses a code whose time step is not newer than the last one accepted
        (OATH_REPLAYED_OTP), so two logins inside one 30 s step would fail with the literal current
        code. Each call therefore returns the code of the earliest step not handed out before: the
        current step normally, a later one (still inside window=10) for quick successive logins;
        it sleeps rather than go more than 5 steps ahead.
        """
        secret = self.users[user].oath_secret
        if not secret:
            raise ValueError(f"{user} has no one-time password")
        with self._totp_lock:
            while True:
                now_step = int(time.time()) // TOTP_STEP
                step = max(now_step, self._totp_steps.get(user, -1) + 1)
                if step - now_step <= OATH_WINDOW // 2:
                    break
                time.sleep(1)
            self._totp_steps[user] = step
        args = ["oathtool", "--totp"]
        if step != now_step:
            args.append(f"--now=@{step * TOTP_STEP}")
        return _run([*args, secret]).stdout.strip()

    # -- processes --------------------------------------------------------------------------
    def front_sshd_pids(self) -> list[int]:
        """The front sshd listener first, then its per-connection sshd processes (not user shells)."""
        proc = self._rt.procs.get("front") if self._rt else None
        if proc is None or proc.poll() is not None:
            return []
        return [proc.pid, *(pid for pid in _descendants(proc.pid) if _exe(pid) == SSHD)]

    def kill_connections(self, timeout: float = 10) -> None:
        """SIGKILL every per-connection sshd on the front end (the listener stays): the site's drop.

        User processes that were detached from the session (nohup/setsid) live on, as on the site.
        """
        victims = self.front_sshd_pids()[1:]
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)

    def front_sshd_pids_of(self, index: int) -> list[int]:
        """Front end ``index``'s sshd listener, then its per-connection sshds."""
        proc = self._rt.procs.get("front" if index == 0 else f"front{index + 1}") if self._rt else None
        if proc is None or proc.poll() is not None:
            return []
        return [proc.pid, *(pid for pid in _descendants(proc.pid) if _exe(pid) == SSHD)]

    def kill_front_connections(self, index: int, timeout: float = 10) -> None:
        """SIGKILL front end ``index``'s per-connection sshds: its masters drop, the others stay."""
        victims = self.front_sshd_pids_of(index)[1:]
        for pid in victims:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)

    def cap(self, index: int, mbit: float) -> None:
        """A bandwidth cap (tc tbf) both ways on front end ``index``'s link to the bastion."""
        b_link, f_link = self.front_links[index]
        for ns, dev in ((self.bastion_ns, b_link), (self.front_nss[index], f_link)):
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                  "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms"])

    def uncap(self, index: int) -> None:
        b_link, f_link = self.front_links[index]
        for ns, dev in ((self.bastion_ns, b_link), (self.front_nss[index], f_link)):
            _run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"], check=False)

    def front_rx_bytes(self, index: int) -> int:
        """Bytes front end ``index`` has received on its link (what was pushed through it)."""
        _, f_link = self.front_links[index]
        p = _run(["ip", "netns", "exec", self.front_nss[index], "cat", f"/sys/class/net/{f_link}/statistics/rx_bytes"])
        return int(p.stdout)

    def stop(self) -> None:
        """Stop both sshds and everything they forked, delete namespaces and veths. Idempotent."""
        _LIVE.pop(id(self), None)
        if self._rt is not None:
            self._rt.teardown(keep_base=os.environ.get("SCBSITE_KEEP") == "1")

    def __enter__(self) -> "TestSite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- client side helpers ----------------------------------------------------------------
    def ssh_options(self, known_hosts: Path | None = None) -> list[str]:
        return [
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "UpdateHostKeys=no",
            "ConnectTimeout=10",
        ]

    def write_ssh_config(
        self,
        path: Path,
        user: str,
        *,
        batch: bool = True,
        known_hosts: Path | None = None,
        extra: str = "",
    ) -> Path:
        """An ssh_config for `ssh -F path <prefix>-front` (ProxyJump through <prefix>-bastion).

        ssh hands -F on to the jump host's ssh, unlike -o options: put jump-host settings here.
        `extra` lines go under `Host *` (before the defaults, so they win).
        """
        u = self.users[user]
        ident = f"    IdentityFile {u.key}\n" if u.key else ""
        opts = "".join(f"    {o.replace('=', ' ', 1)}\n" for o in self.ssh_options(known_hosts))
        extra_lines = "".join(f"    {line.strip()}\n" for line in extra.splitlines() if line.strip())
        text = (
            f"Host {self.bastion_alias}\n"
            f"    HostName {self.bastion_host}\n    Port {self.bastion_port}\n    User {user}\n"
            f"{ident}    BatchMode yes\n"
            f"Host {self.front_alias}\n"
            f"    HostName {self.front_host}\n    Port {self.front_port}\n    User {user}\n"
            f"    ProxyJump {self.bastion_alias}\n{ident}"
            f"Host *\n{extra_lines}    IdentitiesOnly yes\n{opts}"
            f"    BatchMode {'yes' if batch else 'no'}\n"
            "    PasswordAuthentication no\n    LogLevel ERROR\n"
        )
        path.write_text(text)
        path.chmod(0o600)
        return path


# ----------------------------------------------------------------------------------------------
# building it


def prerequisites_missing() -> list[str]:
    """What the site needs from the system and does not find."""
    binaries = (SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/oathtool")
    missing = [p for p in binaries if not os.access(p, os.X_OK)]
    tools = ("ip", "useradd", "chpasswd", "sysctl")
    missing += [t for t in tools if shutil.which(t, path=_ENV["PATH"]) is None]
    if not _pam_module("pam_oath.so"):
        missing.append("pam_oath.so")
    if not _pam_module("pam_unix.so"):
        missing.append("pam_unix.so")
    return missing


def ensure_prerequisites(install: bool = True) -> None:
    missing = prerequisites_missing()
    if not missing:
        return
    if install and os.geteuid() == 0 and INSTALL_SCRIPT.exists():
        print(f"sitekit: missing {', '.join(missing)}; running {INSTALL_SCRIPT}", file=sys.stderr)
        p = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
        if p.returncode != 0:
            raise SiteUnavailable(f"{INSTALL_SCRIPT} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        missing = prerequisites_missing()
    if missing:
        raise SiteUnavailable(
            f"test site needs {', '.join(missing)}: run scripts/install-test-services.sh as root"
        )


def start_site(prefix: str = "scb", fronts: int = 1) -> TestSite:
    """Build and start the site; users are <prefix>otp, <prefix>otp2 (password+TOTP) and <prefix>key.

    One site per prefix at a time (a lock says so); different prefixes are independent.
    """
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError("prefix: a lowercase letter then at most 4 lowercase letters or digits")
    if os.geteuid() != 0:
        raise SiteUnavailable("the test site needs root (system users, PAM, network namespaces)")
    ensure_prerequisites()
    t0 = time.monotonic()
    lock_fd = _lock(f"/run/lock/scbsite-{prefix}.lock", wait=False)
    try:
        _sweep_stale(prefix)
        base = Path(tempfile.mkdtemp(prefix=f"{prefix}-site-{os.getpid()}-", dir="/tmp"))
    except BaseException:
        os.close(lock_fd)
        raise
    base.chmod(0o755)
    rt = _Runtime(prefix=prefix, base=base, lock_fd=lock_fd)
    try:
        site = _build(rt, prefix, fronts)
    except BaseException:
        rt.teardown(keep_base=True)
        raise
    site.start_seconds = time.monotonic() - t0
    _LIVE[id(site)] = site
    print(f"sitekit: {site.mode_note} (started in {site.start_seconds:.2f}s, base {base})", file=sys.stderr)
    return site


def site_fixture(scope: str = "session", prefix: str = "scb", name: str = "test_site") -> Callable:
    """A pytest fixture that yields a started TestSite and always stops it.

    Skips when not root; runs scripts/install-test-services.sh when packages are missing.
    Fixtures made by several conftest files for one prefix share one site (a prefix allows one
    live site at a time); the last one to finish stops it.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def _site(pytestconfig: pytest.Config) -> Iterator[TestSite]:
        if os.geteuid() != 0:
            pytest.skip("the ssh test site needs root")
        shared = _SHARED.get(prefix)
        if shared is not None and shared[0]._rt is not None and not shared[0]._rt.stopped:
            site, users = shared[0], shared[1] + 1  # another conftest's fixture started it
        else:
            site, users = start_site(prefix), 1
            reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
            capman = pytestconfig.pluginmanager.get_plugin("capturemanager")
            if reporter is not None and capman is not None:
                with capman.global_and_fixture_disabled():  # shown even under -q and capture
                    reporter.write_line(
                        f"\ntest site: {site.mode_note} (started in {site.start_seconds:.2f}s)"
                    )
        _SHARED[prefix] = (site, users)
        try:
            yield site
        finally:
            site_, left = _SHARED.pop(prefix, (site, 1))
            if left > 1:
                _SHARED[prefix] = (site_, left - 1)
            else:
                site.stop()

    return _site


def _build(rt: _Runtime, prefix: str, fronts: int = 1) -> TestSite:
    base = rt.base
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation chroot

    # -- network ---------------------------------------------------------------------------
    netns_note = _setup_netns(rt, prefix) if os.environ.get("SCBSITE_NETNS", "1") != "0" else None
    if isinstance(netns_note, tuple):
        namespaces = True
        ns_b, ns_f, bastion_host, front_host = netns_note
        extra = _extra_fronts(rt, prefix, ns_b, fronts - 1)  # (ns, host, bastion link, front link)
        bastion_port = front_port = 22
        note = (
            f"network namespaces: bastion {bastion_host}:22 -> front {front_host}:22 "
            "(front reachable only through the bastion)"
        )
    else:
        namespaces = False
        ns_b = ns_f = None
        bastion_host = front_host = "127.0.0.1"
        extra = []
        if fronts > 1:
            raise SiteUnavailable("several front ends need network namespaces")
        bastion_port, front_port = _free_port(), _free_port()
        why = "SCBSITE_NETNS=0" if netns_note is None else netns_note
        note = (
            f"NO network namespaces ({why}): loopback fallback, bastion 127.0.0.1:{bastion_port}, "
            f"front 127.0.0.1:{front_port} (the front is directly reachable)"
        )

    # -- users and keys --------------------------------------------------------------------
    for sub in ("keys", "hostkeys"):
        (base / sub).mkdir(mode=0o755)
    (base / "keys").chmod(0o700)
    # StrictModes walks up the *real* path of an authorized_keys file and refuses any group- or
    # world-writable directory, and /tmp is 1777: the files live in /run (root, 0755) and
    # <base>/authorized_keys is a symlink there, which sshd resolves before checking.
    RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    RUN_DIR.chmod(0o755)
    rt.run_dir = RUN_DIR / base.name
    rt.run_dir.mkdir(mode=0o755)
    ak_dir = rt.run_dir / "authorized_keys"
    ak_dir.mkdir(mode=0o755)
    (base / "authorized_keys").symlink_to(ak_dir)
    names = [f"{prefix}otp", f"{prefix}otp2", f"{prefix}key"]
    users: dict[str, SiteUser] = {}
    for name in names:
        otp = name != f"{prefix}key"
        users[name] = SiteUser(
            name=name,
            password=secrets.token_urlsafe(12) if otp else None,
            oath_secret=secrets.token_hex(20) if otp else None,
            key=_keygen(base / "keys" / name, f"{name}@{prefix}-site"),
        )
    _ensure_users(users)
    rt.uids = {pwd.getpwnam(n).pw_uid for n in names}
    for u in users.values():
        ak = base / "authorized_keys" / u.name
        ak.write_text(Path(f"{u.key}.pub").read_text())
        ak.chmod(0o644)
    oath = base / "users.oath"
    fd = os.open(oath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        for u in users.values():
            if u.oath_secret:
                f.write(f"HOTP/T{TOTP_STEP}/6\t{u.name}\t-\t{u.oath_secret}\n")

    # -- host keys, known_hosts ------------------------------------------------------------
    keys = {
        k: _keygen(base / "hostkeys" / k, f"{k}@{prefix}-site")
        for k in ("bastion", "front", "wrong-bastion", "wrong-front")
    }
    endpoints = [("bastion", bastion_host, bastion_port), ("front", front_host, front_port)]
    endpoints += [("front", e[1], front_port) for e in extra]  # more front ends: the same host key

    def known(prefix_: str, path: Path) -> Path:
        lines = []
        for role, host, port in endpoints:
            pub = Path(f"{keys[prefix_ + role]}.pub").read_text().split()
            hostname = host if port == 22 else f"[{host}]:{port}"
            lines.append(f"{hostname} {pub[0]} {pub[1]}\n")
        path.write_text("".join(lines))
        path.chmod(0o644)
        return path

    known_hosts = known("", base / "known_hosts")
    wrong_known_hosts = known("wrong-", base / "wrong_known_hosts")

    remote_root, permanent_root = base / "remote", base / "permanent"
    for d in (remote_root, permanent_root):
        d.mkdir()
        d.chmod(0o777)  # writable by every site user, sticky bit off

    # -- PAM services and sshd configs -----------------------------------------------------
    allow = " ".join(names)
    otp_names = ",".join(u.name for u in users.values() if u.oath_secret)
    _install_service(
        f"sshd-{prefix}front",
        "auth     required  pam_unix.so\n"
        f"auth     required  pam_oath.so usersfile={oath} window={OATH_WINDOW}\n"
        "account  required  pam_unix.so\n"
        "session  required  pam_unix.so\n"
        "password required  pam_deny.so\n",
        prefix,
    )
    _install_service(
        f"sshd-{prefix}bastion",
        "auth     required  pam_deny.so\n"  # publickey only: PAM never authenticates here
        "account  required  pam_unix.so\n"
        "session  required  pam_unix.so\n"
        "password required  pam_deny.so\n",
        prefix,
    )
    common = (
        "HostKey {hostkey}\nPidFile {pidfile}\nUsePAM yes\nMaxSessions 10\n"
        f"AuthorizedKeysFile {base}/authorized_keys/%u\nPermitRootLogin no\nStrictModes yes\n"
        f"AllowUsers {allow}\nPasswordAuthentication no\nPermitEmptyPasswords no\nUseDNS no\n"
        "PrintMotd no\nPrintLastLog no\nX11Forwarding no\nLogLevel VERBOSE\nPubkeyAuthentication yes\n"
    )
    cfgs = {
        "bastion": common.format(hostkey=keys["bastion"], pidfile=base / "bastion.pid")
        + f"ListenAddress {bastion_host}:{bastion_port}\n"
        "AuthenticationMethods publickey\nKbdInteractiveAuthentication no\n"
        f"AllowTcpForwarding local\nPermitOpen {' '.join(f'{h}:{front_port}' for h in [front_host, *(e[1] for e in extra)])}\nPermitTTY no\n"
        "AllowAgentForwarding no\n"
        'ForceCommand echo "this bastion only forwards ssh (ssh -J)"\n',
        "front": common.format(hostkey=keys["front"], pidfile=base / "front.pid")
        + f"ListenAddress {front_host}:{front_port}\n"
        "KbdInteractiveAuthentication yes\nAuthenticationMethods publickey\n"
        "Subsystem sftp internal-sftp\n"
        f"Match User {otp_names}\n    AuthenticationMethods keyboard-interactive\n",
    }
    for k, (_, host, _, _) in enumerate(extra, start=2):  # the same sshd as the first front, its own address
        cfgs[f"front{k}"] = cfgs["front"].replace(f"PidFile {base / 'front.pid'}", f"PidFile {base / f'front{k}.pid'}").replace(
            f"ListenAddress {front_host}:{front_port}", f"ListenAddress {host}:{front_port}")
    for role, text in cfgs.items():
        (base / f"{role}_config").write_text(text)
        ns = ns_b if role == "bastion" else ns_f if role == "front" else extra[int(role[5:]) - 2][0]
        exe = str(SBIN / f"sshd-{prefix}{'front' if role.startswith('front') else role}")
        _run([exe, "-t", "-f", str(base / f"{role}_config")])  # config errors show here, plainly
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [
            exe, "-D", "-e", "-f", str(base / f"{role}_config"), "-E", str(base / f"{role}.log")
        ]
        with open(base / f"{role}.stderr", "wb") as err:
            rt.procs[role] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_ENV,
                start_new_session=True, close_fds=True,
            )

    site = TestSite(
        base=base,
        bastion_host=bastion_host,
        bastion_port=bastion_port,
        front_host=front_host,
        front_port=front_port,
        namespaces=namespaces,
        users=users,
        known_hosts=known_hosts,
        wrong_known_hosts=wrong_known_hosts,
        remote_root=remote_root,
        permanent_root=permanent_root,
        mode_note=note,
        bastion_ns=ns_b,
        front_ns=ns_f,
        prefix=prefix,
        front_hosts=[front_host, *(e[1] for e in extra)],
        front_nss=[ns_f, *(e[0] for e in extra)],
        front_links=[(f"{prefix}{os.getpid()}-{rt.net_n}c", f"{prefix}{os.getpid()}-{rt.net_n}d"), *((e[2], e[3]) for e in extra)]
        if namespaces else [],
        _rt=rt,
    )
    for role in cfgs:
        _wait_listening(site, role)
    _wait_banner(site, bastion_host, bastion_port, None)
    for host in site.front_hosts:
        _wait_banner(site, host, front_port, ns_b)
    return site


def _extra_fronts(rt: _Runtime, prefix: str, ns_b: str, count: int) -> list[tuple[str, str, str, str]]:
    """``count`` more front ends behind the bastion: each a netns and a veth to the bastion
    (10.233.O.4k+1/30 <-> 10.233.O.4k+2/30, O the first front's octet); the root netns routes
    10.233.O.0/24 into the bastion (which drops it), as for the first front."""
    if count <= 0:
        return []
    pid, n, octet = os.getpid(), rt.net_n, rt.net_octet
    out = []
    for k in range(2, count + 2):
        ns = f"{prefix}-{pid}-{n}-front{k}"
        b_link, f_link = (f"{prefix}{pid}-{n}{x}" for x in "ghijkl"[2 * (k - 2): 2 * (k - 2) + 2])
        b_ip, f_ip = f"10.233.{octet}.{4 * k + 1}", f"10.233.{octet}.{4 * k + 2}"
        _run(["ip", "netns", "add", ns])
        rt.namespaces.append(ns)
        _run(["ip", "-n", ns_b, "link", "add", b_link, "type", "veth", "peer", "name", f_link, "netns", ns])
        _run(["ip", "-n", ns_b, "addr", "add", f"{b_ip}/30", "dev", b_link])
        _run(["ip", "-n", ns_b, "link", "set", b_link, "up"])
        for c in (["addr", "add", f"{f_ip}/30", "dev", f_link], ["link", "set", "lo", "up"], ["link", "set", f_link, "up"]):
            _run(["ip", "-n", ns, *c])
        out.append((ns, f_ip, b_link, f_link))
    _run(["ip", "route", "replace", f"10.233.{octet}.0/24", "via", f"10.231.{octet}.2"])
    return out


def _setup_netns(rt: _Runtime, prefix: str) -> tuple[str, str, str, str] | str:
    """Namespaces and veths; returns (bastion ns, front ns, bastion ip, front ip) or why not."""
    n = next(_counter) % 10
    pid = os.getpid()
    ns_b, ns_f = f"{prefix}-{pid}-{n}-bastion", f"{prefix}-{pid}-{n}-front"
    va, vb, vc, vd = (f"{prefix}{pid}-{n}{x}" for x in "abcd")  # <= 15 chars
    p = _run(["ip", "netns", "add", ns_b], check=False)
    if p.returncode != 0:
        return f"`ip netns add` failed: {p.stderr.strip() or p.returncode}"
    rt.namespaces.append(ns_b)
    net_lock = _lock("/run/lock/scbsite-net.lock", wait=True)  # octet choice vs. other starts
    try:
        _run(["ip", "netns", "add", ns_f])
        rt.namespaces.append(ns_f)
        octet = _free_octet()
        rt.net_n, rt.net_octet = n, octet
        h, b1 = f"10.231.{octet}.1", f"10.231.{octet}.2"
        b2, f2 = f"10.231.{octet + 1}.1", f"10.231.{octet + 1}.2"
        _run(["ip", "link", "add", va, "type", "veth", "peer", "name", vb])
        rt.host_links.append(va)
        _run(["ip", "link", "set", vb, "netns", ns_b])
        _run(["ip", "link", "add", vc, "type", "veth", "peer", "name", vd])
        rt.host_links.append(vc)
        _run(["ip", "link", "set", vc, "netns", ns_b])
        _run(["ip", "link", "set", vd, "netns", ns_f])
        _run(["ip", "addr", "add", f"{h}/24", "dev", va])
        _run(["ip", "link", "set", va, "up"])
        # The front subnet goes into the bastion (which drops it): a stray direct connect fails
        # at once and never follows the default route off this machine.
        _run(["ip", "route", "add", f"10.231.{octet + 1}.0/24", "via", b1, "dev", va])
        for ns, cmds in (
            (ns_b, [["addr", "add", f"{b1}/24", "dev", vb], ["addr", "add", f"{b2}/24", "dev", vc],
                    ["link", "set", "lo", "up"], ["link", "set", vb, "up"], ["link", "set", vc, "up"]]),
            (ns_f, [["addr", "add", f"{f2}/24", "dev", vd],
                    ["link", "set", "lo", "up"], ["link", "set", vd, "up"]]),
        ):
            for c in cmds:
                _run(["ip", "-n", ns, *c])
        _run(["ip", "netns", "exec", ns_b, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        v6 = "echo 0 > /proc/sys/net/ipv6/conf/all/forwarding"
        _run(["ip", "netns", "exec", ns_b, "sh", "-c", v6], check=False)
    except subprocess.CalledProcessError as e:
        for ns in rt.namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        for link in rt.host_links:
            _run(["ip", "link", "del", link], check=False)
        rt.namespaces.clear()
        rt.host_links.clear()
        return f"namespace setup failed: {' '.join(e.cmd)}: {(e.stderr or '').strip()}"
    finally:
        os.close(net_lock)
    return ns_b, ns_f, b1, f2


def route_front_to_host(site: TestSite, host_ip: str) -> str | None:
    """Let the front netns reach `host_ip`, an address of the root netns (the test Slurm's daemons,
    tests/slurmkit.py), and be reached back from it (slurmstepd connects to srun's ports).

    A veth root <-> front of its own (10.232.K.1/30 <-> 10.232.K.2/30) and, in the front netns,
    a /32 route to `host_ip` through it; the root netns gets only the connected /30. The front
    sshd listens on its bastion-side address alone, and the root netns still routes that address
    into the bastion, so ssh reaches the front end only through the bastion, as before.
    Idempotent per address; undone by stop() (the veth dies with the front netns). Returns the
    front's address on the link, or None in loopback mode (the front shares the root netns).
    """
    if not site.namespaces or site.front_ns is None or site._rt is None:
        return None
    if host_ip in site.host_routes:
        return site.host_routes[host_ip]
    m = re.fullmatch(rf"{re.escape(site.prefix)}-(\d+)-(\d)-front", site.front_ns)
    if m is None:
        raise RuntimeError(f"unexpected front netns name {site.front_ns}")
    pid, n = m.groups()
    root_link, front_link = f"{site.prefix}{pid}-{n}e", f"{site.prefix}{pid}-{n}f"  # <= 15 chars
    front_ip = next(iter(site.host_routes.values()), None)
    if front_ip is None:
        net_lock = _lock("/run/lock/scbsite-net.lock", wait=True)
        try:
            used = _run(["ip", "-4", "-o", "addr"]).stdout + _run(["ip", "-4", "route"]).stdout
            taken = {int(k) for k in re.findall(r"10\.232\.(\d+)\.", used)}
            k = next((k for k in range(1, 255) if k not in taken), None)
            if k is None:
                raise RuntimeError("no free 10.232.K.0/30 in the root network namespace")
            root_ip, front_ip = f"10.232.{k}.1", f"10.232.{k}.2"
            _run(["ip", "link", "add", root_link, "type", "veth", "peer", "name", front_link])
            site._rt.host_links.append(root_link)
            _run(["ip", "link", "set", front_link, "netns", site.front_ns])
            _run(["ip", "addr", "add", f"{root_ip}/30", "dev", root_link])
            _run(["ip", "link", "set", root_link, "up"])
            _run(["ip", "-n", site.front_ns, "addr", "add", f"{front_ip}/30", "dev", front_link])
            _run(["ip", "-n", site.front_ns, "link", "set", front_link, "up"])
        finally:
            os.close(net_lock)
    gateway = front_ip.rsplit(".", 1)[0] + ".1"
    route = ["route", "replace", f"{host_ip}/32", "via", gateway, "dev", front_link]
    _run(["ip", "-n", site.front_ns, *route])
    site.host_routes[host_ip] = front_ip
    return front_ip


def _free_octet() -> int:
    used = _run(["ip", "-4", "-o", "addr"]).stdout + _run(["ip", "-4", "route"]).stdout
    taken = {int(m) for m in re.findall(r"10\.231\.(\d+)\.", used)}
    start = (os.getpid() % 127) * 2 + 1
    for i in range(127):
        octet = (start - 1 + 2 * i) % 254 + 1
        if octet not in taken and octet + 1 not in taken:
            return octet
    raise RuntimeError("no free 10.231.x.0/24 pair in the root network namespace")


def _ensure_users(users: dict[str, SiteUser]) -> None:
    for name in users:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            _run(["useradd", "-m", "-s", "/bin/bash", "-c", "scbundle test site user", name])
        else:
            if pw.pw_shell != "/bin/bash":
                _run(["usermod", "-s", "/bin/bash", name])
    # the key user gets a random password too, never told: no locked account anywhere
    lines = "".join(f"{u.name}:{u.password or secrets.token_urlsafe(16)}\n" for u in users.values())
    _run(["chpasswd"], input=lines)


def _install_service(service: str, pam: str, prefix: str) -> None:
    """/usr/local/sbin/<service> -> /usr/sbin/sshd and /etc/pam.d/<service>, idempotently."""
    link = SBIN / service
    if not (link.is_symlink() and os.readlink(link) == SSHD):
        tmp = SBIN / f".{service}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(SSHD)
        tmp.replace(link)
    text = f"# scbundle test site ({prefix}): written by tests/sitekit.py, used only by {link}\n{pam}"
    pam_file = PAM_D / service
    if not pam_file.exists() or pam_file.read_text() != text:
        tmp = PAM_D / f".{service}.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(pam_file)


def _keygen(path: Path, comment: str) -> Path:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    path.chmod(0o600)
    return path


def _wait_listening(site: TestSite, role: str, timeout: float = 20) -> None:
    proc = site._rt.procs[role]
    log = site.log_path(role)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} sshd exited with {proc.returncode}\n{site.log_tail()}")
        if log.exists() and "Server listening on" in log.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{role} sshd not listening after {timeout}s\n{site.log_tail()}")


def _wait_banner(site: TestSite, host: str, port: int, ns: str | None, timeout: float = 10) -> None:
    """An SSH banner from host:port, seen from the root netns or from inside `ns`."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if ns is None:
            try:
                with socket.create_connection((host, port), timeout=2) as s:
                    s.settimeout(2)
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError as e:
                last = str(e)
        else:
            probe = f"exec 3<>/dev/tcp/{host}/{port}; head -c 4 <&3"
            p = _run(["ip", "netns", "exec", ns, "timeout", "3", "bash", "-c", probe], check=False)
            if p.stdout.startswith("SSH-"):
                return
            last = p.stderr.strip()
        time.sleep(0.05)
    where = f"netns {ns}" if ns else "root netns"
    raise RuntimeError(f"no ssh banner from {host}:{port} ({where}): {last}\n{site.log_tail()}")


# ----------------------------------------------------------------------------------------------
# processes, locks, leftovers


def _run(
    cmd: list[str], check: bool = True, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, input=input, capture_output=True, text=True, check=check, timeout=timeout, env=_ENV
    )


def _lock(path: str, wait: bool) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another test site holds {path}: stop it or use another prefix") from None
    return fd


def _pam_module(name: str) -> bool:
    dirs = [Path("/lib/security"), Path("/usr/lib/security"), *Path("/usr/lib").glob("*/security"),
            *Path("/lib").glob("*/security")]
    return any((d / name).exists() for d in dirs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_no_comm(comms: set[str], timeout: float) -> None:
    """Until no process (zombies included: init reaps orphans when it likes) has one of these names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if Path(f"/proc/{entry}/comm").read_text().strip() in comms:
                        left.append(int(entry))
                except OSError:
                    pass
        if not left:
            return
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.05)


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_netns_pids(ns: str) -> None:
    for _ in range(3):
        p = _run(["ip", "netns", "pids", ns], check=False)
        pids = [int(x) for x in p.stdout.split()]
        if not pids:
            return
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)


def _kill_uids(uids: set[int]) -> None:
    """Every process left running as a site user (their jobs must not outlive the site)."""
    if not uids:
        return
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid in uids:
                    _signal(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _sweep_stale(prefix: str) -> None:
    """Remove what an earlier, killed run with this prefix left behind (its pid is gone)."""
    dead = lambda pid: pid != os.getpid() and not _alive(pid)  # noqa: E731
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        m = re.match(rf"({re.escape(prefix)}-(\d+)-\d-(?:bastion|front\d?))\b", line)
        if m and dead(int(m.group(2))):
            _kill_netns_pids(m.group(1))
            _run(["ip", "netns", "del", m.group(1)], check=False)
    for link in os.listdir("/sys/class/net"):
        m = re.fullmatch(rf"{re.escape(prefix)}(\d+)-\d[a-dg-l]", link)
        if m and dead(int(m.group(1))):
            _run(["ip", "link", "del", link], check=False)
    for entry in os.listdir("/proc"):  # loopback-fallback sshds of a dead run
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].decode(errors="replace").startswith(str(SBIN / f"sshd-{prefix}")):
            m = re.search(rf"/tmp/{re.escape(prefix)}-site-(\d+)-".encode(), b" ".join(argv))
            if m and dead(int(m.group(1))):
                _signal(int(entry), signal.SIGKILL)
    for d in [*Path("/tmp").glob(f"{prefix}-site-*-*"), *RUN_DIR.glob(f"{prefix}-site-*-*")]:
        m = re.fullmatch(rf"{re.escape(prefix)}-site-(\d+)-.*", d.name)
        if m and dead(int(m.group(1))) and (d.parent == RUN_DIR or os.environ.get("SCBSITE_KEEP") != "1"):
            shutil.rmtree(d, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for site in list(_LIVE.values()):
        try:
            site.stop()
        except Exception as e:  # pragma: no cover - best effort at exit
            print(f"sitekit: stopping a site at exit failed: {e}", file=sys.stderr)
