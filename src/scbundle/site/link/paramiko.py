"""The paramiko transport (through fabric, whose gateway reaches the front end via the bastion),
for sites that allow key logins: no typed secret, so no master and no `link start`.

paramiko cannot attach to an OpenSSH ControlMaster; a site that needs a person to type a
one-time code uses the OpenSSH link instead. Same three verbs as every transport, same
host-key policy: the configured known-hosts file, unknown or changed keys refused.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import IO

import paramiko
from fabric import Config as FabricConfig
from fabric import Connection

from scbundle.core.config import Site
from scbundle.core.errors import ConfigError, HostKeyError, LinkDownError
from scbundle.site.link.base import (
    EXIT_GRACE,
    LEFTOVER_MAX,
    STDERR_KEEP,
    STDOUT_MAX,
    Completed,
    Transport,
    WatchedStream,
    command_failure,
    consumer_failure,
    drain_capped,
    output_cap,
    too_large,
)
from scbundle.site.link.openssh import remote_command, user_settings

_CHUNK = 1 << 16


class _ChannelWriter:
    """A file-like sink over a channel's stdin, for tar streams."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self.chan = chan

    def write(self, data: bytes) -> int:
        self.chan.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


def _drain(chan_recv: Callable[[int], bytes], sink: bytearray, keep: int | None) -> None:
    while True:
        chunk = chan_recv(_CHUNK)
        if not chunk:
            return
        sink.extend(chunk)
        if keep is not None and len(sink) > keep:
            del sink[: len(sink) - keep]


class ParamikoTransport(Transport):
    def __init__(self, site_name: str, site: Site, off: Collection[str] = ()) -> None:
        super().__init__(site_name)
        if site.ssh is None:
            raise ConfigError(f"site {site_name!r} has no ssh settings")
        self.ssh = site.ssh
        self.off = frozenset(off)  # front ends out of service (`link host off`): never used
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(self.ssh.max_sessions)

    # -- connection -----------------------------------------------------------------------
    def _client_setup(self, conn: Connection) -> None:
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.client.load_host_keys(self.ssh.known_hosts)
        except OSError as err:
            raise ConfigError(f"site {self.site_name}: cannot read known-hosts file {self.ssh.known_hosts}: {err.strerror}") from None

    def _connection(self) -> Connection:
        with self._lock:
            if self._conn is not None and self._conn.is_connected:
                return self._conn
            u = user_settings(self.ssh, None)
            usable = [h for h in self.ssh.hosts if h not in self.off]
            if not usable:
                raise LinkDownError(f"site {self.site_name}: every front end is out of service (`scbundle link host on NAME`)")
            cfg = FabricConfig(overrides={"load_ssh_configs": False})
            gateway = None
            if self.ssh.bastion:
                gateway = Connection(
                    self.ssh.bastion, user=u.bastion_user, port=self.ssh.bastion_port, config=cfg,
                    connect_timeout=self.ssh.connect_timeout,
                    connect_kwargs={"key_filename": u.bastion_identity, "look_for_keys": u.bastion_identity is None, "allow_agent": False},
                )  # fmt: skip
                self._client_setup(gateway)
            conn = Connection(
                usable[0], user=u.user, port=self.ssh.port, config=cfg, gateway=gateway,
                connect_timeout=self.ssh.connect_timeout,
                connect_kwargs={"key_filename": u.identity, "look_for_keys": u.identity is None, "allow_agent": False},
            )  # fmt: skip
            self._client_setup(conn)
            try:
                conn.open()
            except paramiko.BadHostKeyException as err:
                raise HostKeyError(f"site {self.site_name}: host key of {err.hostname} does not match {self.ssh.known_hosts}; nothing sent") from None
            except paramiko.SSHException as err:
                if "not found in known_hosts" in str(err):
                    raise HostKeyError(f"site {self.site_name}: {err} ({self.ssh.known_hosts}); nothing sent") from None
                raise LinkDownError(f"link to site {self.site_name} failed: {err}") from None
            except (OSError, socket.timeout, EOFError) as err:
                raise LinkDownError(f"link to site {self.site_name} failed: {err}") from None
            if self.ssh.server_alive_interval:
                conn.transport.set_keepalive(self.ssh.server_alive_interval)
            self._conn = conn
            return conn

    def link_up(self) -> bool:
        try:
            self._connection()
        except LinkDownError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                gw = self._conn.gateway
                self._conn.close()
                if isinstance(gw, Connection):
                    gw.close()
                self._conn = None

    def _open(self, argv: Sequence[str]) -> paramiko.Channel:
        conn = self._connection()
        for attempt in range(40):
            try:
                chan = conn.transport.open_session(timeout=self.ssh.connect_timeout)
                chan.exec_command(remote_command(argv))
                return chan
            except (paramiko.SSHException, OSError, EOFError) as err:
                if conn.transport is None or not conn.transport.is_active():
                    self.close()
                    raise LinkDownError(f"link to site {self.site_name} dropped: {err}") from None
                # the connection is up but refused this one session (sshd's MaxSessions still
                # counts sessions we have just closed): wait a little and ask again
                last = err
                time.sleep(min(0.5, 0.05 * (attempt + 1)))
        raise LinkDownError(f"site {self.site_name} keeps refusing new sessions: {last}")

    def _finish(self, argv: Sequence[str], chan: paramiko.Channel, out: bytes, err: bytearray, check: bool) -> Completed:
        rc = chan.recv_exit_status()
        chan.close()
        if rc == -1:  # the connection went away before an exit status came
            self.close()
            raise LinkDownError(f"link to site {self.site_name} dropped during {argv[0] if argv else 'a command'}")
        done = Completed(tuple(argv), rc, out, bytes(err))
        if check and rc != 0:
            raise command_failure(self.site_name, argv, rc, done.stderr)
        return done

    # -- the three verbs -------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True, timeout: float | None = None) -> Completed:
        self.invocations += 1
        return self._feed(argv, lambda w: w.write(input) if input else None, check, timeout, output_cap(input))

    def stream_in(self, argv: Sequence[str], producer: Callable[[IO[bytes]], None], *, check: bool = True) -> Completed:
        self.invocations += 1
        return self._feed(argv, producer, check, None, STDOUT_MAX)

    def _feed(self, argv: Sequence[str], producer: Callable[[IO[bytes]], object], check: bool, timeout: float | None, cap: int) -> Completed:
        """Run ``argv``, ``producer`` writing its stdin, stdout (up to ``cap`` bytes: past it the
        channel is closed, OversizeError) and stderr's tail collected."""
        with self._sessions:
            chan = self._open(argv)
            if timeout is not None:
                chan.settimeout(timeout)
            out, err = bytearray(), bytearray()
            over = threading.Event()

            def too_much() -> None:
                over.set()
                chan.close()

            threads = [
                threading.Thread(target=drain_capped, args=(chan.recv, out, cap, too_much), daemon=True),
                threading.Thread(target=_drain, args=(chan.recv_stderr, err, STDERR_KEEP), daemon=True),
            ]
            for t in threads:
                t.start()
            try:
                producer(_ChannelWriter(chan))  # type: ignore[arg-type]
            except OSError:
                pass  # the far side ended early; its exit status and stderr say why
            try:
                chan.shutdown_write()
            except OSError:
                pass
            for t in threads:
                t.join()
            if over.is_set():
                raise too_large(self.site_name, argv, cap)
            return self._finish(argv, chan, bytes(out), err, check)

    def stream_out(self, argv: Sequence[str], consumer: Callable[[IO[bytes]], None], *, input: bytes = b"", check: bool = True) -> Completed:
        self.invocations += 1
        with self._sessions:
            chan = self._open(argv)
            err = bytearray()
            t_err = threading.Thread(target=_drain, args=(chan.recv_stderr, err, STDERR_KEEP), daemon=True)
            t_err.start()

            def feed() -> None:
                try:
                    if input:
                        chan.sendall(input)
                    chan.shutdown_write()
                except OSError:
                    pass

            t_in = threading.Thread(target=feed, daemon=True)
            t_in.start()
            raw = chan.makefile("rb", _CHUNK)
            stream = WatchedStream(raw)  # type: ignore[arg-type]
            failure: BaseException | None = None
            try:
                consumer(stream)  # type: ignore[arg-type]
            except BaseException as exc:
                failure = exc
            if failure is None:  # what the consumer left (a tar's end padding): a little, then the end
                rest = raw.read(LEFTOVER_MAX + 1)
                if len(rest) > LEFTOVER_MAX or raw.read(1):
                    failure = too_large(self.site_name, argv, LEFTOVER_MAX, "after the end of what was read")
            rc: int | None = None
            if failure is not None:
                if stream.eof and not isinstance(failure, KeyboardInterrupt) and chan.status_event.wait(EXIT_GRACE):
                    rc = chan.recv_exit_status()  # it ended by itself: its own exit status
                chan.close()
            t_in.join()
            t_err.join()
            if failure is not None:
                if isinstance(failure, KeyboardInterrupt):
                    raise failure
                local = consumer_failure(self.site_name, failure)
                if local is not None:  # a full local disk outranks whatever the site did next
                    raise local from (None if local is failure else failure)
                if rc == -1:  # the connection went away: the stream was cut by the drop
                    self.close()
                    raise LinkDownError(f"link to site {self.site_name} dropped during {argv[0] if argv else 'a command'}") from failure
                if rc is not None and rc != 0 and check:  # it failed by itself: its words explain the stream
                    raise command_failure(self.site_name, argv, rc, bytes(err)) from failure
                raise failure
            return self._finish(argv, chan, b"", err, check)
