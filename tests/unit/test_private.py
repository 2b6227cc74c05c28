"""The local host's private places, in one process: the link's control directory, its session
slot files, the claim locks and the SQLite files (core/private.py). These run as root, who can
hand a file to any uid; tests/integration/test_local_attacks.py and tests/link/test_link_attacks.py
do the same with a real second local user."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scbundle.core.config import Site
from scbundle.core.errors import ScbundleError
from scbundle.db.claims import claim_run, claims_dir
from scbundle.db.migrate import upgrade
from scbundle.db.models import RemoteRun
from scbundle.db.session import Database
from scbundle.site.link.openssh import OpenSshLink

OTHER_UID = 54321  # nobody's: root can still give files to it


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def link_for(control_dir: Path) -> OpenSshLink:
    site = Site.model_validate({"link": "ssh", "remote_root": "/r", "permanent_root": "/p",
                                "ssh": {"hosts": ["fe.invalid"], "user": "op", "control_dir": str(control_dir)}})  # fmt: skip
    return OpenSshLink("mu", site)


@pytest.fixture
def short() -> Iterator[Path]:
    """A short directory of ours (a ControlPath must stay under ~90 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="scbu-", dir="/tmp"))
    yield d
    shutil.rmtree(d)


@pytest.fixture
def shared(short: Path) -> Path:
    """A directory like /tmp: world-writable and sticky."""
    d = short / "shared"
    d.mkdir()
    d.chmod(0o1777)
    return d


def test_control_dir_that_is_a_symlink_is_refused_and_its_target_left_as_it_was(shared, short):
    target = short / "operator-dir"
    target.mkdir()
    target.chmod(0o755)
    (shared / "scb").symlink_to(target)
    with pytest.raises(ScbundleError, match=r"control directory .*/shared/scb is a symbolic link"):
        link_for(shared / "scb").write_configs()
    assert mode(target) == 0o755  # no chmod followed the link
    assert list(target.iterdir()) == []  # and no config was written through it


def test_control_dir_open_to_others_is_refused_not_quietly_fixed(short):
    d = short / "scb"
    d.mkdir()
    d.chmod(0o775)
    (d / "planted").write_text("Match exec \"touch /tmp/x\"\n")
    with pytest.raises(ScbundleError, match=r"control directory .*/scb is writable by its group \(mode 0775\)"):
        link_for(d).ensure_dir()
    assert mode(d) == 0o775


@pytest.mark.parametrize(("owner", "dirmode"), [(OTHER_UID, 0o755), (0, 0o777), (0, 0o775)])
def test_control_dir_under_a_directory_someone_else_can_swap_is_refused(short, owner, dirmode):
    parent = short / "p"
    parent.mkdir()
    os.chown(parent, owner, -1)
    parent.chmod(dirmode)
    with pytest.raises(ScbundleError, match=r"control directory .*/p/scb: .*/p (belongs to uid 54321|is writable by)"):
        link_for(parent / "scb").ensure_dir()
    assert not (parent / "scb").exists()


def test_control_dir_made_private_under_a_sticky_directory_whatever_the_umask(shared):
    old = os.umask(0o002)
    try:
        link_for(shared / "a" / "scb").write_configs()
    finally:
        os.umask(old)
    assert mode(shared / "a") == 0o700 and mode(shared / "a" / "scb") == 0o700
    assert {mode(p) for p in (shared / "a" / "scb").iterdir()} == {0o600}


def test_control_dir_reached_through_someone_elses_link_in_a_sticky_directory_is_refused(shared, short):
    real = short / "real"
    real.mkdir()
    (shared / "via").symlink_to(real)
    os.lchown(shared / "via", OTHER_UID, -1)
    with pytest.raises(ScbundleError, match=r"/shared/via is a symbolic link of uid 54321 in a shared directory"):
        link_for(shared / "via" / "scb").ensure_dir()
    assert not (real / "scb").exists()


def test_session_slot_file_planted_as_a_symlink_is_refused(short):
    d = short / "scb"
    d.mkdir(mode=0o700)
    victim = short / "victim"
    victim.write_text("precious\n")
    (d / "mu.slot.0").symlink_to(victim)
    with pytest.raises(ScbundleError, match=r"session slot file .*mu\.slot\.0 is a symbolic link"):
        with link_for(d).session_slot(timeout=0):
            pass
    assert victim.read_text() == "precious\n"


def test_database_wal_shm_and_claims_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        d = Database(f"sqlite:///{tmp_path / 'db' / 'x.db'}")
        upgrade(d)
        with d.session() as s:
            s.add(RemoteRun(remote_id=1, stage="chip", label="l", site="local", state="new", attempt=1, fault=0, job_policy="fatal"))
        with claim_run(d, 1, ["new"]) as c, d.read_session() as s:  # the database open: -wal and -shm exist
            assert c is not None and s.get(RemoteRun, 1) is not None
            files = {p.name: mode(p) for p in (tmp_path / "db").iterdir()}
            locks = {p.name: mode(p) for p in claims_dir(d).iterdir()}
    finally:
        os.umask(old)
    assert files == {"x.db": 0o600, "x.db-wal": 0o600, "x.db-shm": 0o600, "x.db.claims": 0o700}
    assert locks == {"run-1.lock": 0o600}
    assert mode(tmp_path / "db") == 0o700


def test_an_existing_database_readable_by_others_is_made_private(tmp_path):
    path = tmp_path / "x.db"
    upgrade(Database(f"sqlite:///{path}"))
    path.chmod(0o644)
    Database(f"sqlite:///{path}")
    assert mode(path) == 0o600
