"""The test site behaves like the real one: bastion-only reachability, password + TOTP, host keys, drops."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pexpect
import pytest
from sitekit import TestSite, start_site


def ssh(cfg: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", str(cfg), *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def answer_prompts(child: pexpect.spawn, site: TestSite, user: str, otp: str | None = None) -> None:
    child.expect(r"Password:")
    child.sendline(site.users[user].password)
    child.expect(r"One-time password")
    child.sendline(otp or site.totp(user))


def otp_login(site: TestSite, cfg: Path, user: str, *args: str, ignore_sighup: bool = False) -> pexpect.spawn:
    child = pexpect.spawn(
        "ssh", ["-F", str(cfg), *args], encoding="utf-8", timeout=30, ignore_sighup=ignore_sighup
    )
    answer_prompts(child, site, user)
    return child


def test_mode_is_reported(test_site: TestSite) -> None:
    print(test_site.mode_note)
    assert test_site.mode_note
    assert test_site.start_seconds < 30


def test_front_not_reachable_directly(test_site: TestSite) -> None:
    if not test_site.namespaces:
        pytest.skip(test_site.mode_note)
    t0 = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection((test_site.front_host, test_site.front_port), timeout=2).close()
    assert time.monotonic() - t0 < 4
    # ... while the bastion does reach it, and does not forward IP
    ns = ["ip", "netns", "exec", test_site.bastion_ns]
    probe = f"exec 3<>/dev/tcp/{test_site.front_host}/{test_site.front_port}; head -c 4 <&3"
    p = subprocess.run([*ns, "timeout", "5", "bash", "-c", probe], capture_output=True, text=True)
    assert p.stdout == "SSH-", p.stderr
    fwd = subprocess.run([*ns, "cat", "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True)
    assert fwd.stdout.strip() == "0"


def test_key_user_runs_a_command_through_the_bastion(test_site: TestSite, tmp_path: Path) -> None:
    site, user = test_site, "scbkey"
    cfg = site.write_ssh_config(tmp_path / "ssh_config", user)
    assert "StrictHostKeyChecking yes" in cfg.read_text() and "BatchMode yes" in cfg.read_text()
    # -J on the command line; the jump host's settings come from -F
    p = ssh(cfg, "-J", site.bastion_alias, "-i", str(site.users[user].key), "-p", str(site.front_port),
            "-l", user, site.front_host, "id -un")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == user
    # the alias form (ProxyJump in the config); the site's python and shared dirs work for the user
    script = (
        f"{site.python} -c 'import getpass; print(getpass.getuser())'"
        f" && touch {site.remote_root}/k && echo ok"
    )
    p = ssh(cfg, site.front_alias, script)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [user, "ok"]
    assert (site.remote_root / "k").stat().st_uid == site_uid(user)


def site_uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def test_bastion_only_forwards(test_site: TestSite, tmp_path: Path) -> None:
    cfg = test_site.write_ssh_config(tmp_path / "ssh_config", "scbkey")
    p = ssh(cfg, test_site.bastion_alias, "id -un")
    assert "scbkey" not in p.stdout
    assert "only forwards ssh" in p.stdout


def test_otp_user_refused_in_batch_mode_without_hanging(test_site: TestSite, tmp_path: Path) -> None:
    cfg = test_site.write_ssh_config(tmp_path / "ssh_config", "scbotp", batch=True)
    t0 = time.monotonic()
    p = ssh(cfg, test_site.front_alias, "true", timeout=20)
    assert time.monotonic() - t0 < 10
    assert p.returncode == 255
    assert "Permission denied" in p.stderr


@pytest.mark.parametrize("user", ["scbotp", "scbotp2"])
def test_otp_user_types_password_then_one_time_code(test_site: TestSite, tmp_path: Path, user: str) -> None:
    cfg = test_site.write_ssh_config(tmp_path / "ssh_config", user, batch=False)
    child = otp_login(test_site, cfg, user, test_site.front_alias, "echo site-ok $(id -un)")
    child.expect(pexpect.EOF)
    child.close()
    assert f"site-ok {user}" in child.before
    assert child.exitstatus == 0


def test_wrong_one_time_code_is_refused(test_site: TestSite, tmp_path: Path) -> None:
    user = "scbotp"
    cfg = test_site.write_ssh_config(tmp_path / "ssh_config", user, batch=False)
    args = ["-F", str(cfg), "-o", "NumberOfPasswordPrompts=1", test_site.front_alias, "echo in"]
    child = pexpect.spawn("ssh", args, encoding="utf-8", timeout=30)
    good = test_site.totp(user)
    answer_prompts(child, test_site, user, otp=f"{(int(good) + 1) % 10**6:06d}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 255
    assert "Permission denied" in child.before


def test_wrong_host_keys_are_refused(test_site: TestSite, tmp_path: Path) -> None:
    site = test_site
    cfg = site.write_ssh_config(tmp_path / "wrong", "scbkey", known_hosts=site.wrong_known_hosts)
    p = ssh(cfg, site.front_alias, "id -un")
    assert p.returncode == 255
    assert "Host key verification failed" in p.stderr
    # right bastion key, wrong front key: the front's key is checked end to end through the jump
    bastion_line, front_line = site.known_hosts.read_text().splitlines()
    mixed = tmp_path / "mixed_known_hosts"
    mixed.write_text(bastion_line + "\n" + site.wrong_known_hosts.read_text().splitlines()[1] + "\n")
    cfg = site.write_ssh_config(tmp_path / "mixed", "scbkey", known_hosts=mixed)
    p = ssh(cfg, site.front_alias, "id -un")
    assert p.returncode == 255
    assert "Host key verification failed" in p.stderr
    assert front_line.split()[0] in (site.front_host, f"[{site.front_host}]:{site.front_port}")


def test_control_master_rides_and_drops_with_the_site(test_site: TestSite, tmp_path: Path) -> None:
    site, user = test_site, "scbotp"
    cfg = site.write_ssh_config(tmp_path / "ssh_config", user, batch=False)
    cdir = Path(tempfile.mkdtemp(prefix="scbc-", dir="/tmp"))  # 0700; socket paths stay short
    cp = f"ControlPath={cdir}/%C"
    master_pid = None
    try:
        # ignore_sighup: pexpect makes ssh the pty's session leader, so when the foreground ssh exits
        # after -f the kernel SIGHUPs its process group, which holds the ProxyJump `ssh -W` child:
        # the master would lose its transport ("Killed by signal 1"; pexpect issue #688). ssh keeps
        # SIGHUP ignored when it starts with it ignored, in the proxy too.
        master = otp_login(site, cfg, user, "-f", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=yes",
                           "-o", cp, site.front_alias, ignore_sighup=True)
        master.expect(pexpect.EOF)
        master.close()
        assert master.exitstatus == 0, master.before
        check = ssh(cfg, "-o", cp, "-O", "check", site.front_alias)
        assert check.returncode == 0, check.stderr
        master_pid = int(re.search(r"pid=(\d+)", check.stderr).group(1))

        ride = ssh(cfg, "-o", "ControlMaster=no", "-o", "BatchMode=yes", "-o", cp,
                   site.front_alias, "echo riding $(id -un)")
        assert ride.returncode == 0, ride.stderr
        assert ride.stdout.strip() == f"riding {user}"

        listener = site.front_sshd_pids()[0]
        assert len(site.front_sshd_pids()) > 1  # the master's connection
        site.kill_connections()
        deadline = time.monotonic() + 15
        while ssh(cfg, "-o", cp, "-O", "check", site.front_alias).returncode == 0:
            assert time.monotonic() < deadline, "the master survived kill_connections()"
            time.sleep(0.2)
        assert site.front_sshd_pids()[0] == listener

        again = otp_login(site, cfg, user, site.front_alias, "echo back $(id -un)")
        again.expect(pexpect.EOF)
        again.close()
        assert again.exitstatus == 0
        assert f"back {user}" in again.before
    finally:
        ssh(cfg, "-o", cp, "-O", "exit", site.front_alias, timeout=10)
        if master_pid is not None:
            try:
                os.kill(master_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(cdir, ignore_errors=True)


def test_paramiko_key_user_through_the_bastion(test_site: TestSite) -> None:
    import paramiko

    site, user = test_site, "scbkey"
    key = paramiko.Ed25519Key.from_private_key_file(str(site.users[user].key))

    def client() -> paramiko.SSHClient:
        c = paramiko.SSHClient()
        c.load_host_keys(str(site.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        return c

    bastion, front = client(), client()
    try:
        bastion.connect(site.bastion_host, site.bastion_port, username=user, pkey=key, allow_agent=False,
                        look_for_keys=False, timeout=10)
        chan = bastion.get_transport().open_channel(
            "direct-tcpip", (site.front_host, site.front_port), ("127.0.0.1", 0)
        )
        front.connect(site.front_host, site.front_port, username=user, pkey=key, sock=chan, allow_agent=False,
                      look_for_keys=False, timeout=10)
        _, out, _ = front.exec_command("id -un")
        assert out.read().decode().strip() == user
    finally:
        front.close()
        bastion.close()


def test_one_time_codes_are_never_handed_out_twice(test_site: TestSite) -> None:
    codes = [test_site.totp("scbotp2") for _ in range(3)]
    assert all(re.fullmatch(r"\d{6}", c) for c in codes)
    assert len(set(codes)) == 3


def test_loopback_fallback_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fallback a machine without network namespaces gets: two sshds on 127.0.0.1."""
    monkeypatch.setenv("SCBSITE_NETNS", "0")
    site = start_site("scbl")
    try:
        print(site.mode_note)
        assert not site.namespaces and "NO network namespaces" in site.mode_note
        assert site.bastion_host == site.front_host == "127.0.0.1"
        assert f"[127.0.0.1]:{site.front_port} " in site.known_hosts.read_text()
        cfg = site.write_ssh_config(tmp_path / "ssh_config", "scblkey")
        p = ssh(cfg, site.front_alias, "id -un")
        assert p.returncode == 0, p.stderr + site.log_tail()
        assert p.stdout.strip() == "scblkey"
    finally:
        site.stop()
    assert not site.base.exists()
    assert subprocess.run(["pgrep", "-f", "sshd-scbl"], capture_output=True).returncode == 1
