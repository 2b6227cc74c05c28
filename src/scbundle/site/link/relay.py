"""A shared link's relay: the members of one local group ride the operator's master.

OpenSSH's master accepts on its socket only its own uid and root (channels.c, "multiplex uid
mismatch"), whatever the socket's mode, so a group member cannot connect to it directly. The
relay runs as the operator, beside the master: it listens on ``<ControlPath>.g`` (mode 0660,
the shared group, in the operator's 2750 control directory) and joins each connection of a
group member to the master. It lets through only what a ride needs:

- the hello, and ``ssh -O check`` (MUX_C_ALIVE_CHECK);
- ``ssh -O proxy`` (MUX_C_PROXY): the member's own ssh then speaks the SSH channels over the
  master's connection, so its stdin/stdout, its port forwards and its files stay the member's.

Anything else is answered "permission denied" and the connection closed: a session that hands
the master the member's file descriptors, a forward the master would open on this host as the
operator, ``-O exit`` / ``-O stop``. The relay ends when the master does (or its socket is
replaced). Standard library only; started as a script: ``python3 -I relay.py MASTER RELAY GID PID``.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import socket
import struct
import sys
import threading

MUX_MSG_HELLO = 0x00000001
MUX_C_ALIVE_CHECK = 0x10000004
MUX_C_PROXY = 0x1000000F
MUX_S_PERMISSION_DENIED = 0x80000002
PASSED = {MUX_MSG_HELLO: "hello", MUX_C_ALIVE_CHECK: "check"}
MAX_PACKET = 256 * 1024  # mux control messages are small; the proxied SSH stream is not parsed


def verdict(payload: bytes) -> str:
    """What the relay does with one mux packet from a member: ``pass`` it on, pass it and then
    ``splice`` the rest unread (MUX_C_PROXY), or ``deny`` it."""
    if len(payload) < 4:
        return "deny"
    kind = struct.unpack(">I", payload[:4])[0]
    if kind in PASSED:
        return "pass"
    if kind == MUX_C_PROXY:
        return "splice"
    return "deny"


def denial(payload: bytes, reason: str) -> bytes:
    """MUX_S_PERMISSION_DENIED for the request in ``payload`` (its request id echoed)."""
    rid = payload[4:8] if len(payload) >= 8 else b"\0\0\0\0"
    text = reason.encode()
    body = struct.pack(">I", MUX_S_PERMISSION_DENIED) + rid + struct.pack(">I", len(text)) + text
    return struct.pack(">I", len(body)) + body


def member(uid: int, gid: int) -> bool:
    """May ``uid`` ride: this process's own uid, root, or a member of group ``gid`` now (the
    group database read at each connection: a member removed is refused at once)."""
    if uid in (os.getuid(), 0):
        return True
    try:
        user = pwd.getpwuid(uid)
        return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _pump(src: socket.socket, dst: socket.socket, lock: threading.Lock | None = None) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if lock is None:
                dst.sendall(data)
            else:
                with lock:
                    dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def serve(client: socket.socket, master_path: str) -> None:
    """One member's connection: filter its mux requests until MUX_C_PROXY, then splice."""
    try:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(master_path)
    except OSError:
        client.close()
        return
    lock = threading.Lock()
    back = threading.Thread(target=_pump, args=(up, client, lock), daemon=True)
    back.start()
    try:
        while True:
            head = _recv_exact(client, 4)
            if head is None:
                break
            (n,) = struct.unpack(">I", head)
            if not 4 <= n <= MAX_PACKET:
                break
            payload = _recv_exact(client, n)
            if payload is None:
                break
            what = verdict(payload)
            if what == "deny":
                with lock:
                    client.sendall(denial(payload, "permission denied: the shared link's relay lets group members run commands (ssh -O proxy) and check the master, nothing else"))
                break
            up.sendall(head + payload)
            if what == "splice":
                _pump(client, up)
                back.join()
                return
    except OSError:
        pass
    finally:
        for s in (client, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        back.join(timeout=5)
        client.close()
        up.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(master_path: str, relay_path: str, gid: int, master_pid: int) -> int:
    tmp = relay_path[:-2] + ".t"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        lsock.bind(tmp)
    finally:
        os.umask(old)
    os.chown(tmp, -1, gid)
    os.chmod(tmp, 0o660)
    lsock.listen(16)
    os.rename(tmp, relay_path)  # into place at once: the directory is the operator's alone
    ino = os.lstat(relay_path).st_ino
    try:
        while _alive(master_pid):
            try:
                if os.lstat(relay_path).st_ino != ino:
                    return 0  # another relay took the name: its socket is not ours to remove
            except FileNotFoundError:
                return 0
            ready, _, _ = select.select([lsock], [], [], 1.0)
            if not ready:
                continue
            conn, _ = lsock.accept()
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if not member(uid, gid):
                conn.close()
                continue
            threading.Thread(target=serve, args=(conn, master_path), daemon=True).start()
        try:
            if os.lstat(relay_path).st_ino == ino:
                os.unlink(relay_path)
        except FileNotFoundError:
            pass
        return 0
    finally:
        lsock.close()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
