"""Inputs known by content over the real link (bastion + front end, password + one-time code):
an input re-made locally with the same size, one replaced on the site by another site account
(same size, mtime put back) and one purged are pushed again and the results follow the local
files; an input deleted on the site before its component starts is fault 2, never a result."""

from __future__ import annotations

import array
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHIP = Path(__file__).resolve().parents[2] / "remote" / "sc_chip.py"
HOUR = 3600 * 10**9


def age_new_data(e) -> None:
    """Local data made just now looks made an hour ago (a file modified within 2 s of being
    hashed is hashed again next time, by design)."""
    for (uri,) in e.q("select uri from imfile union select uri from detrend"):
        st = os.stat(uri)
        if st.st_mtime_ns > time.time_ns() - HOUR // 2:
            os.utime(uri, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR))


def demo_run(e, n: int, label: str) -> int:
    e.cli("demo-data", "--images", str(n))
    age_new_data(e)
    rid = json.loads(e.cli("define", "--label", label, "--stage", "chip", "--json").stdout)["remote_id"]
    e.cli("prepare", "chip", "--remote-id", str(rid))
    return rid


def remote_of(e, rid: int) -> dict[str, str]:
    base = Path(e.q("select path_base from remote_run where remote_id=?", rid)[0][0])
    return dict(line.split("\t")[:2] for line in (base / "requirements.tsv").read_text().splitlines())


def halve_gains(path: Path) -> None:
    data = path.read_bytes()
    head, _, pixels = data.partition(b"\n")
    gains = array.array("f", pixels)
    for i in range(len(gains)):
        gains[i] *= 0.5
    path.write_bytes(head + b"\n" + gains.tobytes())
    assert path.stat().st_size == len(data)


def as_user(user: str, code: str, *args: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", "/usr/bin/python3", "-S", "-c", code, *args], check=True, timeout=30)


REPLACE = """
import os, sys
path, mtime = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
tmp = path + ".mine"
with open(tmp, "wb") as f:
    f.write(data[::-1])  # same size, other content
os.utime(tmp, ns=(mtime, mtime))
os.replace(tmp, path)
"""


def local_stats(tmp: Path, raw: str, flat: str) -> dict:
    out, stats = tmp / "proc", tmp / "stats.json"
    subprocess.run([sys.executable, "-S", str(CHIP), "process", "--raw", raw, "--detrend", flat, "--out", str(out), "--stats", str(stats)], check=True)
    return json.loads(stats.read_text())


def test_remade_changed_by_another_account_and_purged_inputs_are_pushed_again(sshenv, tmp_path):
    e = sshenv
    e.link_start()
    first = demo_run(e, 8, "first")  # exposure 1: 8 raw chips, 8 flat fields
    e.cli("exec", "--remote-id", str(first))
    e.cli("poll", "--remote-id", str(first), "--wait", "240")
    second = demo_run(e, 8, "second")  # exposure 2: the same 8 flats
    where = remote_of(e, second)
    flats = sorted(u for (u,) in e.q("select distinct d.uri from detrend d join imfile i on i.det_id = d.det_id where i.exp_id = 2"))
    assert len(flats) == 8
    remade, purged, replaced = flats[:3]
    halve_gains(Path(remade))  # re-made locally: new content, same byte count
    Path(where[purged]).unlink()  # purged from the site's scratch
    # another site account, in a group-writable project area, swaps the site copy for one of
    # the same size with the old mtime: only the inode and ctime tell
    site_copy = Path(where[replaced])
    site_copy.parent.chmod(0o777)
    before = site_copy.stat()
    other = next(u for u in e.site.otp_users if u != e.user)
    as_user(other, REPLACE, str(site_copy), str(before.st_mtime_ns))
    after = site_copy.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_uid == pwd.getpwnam(other).pw_uid and site_copy.read_bytes() != Path(replaced).read_bytes()

    ex = json.loads(e.cli("exec", "--remote-id", str(second), "--json").stdout)[0]
    assert ex["pushed_files"] == 8 + 3  # its raw images and exactly the three flats that differ
    assert ex["hashed_files"] == 8 + 1  # locally: the new raw images and the re-made flat only
    assert ex["site_hashed"] == 1  # on the site: only the swapped copy was read
    assert ex["invocations"] <= 7  # tools check, bundle, missing, 2 push streams, submit
    for f in (remade, purged, replaced):
        assert Path(where[f]).read_bytes() == Path(f).read_bytes()
    assert site_copy.stat().st_uid == pwd.getpwnam(e.user).pw_uid  # the account's own copy again
    manifest = e.permanent / "manifest"
    assert manifest.stat().st_uid == pwd.getpwnam(e.user).pw_uid and oct(manifest.stat().st_mode & 0o777) == "0o700"
    e.cli("poll", "--remote-id", str(second), "--wait", "240")
    assert e.q("select state, fault from remote_run where remote_id=?", second) == [("full", 0)]
    rows = e.q("select i.uri, d.uri, r.mean, r.median, r.npix from chip_result r join imfile i on i.imfile_id = r.imfile_id "
               "join detrend d on d.det_id = i.det_id where r.remote_id = ?", second)  # fmt: skip
    assert len(rows) == 8
    for raw, flat, mean, median, npix in rows:  # each result is what the local files give
        want = local_stats(tmp_path, raw, flat)
        assert (mean, median, npix) == (want["mean"], want["median"], want["npix"]), flat


def test_an_input_deleted_on_the_site_before_its_component_starts_is_fault_2(sshenv):
    e = sshenv
    e.link_start()
    rid = demo_run(e, 6, "gone")
    base = Path(e.q("select path_base from remote_run where remote_id=?", rid)[0][0])
    raw3 = e.q("select uri from imfile where imfile_id = 3")[0][0]
    site_raw3 = remote_of(e, rid)[raw3]
    with open(base / "pre.cmds", "a") as f:  # the job's own first act: the site loses the file
        f.write(f"rm -f {site_raw3}\n")
    e.cli("exec", "--remote-id", str(rid))
    e.cli("poll", "--remote-id", str(rid), "--wait", "240")
    assert not Path(site_raw3).exists()
    assert e.q("select state, fault from remote_run") == [("error", 2)]
    state, fault, message = e.q("select state, fault, message from remote_component where stage_id = 3")[0]
    assert (state, fault) == ("error", 2) and f"input {site_raw3} is missing on the site" in message
    assert e.q("select imfile_id from chip_result order by imfile_id") == [(1,), (2,), (4,), (5,), (6,)]
    e.cli("revert", "--remote-id", str(rid))
    e.cli("prepare", "chip", "--remote-id", str(rid))
    ex = json.loads(e.cli("exec", "--remote-id", str(rid), "--json").stdout)[0]
    assert ex["pushed_files"] == 1
    e.cli("poll", "--remote-id", str(rid), "--wait", "240")
    assert e.q("select state, fault from remote_run") == [("full", 0)]
    assert e.q("select count(*) from chip_result") == [(6,)]
