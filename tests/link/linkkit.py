"""Helpers for scbundle against the real ssh test site: a config per test, a short control
directory, and `link start` typed through a pseudo-terminal the way a person would."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import clirun
import pexpect
import tomli_w
from sitekit import TestSite

SITE = "mu"


@dataclass
class SshEnv:
    site: TestSite
    home: Path
    config: Path
    control_dir: Path
    user: str
    env: dict[str, str]

    @property
    def db_path(self) -> Path:
        return self.home / "scbundle.db"

    @property
    def local_data(self) -> Path:
        return self.home / "data"

    @property
    def remote_data(self) -> Path:
        return self.site.remote_root / self.home.name / "data"

    @property
    def permanent(self) -> Path:
        return self.site.permanent_root / self.home.name

    def cli(self, *args: str, check: bool = True, timeout: float = 300, failpoint: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if failpoint:
            env["SCBUNDLE_FAILPOINT"] = failpoint
        p = clirun.run(["--config", str(self.config), *args], env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"scbundle {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "scbundle.cli", "--config", str(self.config), *args],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)  # fmt: skip

    def q(self, sql: str, *args: object) -> list[tuple]:
        with sqlite3.connect(self.db_path) as c:
            return c.execute(sql, args).fetchall()

    def run_dir(self, remote_id: int) -> Path:
        """The run's directory on the site (runs/<installation>/<stage>.<id>.a<n>), as prepare named it."""
        ((d,),) = self.q("select remote_dir from remote_run where remote_id = ?", remote_id)
        assert d, f"remote_id {remote_id} has no remote_dir yet"
        return Path(d)

    def link_start(self, *extra: str, user: str | None = None, expect_ok: bool = True, timeout: float = 60) -> str:
        """Run `scbundle link start` in a pseudo-terminal and type the site's prompts."""
        who = user or self.user
        child = pexpect.spawn(sys.executable, ["-m", "scbundle.cli", "--config", str(self.config), "link", "start", *extra],
                              env=self.env, encoding="utf-8", timeout=timeout)  # fmt: skip
        seen = []
        try:
            while True:
                i = child.expect([r"(?i)one-time password[^\n]*:", r"(?i)password:", pexpect.EOF])
                seen.append(child.before + (child.after if isinstance(child.after, str) else ""))
                if i == 0:
                    child.sendline(self.site.totp(who))
                elif i == 1:
                    child.sendline(self.site.users[who].password)
                else:
                    break
        finally:
            child.close()
        out = "".join(seen)
        if expect_ok:
            assert child.exitstatus == 0, f"link start failed ({child.exitstatus}, signal {child.signalstatus}):\n{out}\n{self.site.log_tail()}"
        return out

    def master_pid(self) -> int | None:
        import json

        p = self.cli("link", "check", "--json", check=False)
        rows = json.loads(p.stdout) if p.stdout.strip() else []
        return rows[0]["pid"] if rows and rows[0]["up"] else None

    def wait_for(self, predicate, timeout: float = 120, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


def write_config(path: Path, home: Path, site: TestSite, user: str, control_dir: Path, *, link: str = "ssh",
                 known_hosts: Path | None = None, identity: Path | None = None, drop_hours: float = 12.0,
                 scheduler: str = "local", cores_per_node: int = 2) -> None:  # fmt: skip
    remote = site.remote_root / home.name
    perm = site.permanent_root / home.name
    u = site.users[user]
    ssh = {
        "hosts": [site.front_host], "user": user, "port": site.front_port,
        "bastion": site.bastion_host, "bastion_port": site.bastion_port,
        "known_hosts": str(known_hosts or site.known_hosts), "control_dir": str(control_dir),
    }  # fmt: skip
    key = identity or u.key
    if key:
        ssh["identity"] = str(key)
    others = [n for n in site.otp_users if n != user]
    if others:
        ssh["users"] = {other: {"identity": str(site.users[other].key)} for other in others}
    config = {
        "database": "sqlite:///" + str(home / "scbundle.db"),
        "workdir": str(home / "work"),
        "default_site": SITE,
        "stages": {"chip": {"threads": 1, "cost_seconds": 0.05}},
        "sites": {SITE: {
            "link": link, "scheduler": scheduler, "remote_root": str(remote), "permanent_root": str(perm),
            "cores_per_node": cores_per_node, "max_nodes": 1, "fill_factor": 0.8, "max_walltime": "01:00:00",
            "python": site.python, "drop_hours": drop_hours,
            "paths": [{"local": str(home / "data"), "remote": str(remote / "data")}],
            "ssh": ssh,
        }},
    }  # fmt: skip
    path.write_text(tomli_w.dumps(config))




@contextmanager
def ssh_env(site: TestSite, tmp_path: Path, **config: object) -> Iterator[SshEnv]:
    """A scbundle home, a short control directory and a config for the site's first OTP user;
    the link is stopped and the control directory removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="h", dir=tmp_path))
    control = Path(tempfile.mkdtemp(prefix="scbc-", dir="/tmp"))
    control.chmod(0o700)
    user = site.otp_users[0]
    cfg = tmp_path / "scbundle.toml"
    write_config(cfg, home, site, user, control, **config)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCBUNDLE_", "SLURM_"))}
    env.update(COLUMNS="160", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    e = SshEnv(site, home, cfg, control, user, env)
    e.cli("db", "upgrade")
    try:
        yield e
    finally:
        e.cli("link", "stop", check=False)
        shutil.rmtree(control, ignore_errors=True)
