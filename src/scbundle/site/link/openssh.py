"""The OpenSSH link: one human-authenticated ControlMaster per front end, reused by every process.

Pure parts build the ssh client configuration and command lines; ``OpenSshLink`` is the thin
layer that starts, checks and stops masters; ``OpenSshTransport`` runs every remote operation
over the master with BatchMode, so nothing ever prompts or hangs when the link is down.

Two generated ssh config files per site and user (no secrets in them): the interactive one,
used by ``link start`` so the person sees the site's prompts, and the batch one (BatchMode
yes for the front end and the bastion hop alike: command-line ``-o`` options do not reach a
ProxyJump host, a config file does).
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from scbundle.core.config import CONTROL_NAME, Site, SshSettings
from scbundle.core.errors import ConfigError, HostKeyError, LinkDownError, ScbundleError
from scbundle.core.private import open_private, private_dir, shared_dir
from scbundle.core.text import printable
from scbundle.site.hosts import usable_indices
from scbundle.site.link.base import ProcessTransport, Transport

_SAFE_VALUE = re.compile(r"^[^\s\"'\\#]+$")
_MASTER_PID = re.compile(r"Master running \(pid=(\d+)\)")


@dataclass(frozen=True)
class UserSettings:
    user: str
    identity: str | None
    bastion_user: str
    bastion_identity: str | None


def user_settings(ssh: SshSettings, user: str | None) -> UserSettings:
    name = user or ssh.user
    if name == ssh.user:
        return UserSettings(name, ssh.identity, ssh.bastion_user or name, ssh.bastion_identity or ssh.identity)
    extra = ssh.users.get(name)
    if extra is None:
        raise ConfigError(f"user {name!r} has no settings: add [sites.<site>.ssh.users.{name}] (known: {', '.join([ssh.user, *ssh.users])})")
    ident = extra.identity
    return UserSettings(name, ident, extra.bastion_user or name, extra.bastion_identity or ident)


def host_alias(site_name: str, index: int) -> str:
    return f"scb-{site_name}-{index}"


def bastion_alias(site_name: str) -> str:
    return f"scb-{site_name}-bastion"


def _value(key: str, value: object) -> str:
    text = str(value)
    if not _SAFE_VALUE.match(text):
        raise ConfigError(f"ssh setting {key} = {text!r}: spaces, quotes and # cannot go in an ssh config here")
    return text


def host_key_checking(ssh: SshSettings) -> str:
    """ssh's StrictHostKeyChecking for both hops: ``yes``, or ``accept-new`` when the setting is
    false (an unknown host key is trusted and recorded without asking; a changed one is refused)."""
    return "yes" if ssh.strict_host_key_checking else "accept-new"


def host_key_warning(site_name: str, ssh: SshSettings) -> str | None:
    """What `link check` says when host keys are not checked strictly; None when they are."""
    if ssh.strict_host_key_checking:
        return None
    hops = f"the bastion {ssh.bastion} and the front end(s)" if ssh.bastion else "the front end(s)"
    return (f"warning: site {site_name}: strict_host_key_checking = false means StrictHostKeyChecking accept-new on {hops}:"
            f" a host key not yet in {ssh.known_hosts} is accepted and recorded without asking (a changed key is still refused)")


def render_ssh_config(site_name: str, ssh: SshSettings, user: str | None, *, batch: bool) -> str:
    """The ssh_config text for one site and user: a Host block per front end (+ the bastion)."""
    u = user_settings(ssh, user)
    strict = host_key_checking(ssh)
    common = [
        ("UserKnownHostsFile", ssh.known_hosts),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", strict),
        ("ConnectTimeout", ssh.connect_timeout),
        ("ServerAliveInterval", ssh.server_alive_interval),
        ("ServerAliveCountMax", 3),
        ("LogLevel", "ERROR"),
    ]
    if batch:
        common.append(("BatchMode", "yes"))
    lines = [f"# scbundle: site {site_name}, user {u.user}, {'batch' if batch else 'interactive'}; no secrets here", ""]
    if ssh.bastion:
        lines.append(f"Host {bastion_alias(site_name)}")
        opts = [("HostName", ssh.bastion), ("Port", ssh.bastion_port), ("User", u.bastion_user), ("ControlMaster", "no"), ("ControlPath", "none")]
        if u.bastion_identity:
            opts += [("IdentityFile", u.bastion_identity), ("IdentitiesOnly", "yes")]
        lines += [f"  {k} {_value(k, v)}" for k, v in opts + common] + [""]
    for i, host in enumerate(ssh.hosts):
        lines.append(f"Host {host_alias(site_name, i)}")
        opts = [("HostName", host), ("Port", ssh.port), ("User", u.user), ("ControlPath", f"{ssh.control_dir}/{CONTROL_NAME}"), ("ControlMaster", "no")]
        if ssh.bastion:
            opts.append(("ProxyJump", bastion_alias(site_name)))
        if u.identity:
            opts += [("IdentityFile", u.identity), ("IdentitiesOnly", "yes")]
        lines += [f"  {k} {_value(k, v)}" for k, v in opts + common] + [""]
    return "\n".join(lines)


def master_start_argv(conf: str, alias: str) -> list[str]:
    # -f: into the background once authenticated; -N: no command; the master lives until -O exit.
    # Not ControlPersist: with it, ssh sends the ProxyJump child's stderr to /dev/null, and a
    # bastion's "Host key verification failed" would never reach the person.
    return ["ssh", "-F", conf, "-f", "-N", "-o", "ControlMaster=yes", alias]


def master_ctl_argv(conf: str, alias: str, op: str, relay: str | None = None) -> list[str]:
    """``ssh -O op``; ``relay``: a shared link's member reaches the master through its relay."""
    return ["ssh", "-F", conf, *(["-o", f"ControlPath={relay}"] if relay else []), "-O", op, alias]


def relay_path(socket_path: str) -> str:
    """A shared master's relay socket, beside the master's own (core/config.py counts it in)."""
    return socket_path + ".g"


def parse_master_pid(stderr: str) -> int | None:
    m = _MASTER_PID.search(stderr)
    return int(m.group(1)) if m else None


def remote_command(argv: Sequence[str]) -> str:
    """One string for the remote login shell; every word quoted, so it arrives as one argument."""
    return shlex.join(argv)


def classify_ssh_failure(site_name: str, returncode: int, stderr: str) -> ScbundleError | None:
    """ssh exits 255 for its own failures; name the ones an operator acts on differently."""
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return HostKeyError(f"site {site_name}: host key verification failed, nothing sent (check the known-hosts file): {_tail(stderr)}")
    if returncode == 255:
        return LinkDownError(f"link to site {site_name} is down or needs a person: run `scbundle link start {site_name}` ({_tail(stderr)})")
    return None


def _tail(text: str) -> str:
    """The last lines of ssh's stderr, which carries the site's own text (banners, the remote
    command's stderr): one printable line."""
    return printable(" | ".join(line.strip() for line in text.strip().splitlines()[-3:] if line.strip()))


@dataclass(frozen=True)
class MasterStatus:
    site: str
    host: str
    alias: str
    user: str
    up: bool
    pid: int | None
    since: float | None  # epoch seconds
    age_s: float | None
    left_s: float | None  # before the site's configured drop

    @property
    def warn(self) -> bool:
        return self.up and self.left_s is not None and self.left_s < 3600


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class OpenSshLink:
    """Masters of one site, their control directory, the active user."""

    def __init__(self, site_name: str, site: Site) -> None:
        if site.ssh is None:
            raise ConfigError(f"site {site_name!r} has no ssh settings")
        self.site_name = site_name
        self.site = site
        self.ssh: SshSettings = site.ssh
        self.dir = Path(self.ssh.control_dir)
        self.host = socket.gethostname()  # %l: each local host its own masters on a shared home
        self._relays: dict[str, str] = {}

    # -- a shared link: the operator's masters, ridden by a local group ---------------------
    @property
    def shared_ids(self) -> tuple[int, int] | None:
        """(operator uid, group gid) of a shared link; None for a link of one's own."""
        sh = self.ssh.shared
        if sh is None:
            return None
        try:
            uid = pwd.getpwnam(sh.operator).pw_uid
        except KeyError:
            raise ConfigError(f"site {self.site_name}: shared.operator {sh.operator!r} is no local user on {self.host}") from None
        try:
            gid = grp.getgrnam(sh.group).gr_gid
        except KeyError:
            raise ConfigError(f"site {self.site_name}: shared.group {sh.group!r} is no local group on {self.host} (groupadd {sh.group})") from None
        return uid, gid

    @property
    def rider(self) -> bool:
        """A group member of a shared link (not its operator): rides the masters, never makes them."""
        ids = self.shared_ids
        return ids is not None and os.geteuid() != ids[0]

    def _operator_only(self, what: str) -> None:
        if self.rider:
            sh = self.ssh.shared
            assert sh is not None
            how = f"scbundle link switch-user --site {self.site_name} NAME" if what == "switch-user" else f"scbundle link {what} {self.site_name}"
            raise ScbundleError(f"site {self.site_name}: the link is shared and its masters belong to {sh.operator}: only {sh.operator} can {what}"
                                f" (as {sh.operator}: `{how}`, or `sudo -u {sh.operator} -i ops/maintain-link`; see ops/RUNBOOK.md)")

    # -- files in the control directory ---------------------------------------------------
    def ensure_dir(self) -> None:
        """The control directory holds the configs ssh reads with ``-F`` (ssh checks neither
        their owner nor their mode, only ~/.ssh/config's) and the master's socket: it must be a
        place only the operator can change, checked without following links before every use
        (core/private.py: not a link, yours, 0700, every directory on the way yours or root's
        and not writable by others unless sticky).

        A shared link's directory is the operator's, mode 2750, group the shared group: its
        members read the configs and reach the relay's socket, nobody but the operator can put
        or replace anything in it. A member checks it (the operator's directories trusted on
        the way) and must be in the group."""
        ids = self.shared_ids
        what = f"site {self.site_name}: control directory"
        if ids is None:
            private_dir(self.dir, what=what)
            return
        uid, gid = ids
        if os.geteuid() != uid and os.geteuid() != 0 and gid not in os.getgroups() and os.getegid() != gid:
            me = pwd.getpwuid(os.geteuid()).pw_name
            sh = self.ssh.shared
            assert sh is not None
            raise ScbundleError(f"site {self.site_name}: the link is shared with the local group {sh.group}, and you ({me}) are not in it:"
                                f" ask {sh.operator} or an admin (`usermod -aG {sh.group} {me}`, then log in again), or use a site of your own")
        shared_dir(self.dir, what=what, owner=uid, gid=gid)

    @property
    def _user_file(self) -> Path:
        return self.dir / f"{self.site_name}.user"

    def active_user(self) -> str:
        try:
            name = self._user_file.read_text().strip()
        except OSError:
            return self.ssh.user
        return name or self.ssh.user

    def switch_user(self, name: str) -> None:
        user_settings(self.ssh, name)  # refuse an unknown user
        self._operator_only("switch-user")
        self.ensure_dir()
        self._write(self._user_file, name + "\n")
        self.write_configs()

    def _write(self, path: Path, text: str) -> None:
        """Replace one file of the control directory at once (0600; 0640 in a shared one)."""
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".conf.")
        with os.fdopen(fd, "w") as f:
            if self.ssh.shared is not None:
                os.fchmod(f.fileno(), 0o640)
            f.write(text)
        os.replace(tmp, path)

    def conf_path(self, *, batch: bool) -> Path:
        return self.dir / f"{self.site_name}.{self.active_user()}.{'batch' if batch else 'interactive'}.conf"

    def write_configs(self) -> None:
        self.ensure_dir()
        user = self.active_user()
        if self.rider:  # the operator's configs, in the operator's directory: read, never written
            path = self.conf_path(batch=True)
            if not path.is_file():
                raise LinkDownError(f"site {self.site_name}: no {path.name} in the shared control directory {self.dir} yet: the operator starts the link (`scbundle link start {self.site_name}`)")
            return
        for batch in (True, False):
            text = render_ssh_config(self.site_name, self.ssh, user, batch=batch)
            path = self.conf_path(batch=batch)
            if not path.exists() or path.read_text() != text:
                self._write(path, text)

    def _started_file(self, index: int) -> Path:
        return self.dir / f"{self.site_name}.{index}.{self.active_user()}.{self.host}.started"

    # -- master operations ----------------------------------------------------------------
    def check_one(self, index: int) -> MasterStatus:
        self.write_configs()
        alias = host_alias(self.site_name, index)
        relay = self.relay_for(alias) if self.rider else None
        p = subprocess.run(master_ctl_argv(str(self.conf_path(batch=True)), alias, "check", relay), capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)  # fmt: skip
        pid = parse_master_pid(p.stderr) if p.returncode == 0 else None
        since = None
        if pid is not None:
            try:
                info = json.loads(self._started_file(index).read_text())
                since = float(info["started"]) if info.get("pid") == pid else None
            except (OSError, ValueError, KeyError):
                since = None
            if since is None:
                try:
                    since = psutil.Process(pid).create_time()
                except psutil.Error:
                    since = None
        now = time.time()
        age = now - since if since is not None else None
        left = self.site.drop_hours * 3600 - age if age is not None else None
        return MasterStatus(self.site_name, self.ssh.hosts[index], alias, self.active_user(), pid is not None, pid, since, age, left)

    def check(self) -> list[MasterStatus]:
        return [self.check_one(i) for i in range(len(self.ssh.hosts))]

    def transfer_hosts(self, off: Collection[str] = ()) -> list[int]:
        """The hosts (indices into ssh.hosts) a transfer may use: in service (not in ``off``,
        `link host off`) and with their master up. The one place that choice is made."""
        return usable_indices(self.ssh.hosts, off, lambda i: self.check_one(i).up)

    def up_alias(self, off: Collection[str] = ()) -> str | None:
        """The first front end in service (not in ``off``, `link host off`) whose master is up."""
        for i in usable_indices(self.ssh.hosts, off, lambda i: self.check_one(i).up)[:1]:
            return host_alias(self.site_name, i)
        return None

    def start(self, index: int) -> MasterStatus:
        """Start one master in the foreground: the site's prompts go to the person's terminal
        (ssh reads them from /dev/tty), then ssh puts the master in the background."""
        self._operator_only("start")
        status = self.check_one(index)
        if status.up:
            self._ensure_relay(index, status)
            return status
        alias = host_alias(self.site_name, index)
        self._remove_stale_socket(alias)
        with tempfile.TemporaryFile(dir=self.dir) as errf:
            # SIGHUP ignored (like nohup), inherited by the ProxyJump `ssh -W` child that stays in
            # this terminal's session: closing the terminal must not cut the master's connection
            p = subprocess.run(
                master_start_argv(str(self.conf_path(batch=False)), alias),
                stderr=errf,
                stdin=None if sys.stdin.isatty() else subprocess.DEVNULL,
                preexec_fn=_ignore_sighup,
            )
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace")
        if err.strip():
            sys.stderr.write(printable(err, multiline=True))
        if p.returncode != 0:
            raise classify_ssh_failure(self.site_name, 255, err) or LinkDownError(f"link start for {alias} failed: {_tail(err)}")
        status = self.check_one(index)
        if not status.up or status.pid is None:
            raise LinkDownError(f"ssh returned but no master answers for {alias}: {_tail(err)}")
        started = {"pid": status.pid, "started": time.time(), "user": self.active_user(), "host": self.ssh.hosts[index]}
        self._write(self._started_file(index), json.dumps(started))
        self._ensure_relay(index, status)
        return self.check_one(index)

    # -- the relay of a shared master (site/link/relay.py) ----------------------------------
    def relay_for(self, alias: str) -> str:
        if alias not in self._relays:
            path = self.socket_path(alias)
            if path is None:
                raise LinkDownError(f"site {self.site_name}: ssh names no ControlPath for {alias}")
            self._relays[alias] = relay_path(str(path))
        return self._relays[alias]

    def _ensure_relay(self, index: int, status: MasterStatus) -> None:
        """The operator's up master of a shared link gets its relay (started once, detached;
        it ends with the master)."""
        ids = self.shared_ids
        if ids is None or status.pid is None:
            return
        alias = host_alias(self.site_name, index)
        master = self.socket_path(alias)
        if master is None:
            return
        path = relay_path(str(master))
        if _answers(path):
            return
        for n in range(self.ssh.max_sessions):  # the members lock these read-only: made here
            os.close(self._open_slot(self._slot_name(n, index)))
        from scbundle.site.link import relay

        subprocess.Popen([sys.executable, "-I", relay.__file__, str(master), path, str(ids[1]), str(status.pid)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers(path):
            if time.monotonic() > deadline:
                raise LinkDownError(f"site {self.site_name}: the shared link's relay {path} did not come up for {alias}; group members cannot ride it")
            time.sleep(0.05)

    def socket_path(self, alias: str) -> Path | None:
        """The ControlPath ssh will use for ``alias`` (``ssh -G`` expands %C)."""
        p = subprocess.run(["ssh", "-G", "-F", str(self.conf_path(batch=True)), alias], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        for line in p.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "controlpath" and value and value != "none":
                return Path(value)
        return None

    def _remove_stale_socket(self, alias: str) -> None:
        """A master killed hard leaves its socket; a new master would refuse to replace it."""
        path = self.socket_path(alias)
        if path is None or path.parent != self.dir:
            return
        self.ensure_dir()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
            path.unlink()

    def stop(self) -> list[MasterStatus]:
        self._operator_only("stop")
        out = []
        for i in range(len(self.ssh.hosts)):
            alias = host_alias(self.site_name, i)
            if self.check_one(i).up:
                subprocess.run(master_ctl_argv(str(self.conf_path(batch=True)), alias, "exit"), capture_output=True, timeout=30)
            self._started_file(i).unlink(missing_ok=True)
            out.append(self.check_one(i))
        return out

    # -- a cross-process cap on sessions over the master ----------------------------------
    def _slot_name(self, n: int, host: int | None) -> str:
        """Slot ``n`` of host ``host``'s master (host 0 keeps the names of the one-host days)."""
        return f"{self.site_name}.slot.{n}" if not host else f"{self.site_name}.h{host}.slot.{n}"

    def _open_slot(self, name: str) -> int:
        """One session slot file, for flock. A shared link's are the operator's, 0640: its
        members lock them read-only, so every user's sessions count against one master."""
        path = self.dir / name
        ids = self.shared_ids
        if ids is None:
            return open_private(path, what="session slot file")
        mine = os.geteuid() == ids[0]
        try:
            fd = os.open(path, (os.O_RDWR | os.O_CREAT if mine else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
        except FileNotFoundError:
            raise LinkDownError(f"site {self.site_name}: no session slot files in the shared control directory {self.dir} yet: the operator starts the link (`scbundle link start {self.site_name}`)") from None
        except OSError as err:
            raise ScbundleError(f"session slot file {path}: cannot open it: {err.strerror} (a symbolic link is refused)") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != ids[0] or st.st_nlink > 1:
            os.close(fd)
            raise ScbundleError(f"session slot file {path} is not a plain file of the shared link's operator: refused; remove it")
        if mine and stat.S_IMODE(st.st_mode) != 0o640:
            os.fchmod(fd, 0o640)
        return fd

    @contextmanager
    def session_slot(self, timeout: float = 600.0, host: int | None = None) -> Iterator[int]:
        """Hold one of ``max_sessions`` slots (flock'ed files shared by every scbundle process):
        past sshd's MaxSessions, ssh would silently open a new connection needing the OTP.
        MaxSessions is per connection: a transport pinned to host ``host`` > 0 (the fan-out)
        counts its sessions in that host's own slots."""
        self.ensure_dir()
        deadline = time.monotonic() + timeout
        while True:
            for n in range(self.ssh.max_sessions):
                fd = self._open_slot(self._slot_name(n, host))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                try:
                    yield n
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
                return
            if time.monotonic() > deadline:
                raise LinkDownError(f"no free session slot on the link to {self.site_name} after {timeout:g} s")
            time.sleep(0.05)


def _answers(path: str) -> bool:
    """Something listens on the unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class OpenSshTransport(ProcessTransport):
    """Every operation rides the master: ControlMaster=no (never become one), BatchMode=yes."""

    def __init__(self, site_name: str, site: Site, off: Collection[str] = ()) -> None:
        super().__init__(site_name)
        self.link = OpenSshLink(site_name, site)
        self.off = frozenset(off)  # front ends out of service: never used
        self._alias: str | None = None
        self._pinned: int | None = None

    def link_up(self) -> bool:
        if self._pinned is not None:
            return self.link.check_one(self._pinned).up
        self._alias = self.link.up_alias(self.off)
        return self._alias is not None

    def pinned(self, index: int) -> OpenSshTransport:
        """A transport that rides host ``index``'s master only (its invocations counted apart)."""
        t = OpenSshTransport(self.site_name, self.link.site, self.off)
        t._alias, t._pinned = host_alias(self.site_name, index), index
        return t

    def transfer_transports(self) -> list[Transport]:
        hosts = self.link.transfer_hosts(self.off)
        return [self.pinned(i) for i in hosts] or [self]

    def _command(self, argv: Sequence[str]) -> list[str]:
        alias = self._alias or self.link.up_alias(self.off) or host_alias(self.site_name, 0)
        self.link.write_configs()
        if self.link.rider:  # through the operator's relay: this user's own ssh speaks the channels (-O proxy)
            relay = self.link.relay_for(alias)
            return ["ssh", "-F", str(self.link.conf_path(batch=True)), "-o", f"ControlPath={relay}", "-O", "proxy", "-T", alias, remote_command(argv)]
        return ["ssh", "-F", str(self.link.conf_path(batch=True)), "-T", alias, remote_command(argv)]

    def _slot(self):  # type: ignore[override]
        return self.link.session_slot(host=self._pinned)

    def _classify(self, argv: Sequence[str], returncode: int, stderr: bytes) -> Exception:
        err = stderr.decode("utf-8", "replace")
        known = classify_ssh_failure(self.site_name, returncode, err)
        return known or super()._classify(argv, returncode, stderr)
