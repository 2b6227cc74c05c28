"""scbundle against the real ssh test site (tests/sitekit.py): the per-test environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from linkkit import SshEnv, write_config
from sitekit import TestSite


@pytest.fixture
def sshenv(test_site: TestSite, tmp_path: Path):
    home = Path(tempfile.mkdtemp(prefix="h", dir=tmp_path))
    control = Path(tempfile.mkdtemp(prefix="scbc-", dir="/tmp"))
    control.chmod(0o700)
    user = test_site.otp_users[0]
    cfg = tmp_path / "scbundle.toml"
    write_config(cfg, home, test_site, user, control)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCBUNDLE_")}
    env.update(COLUMNS="160", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    e = SshEnv(test_site, home, cfg, control, user, env)
    e.cli("db", "upgrade")
    try:
        yield e
    finally:
        e.cli("link", "stop", check=False)
        shutil.rmtree(control, ignore_errors=True)
