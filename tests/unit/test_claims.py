"""Claims on SQLite (lock files) in one process, and the throttle keys of a site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scbundle.core.config import ConfigError, config_from_dict, embedded_default, parse_size
from scbundle.core.errors import ScbundleError
from scbundle.db.claims import claim_run, claims_dir
from scbundle.db.migrate import upgrade
from scbundle.db.models import RemoteRun
from scbundle.db.session import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(d)
    with d.session() as s:
        s.add(RemoteRun(remote_id=1, stage="chip", label="l", site="local", state="new", attempt=1, fault=0, job_policy="fatal"))
    return d


def test_a_claimed_run_cannot_be_claimed_again_until_released(db):
    with claim_run(db, 1, ["new"]) as first:
        assert first is not None and first.run.remote_id == 1
        with claim_run(db, 1, ["new"]) as second:
            assert second is None
    with claim_run(db, 1, ["new"]) as again:
        assert again is not None
    assert list(claims_dir(db).iterdir()) == []  # released claims leave no file behind


def test_a_run_in_another_state_is_not_claimed(db):
    with claim_run(db, 1, ["pending"]) as c:
        assert c is None
    with claim_run(db, 99, ["new"]) as c:
        assert c is None


def test_writes_through_a_claim_commit_and_the_state_is_read_under_the_claim(db):
    with claim_run(db, 1, ["new"]) as c:
        with c.session() as s:
            s.get(RemoteRun, 1).state = "pending"
    with claim_run(db, 1, ["new"]) as c:
        assert c is None  # it moved on
    with claim_run(db, 1, ["pending"]) as c:
        assert c is not None and c.run.state == "pending"


def test_a_process_killed_holding_a_claim_leaves_nothing_that_blocks(db, tmp_path):
    code = (
        "import os, signal, sys; from scbundle.db.session import Database; from scbundle.db.claims import claim_run\n"
        f"db = Database('sqlite:///{tmp_path / 'c.db'}')\n"
        "with claim_run(db, 1, ['new']) as c:\n"
        "    assert c is not None; print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -9 and "held" in p.stdout
    assert (claims_dir(db) / "run-1.lock").exists()  # its file stays (no cleanup ran) ...
    with claim_run(db, 1, ["new"]) as c:
        assert c is not None  # ... but the kernel dropped the lock with the process


def test_site_locks_wait_for_each_other_across_processes(db, tmp_path):
    code = (
        "import time; from scbundle.db.session import Database; from scbundle.db.claims import claim_run\n"
        f"db = Database('sqlite:///{tmp_path / 'c.db'}')\n"
        "with claim_run(db, 1, ['new'], site_lock='exec:local') as c:\n"
        "    print('held', flush=True); time.sleep(1.5)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    assert p.stdout.readline().strip() == "held"
    import time

    t0 = time.monotonic()
    with claim_run(db, 1, ["new"], site_lock="exec:local") as c:  # waits for the site lock, then claims
        waited = time.monotonic() - t0
        assert c is not None
    p.wait(timeout=30)
    assert waited > 0.5


def test_parse_size():
    assert parse_size("50G") == (50 * 1024**3, False)
    assert parse_size("1.5 GiB") == (1.5 * 1024**3, False)
    assert parse_size("10%") == (10.0, True)
    assert parse_size(4096) == (4096.0, False)
    for bad in ("ten", "120%", "5X", -1):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_throttle_keys_on_a_site_are_checked_and_named(tmp_path):
    cfg = embedded_default(tmp_path)
    cfg["sites"]["local"].update(max_in_flight=3, max_prepared=2, min_free_disk="10%")
    site = config_from_dict(cfg, "t").site("local")
    assert (site.max_in_flight, site.max_prepared, site.min_free_disk) == (3, 2, "10%")
    for key, value, why in (("max_in_flight", 0, "max_in_flight"), ("max_prepared", -1, "max_prepared"), ("min_free_disk", "lots", "min_free_disk")):
        bad = embedded_default(tmp_path)
        bad["sites"]["local"][key] = value
        with pytest.raises(ConfigError, match=why):
            config_from_dict(bad, "t")


# planted where a lock file goes (tests/unit/test_private.py: the other private places)
@pytest.mark.parametrize("lock", ["run-1.lock", "site-exec_local.lock"])
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_claim_lock_planted_as_a_link_to_an_operators_file_is_never_written(db, tmp_path, lock, kind):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    folder = claims_dir(db)
    folder.mkdir()
    folder.chmod(0o777)  # as an older scbundle under a loose umask left it, for anyone to plant in
    (folder / lock).symlink_to(victim) if kind == "symlink" else os.link(victim, folder / lock)
    with pytest.raises(ScbundleError, match=r"claim lock file .*(is a symbolic link|has 2 names).*nothing written"):
        with claim_run(db, 1, ["new"], site_lock="exec:local"):
            pass
    assert victim.read_text() == "precious\n" and folder.stat().st_mode & 0o777 == 0o700
    (folder / lock).unlink()  # the operator removes it: the claim is taken again
    with claim_run(db, 1, ["new"], site_lock="exec:local") as c:
        assert c is not None


def test_claims_directory_of_another_user_is_refused(db, tmp_path):
    folder = claims_dir(db)
    folder.mkdir()
    os.chown(folder, 54321, -1)  # nobody's: root can still give it away
    with pytest.raises(ScbundleError, match=r"claims directory .* belongs to uid 54321, not to you"):
        with claim_run(db, 1, ["new"]):
            pass
