"""Inputs known by content on the embedded `local` site (issue 10 item 1): an input re-made
with the same size, or changed or purged on the site, is pushed again and the result follows
it; an unchanged one is not hashed again locally; one gone before its component starts is
fault 2, never a result. Real processes, real files, real SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

CHIP = Path(__file__).resolve().parents[2] / "remote" / "sc_chip.py"
HOUR_AGO = 3600 * 10**9


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def age(paths) -> None:
    """Make files look made an hour ago (a file modified within 2 s of being hashed is hashed
    again next time, by design)."""
    for p in paths:
        st = os.stat(p)
        if st.st_mtime_ns > time.time_ns() - HOUR_AGO // 2:  # the ones just made
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - HOUR_AGO))


def requirements(cli, rid) -> list[tuple[str, str]]:
    base = Path(q(cli, "select path_base from remote_run where remote_id=?", rid)[0][0])
    return [tuple(line.split("\t")[:2]) for line in (base / "requirements.tsv").read_text().splitlines()]


def demo_run(cli, n, label):
    cli("demo-data", "--images", str(n))
    age(Path(u) for (u,) in q(cli, "select uri from imfile union select uri from detrend"))
    rid = cli.json("define", "--label", label, "--stage", "chip")["remote_id"]
    cli("prepare", "chip", "--remote-id", str(rid))
    return rid


def same_size_other_content(path: Path) -> None:
    """A flat field re-made: same header, same byte count, every gain halved."""
    data = path.read_bytes()
    head, _, pixels = data.partition(b"\n")
    import array

    gains = array.array("f", pixels)
    for i in range(len(gains)):
        gains[i] = gains[i] * 0.5
    new = head + b"\n" + gains.tobytes()
    assert len(new) == len(data) and new != data
    path.write_bytes(new)


def local_stats(tmp: Path, raw: str, flat: str) -> dict:
    """What sc_chip computes from these exact files, here."""
    out, stats = tmp / "proc", tmp / "stats.json"
    subprocess.run([sys.executable, "-S", str(CHIP), "process", "--raw", raw, "--detrend", flat, "--out", str(out), "--stats", str(stats)], check=True)
    return json.loads(stats.read_text())


def test_inputs_remade_or_changed_or_purged_on_the_site_are_pushed_again_and_results_follow(cli, tmp_path):
    cli("db", "upgrade")
    first = demo_run(cli, 8, "first")  # exposure 1: 8 raw chips and their 8 flat fields
    cli("exec", "--remote-id", str(first))
    cli("poll", "--remote-id", str(first), "--wait", "120")
    second = demo_run(cli, 8, "second")  # exposure 2, same filter: the same 8 flats
    remote_of = dict(requirements(cli, second))
    flats = sorted(u for (u,) in q(cli, "select distinct d.uri from detrend d join imfile i on i.det_id = d.det_id where i.exp_id = 2"))
    assert len(flats) == 8 and all(f in remote_of for f in flats)
    remade, purged, tampered = (Path(f) for f in flats[:3])
    same_size_other_content(remade)  # re-made locally: new content, same byte count
    Path(remote_of[str(purged)]).unlink()  # purged from the site's scratch
    site_copy = Path(remote_of[str(tampered)])  # changed on the site: same size, mtime put back
    st = site_copy.stat()
    site_copy.write_bytes(bytes(reversed(site_copy.read_bytes()[200:])) + site_copy.read_bytes()[:200])
    os.utime(site_copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (site_copy.stat().st_size, site_copy.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)

    ex = cli.json("exec", "--remote-id", str(second))[0]
    assert ex["pushed_files"] == 8 + 3  # its 8 raw images, and exactly the 3 flats that differ
    assert ex["site_hashed"] == 1  # only the changed site copy was read there (the purged one is absent)
    assert Path(remote_of[str(remade)]).read_bytes() == remade.read_bytes()
    assert site_copy.read_bytes() == tampered.read_bytes() and Path(remote_of[str(purged)]).is_file()
    cli("poll", "--remote-id", str(second), "--wait", "120")
    assert q(cli, "select state, fault from remote_run where remote_id=?", second) == [("full", 0)]
    # every result is what these local files give (the re-made flat, not the site's old copy)
    rows = q(cli, "select i.uri, d.uri, r.mean, r.median, r.npix from chip_result r join imfile i on i.imfile_id = r.imfile_id "
                  "join detrend d on d.det_id = i.det_id where r.remote_id = ?", second)  # fmt: skip
    assert len(rows) == 8
    for raw, flat, mean, median, npix in rows:
        want = local_stats(tmp_path, raw, flat)
        assert (mean, median, npix) == (want["mean"], want["median"], want["npix"]), flat


def test_an_unchanged_input_is_not_hashed_again_locally(cli):
    cli("db", "upgrade")
    first = demo_run(cli, 8, "first")
    ex1 = cli.json("exec", "--remote-id", str(first))[0]
    assert ex1["hashed_files"] == 16  # 8 raw images, 8 flats: each hashed once
    cache = cli.home / "work" / ".cache" / "digests.sqlite3"
    with sqlite3.connect(cache) as c:
        rows1 = dict(((d, i), (s, t)) for d, i, s, t in c.execute("select dev, ino, sha256, hashed_at from digest"))
    assert len(rows1) == 16
    cli("poll", "--remote-id", str(first), "--wait", "120")
    second = demo_run(cli, 8, "second")
    flats = sorted(u for (u,) in q(cli, "select distinct d.uri from detrend d join imfile i on i.det_id = d.det_id where i.exp_id = 2"))
    # the documented trade-off, used as proof: content changed in place with (dev, ino, size,
    # mtime_ns) put back (only its owner can) is taken from the cache, never read again
    quiet = Path(flats[0])
    st = quiet.stat()
    with open(quiet, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x00\x80\x3f" * 4)
    os.utime(quiet, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (quiet.stat().st_ino, quiet.stat().st_size, quiet.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    ex2 = cli.json("exec", "--remote-id", str(second))[0]
    assert ex2["hashed_files"] == 8  # only the new raw images
    assert ex2["pushed_files"] == 8
    with sqlite3.connect(cache) as c:
        rows2 = dict(((d, i), (s, t)) for d, i, s, t in c.execute("select dev, ino, sha256, hashed_at from digest"))
    assert len(rows2) == 24
    for f in flats:  # the flats' rows are the first exec's: same digest, same hashing time
        key = (os.stat(f).st_dev, os.stat(f).st_ino)
        assert rows2[key] == rows1[key]


def test_an_input_deleted_on_the_site_before_its_component_starts_is_fault_2_and_the_rest_full(cli):
    cli("db", "upgrade")
    rid = demo_run(cli, 6, "gone")
    base = Path(q(cli, "select path_base from remote_run where remote_id=?", rid)[0][0])
    raw3 = q(cli, "select uri from imfile where imfile_id = 3")[0][0]
    remote_raw3 = dict(requirements(cli, rid))[raw3]
    # after exec has checked and pushed it, the site loses it before the component starts:
    # the job's own pre phase deletes it (a purge at the worst moment)
    with open(base / "pre.cmds", "a") as f:
        f.write(f"rm -f {remote_raw3}\n")
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert not Path(remote_raw3).exists()
    assert q(cli, "select state, fault from remote_run") == [("error", 2)]
    state, fault, attempts, message = q(cli, "select state, fault, attempts, message from remote_component where stage_id = 3")[0]
    assert (state, fault) == ("error", 2) and f"input {remote_raw3} is missing on the site" in message
    assert q(cli, "select stage_id from remote_component where state = 'full' order by stage_id") == [(1,), (2,), (4,), (5,), (6,)]
    assert [r for (r,) in q(cli, "select imfile_id from chip_result order by imfile_id")] == [1, 2, 4, 5, 6]
    # fault 2 is revertable: the next exec pushes the file again and the component succeeds
    cli("revert", "--remote-id", str(rid))
    cli("prepare", "chip", "--remote-id", str(rid))
    ex = cli.json("exec", "--remote-id", str(rid))[0]
    assert ex["pushed_files"] == 1
    cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cli, "select state, fault from remote_run") == [("full", 0)]
    assert q(cli, "select count(*) from chip_result") == [(6,)]
