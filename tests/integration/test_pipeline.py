"""The demo pipeline chip -> cam -> warp -> stack on the embedded local site, and `advance`:
real processes, real files, real SQLite."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest
import tomli_w

REMOTE = Path(__file__).resolve().parents[2] / "remote"
sys.path.insert(0, str(REMOTE))
import sc_chip  # noqa: E402
import sc_warp  # noqa: E402


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


def close(a, b, tol=1e-4):
    return all((x != x and y != y) or math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b, strict=True))


def chip_run_to_end(cli, n, *, policy="fatal", corrupt=()):
    if corrupt:  # a data fault (5) is not tried again in the job by default: here it is, so
        # the corrupted chips are abandoned after their first job, failed for good
        from scbundle.core.config import embedded_default

        data = embedded_default(cli.home)
        data["stages"]["chip"]["retry_faults"] = [2, 5, 6]
        cfg = cli.home.parent / "retry-data.toml"
        cfg.write_text(tomli_w.dumps(data))
        cli.env["SCBUNDLE_CONFIG"] = str(cfg)
    cli("db", "upgrade")
    cli("demo-data", "--images", str(n))
    rid = cli.json("define", "--label", "p", "--stage", "chip", "--job-policy", policy)["remote_id"]
    for imfile_id in corrupt:  # truncated pixels: a data fault (5), abandoned after 2 tries
        raw = Path(q(cli, "select uri from imfile where imfile_id=?", imfile_id)[0][0])
        raw.write_bytes(raw.read_bytes()[:40])
    cli("prepare", "chip", "--remote-id", str(rid))
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "240")
    return rid


def test_demo_carries_the_data_through_four_stages(cli):
    p = cli("demo", "--images", "24")  # 3 exposures of 8 chips
    out = p.stdout
    assert "chip -> cam -> warp -> stack" in out and "Njobs" in out
    runs = q(cli, "select remote_id, stage, state, fault, advanced from remote_run order by remote_id")
    assert runs == [(1, "chip", "full", 0, 1), (2, "cam", "full", 0, 1), (3, "warp", "full", 0, 1), (4, "stack", "full", 0, 1)]
    assert q(cli, "select count(*) from cam_result") == [(3,)]
    n_warps = q(cli, "select count(*) from warp")[0][0]
    assert q(cli, "select count(*) from warp_result") == [(n_warps,)] and 3 * 2 <= n_warps <= 3 * 4
    per_exposure = q(cli, "select exp_id, count(*) from warp group by exp_id")
    assert all(2 <= n <= 4 for _, n in per_exposure)  # each exposure overlaps 2-4 sky cells
    stacks = q(cli, "select stack_id, skycell_id, filter, n_inputs from stack order by stack_id")
    assert stacks and q(cli, "select count(*) from stack_result") == [(len(stacks),)]
    assert sum(n for *_, n in stacks) == n_warps  # every good warp is in one stack (one filter here)

    # cam: each chip's binned image, less its median, in its slot of the mosaic
    exp_id, mosaic_uri, width = q(cli, "select exp_id, mosaic_uri, width from cam_result order by exp_id")[0]
    w, h, mosaic = sc_chip.read_proc(mosaic_uri)
    assert (w, h) == (166, 66) and w == width
    binned_uri, class_id = q(cli, "select c.binned_uri, i.class_id from chip_result c join imfile i using (imfile_id) "
                               "where i.exp_id=? and i.class_id='xy06'", exp_id)[0]  # fmt: skip
    bw, bh, chip = sc_chip.read_proc(binned_uri)
    x0, y0 = 42, 34  # xy06: column 1, row 1 of the camera
    med = sc_chip.pixel_stats(chip)["median"]
    assert close([mosaic[(y0 + y) * w + x0 + x] for y in range(bh) for x in range(bw)], [v - med for v in chip])

    # warp: the mosaic resampled through the geometry's affine transform
    from scbundle.stages.geometry import Pointing, SkyCell, warp_affine

    wid, e_id, image_uri = q(cli, "select w.warp_id, w.exp_id, r.image_uri from warp w join warp_result r using (warp_id) order by warp_id")[0]
    ra, dec, rot = q(cli, "select ra_deg, dec_deg, rot_deg from exposure where exp_id=?", e_id)[0]
    cell = SkyCell(*q(cli, "select skycell_id, name, proj_ra_deg, proj_dec_deg, scale_arcsec, x0, y0, width, height from skycell "
                          "where skycell_id=(select skycell_id from warp where warp_id=?)", wid)[0])  # fmt: skip
    m_uri = q(cli, "select mosaic_uri from cam_result where exp_id=?", e_id)[0][0]
    mw, mh, m = sc_chip.read_proc(m_uri)
    expect = sc_warp.resample(m, mw, mh, cell.width, cell.height, warp_affine(Pointing(ra, dec, rot), cell, (mw, mh)))
    ww, wh, warp = sc_chip.read_proc(image_uri)
    assert (ww, wh) == (cell.width, cell.height) and close(warp, list(expect))
    assert q(cli, "select npix from warp_result where warp_id=?", wid)[0][0] == sum(1 for v in warp if v == v) > 0

    # stack: the mean of its warps, pixel by pixel; a stack of one warp is that warp
    for stack_id, _, _, n in stacks:
        inputs = [sc_chip.read_proc(u)[2] for (u,) in q(cli, "select r.image_uri from stack_input i join warp_result r using (warp_id) where i.stack_id=?", stack_id)]
        image = sc_chip.read_proc(q(cli, "select image_uri from stack_result where stack_id=?", stack_id)[0][0])[2]
        assert len(inputs) == n
        mean = []
        for k in range(len(image)):
            vals = [im[k] for im in inputs if im[k] == im[k]]
            mean.append(sum(vals) / len(vals) if vals else float("nan"))
        assert close(image, mean)
        if n == 1:
            assert close(image, inputs[0], tol=1e-6)
    # permanent products came back; intermediates (full-size processed chips) stayed on the site
    assert not list((cli.home / "data" / "chip").rglob("*.ch.proc"))
    assert len(list((cli.home / "data" / "chip").rglob("*.ch.b2"))) == 24
    assert len(list((cli.home / "data" / "stack").rglob("*.stk.*.stats.json"))) == len(stacks)
    # the later stages found their inputs already on the site: nothing was pushed again
    st = cli.json("status", "--label", "demo")
    assert [r["advanced"] for r in st["runs"]] == [True] * 4 and st["blocked"] == []


def test_identical_warps_stack_to_the_warp(cli, tmp_path):
    vals = array("f", [float(k % 17) - 3.5 if k % 5 else float("nan") for k in range(100 * 100)])
    warps = []
    for i in range(3):
        sc_chip.write_proc(str(tmp_path / f"w{i}"), 100, 100, vals)
        warps += ["--input", str(tmp_path / f"w{i}")]
    r = subprocess.run([sys.executable, "-S", str(REMOTE / "sc_stack.py"), "combine", "--out", str(tmp_path / "s"),
                        "--stats", str(tmp_path / "s.json"), *warps], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert close(sc_chip.read_proc(str(tmp_path / "s"))[2], vals, tol=1e-6)


def test_exposure_with_a_failed_chip_does_not_advance_and_status_says_why(cli):
    chip_run_to_end(cli, 16, corrupt=[3])  # exposure 1 (imfiles 1-8) loses chip xy03
    # the failure was abandoned in the job: nothing is left to run, the run is full and says so
    state, fault, message = q(cli, "select state, fault, message from remote_run")[0]
    assert (state, fault) == ("full", 5) and "1 of 16 component(s) abandoned" in message
    out = cli("advance").stdout
    assert "advanced to cam: 1 queued in remote_id 2" in out and "1 blocked" in out
    assert q(cli, "select stage, stage_id from remote_component where stage='cam'") == [("cam", 2)]
    status = cli("status").stdout
    assert "remote_id 1 (chip): advance blocked 1 cam item(s):" in status
    line = next(x for x in status.splitlines() if "exposure o5300g0001o" in x)
    assert "1 of 8 chips failed: chip xy03" in line and "abandoned, fault 5" in line
    st = cli.json("status")
    assert st["blocked"] == [{"remote_id": 1, "stage": "cam", "item_id": 1, "item": "exposure o5300g0001o", "reason": st["blocked"][0]["reason"]}]
    assert "chip 3 in remote_id 1 abandoned" in st["blocked"][0]["reason"]
    assert q(cli, "select advanced from remote_run where remote_id=1") == [(1,)]


def test_job_policy_ignore_run_advances_its_good_exposures(cli):
    chip_run_to_end(cli, 16, policy="ignore", corrupt=[12])
    assert q(cli, "select state from remote_run") == [("full",)]
    rep = cli.json("advance")
    assert [d["n_components"] for d in rep["defined"]] == [1] and rep["defined"][0]["stage"] == "cam"
    assert [(b["item"], b["stage"]) for b in rep["blocked"]] == [("exposure o5300g0002o", "cam")]


def test_advance_twice_and_two_processes_at_once_queue_once(cli, tmp_path):
    chip_run_to_end(cli, 16)
    go = tmp_path / "go"
    env = dict(cli.env, SCBUNDLE_FAILPOINT=f"advance.examined@{go}")
    first = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "advance"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not go.with_name("go.reached").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert go.with_name("go.reached").exists(), first.communicate(timeout=5)
        # the first holds the write lock, in the middle of its advance: the second waits for it
        second = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "advance"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert second.poll() is None
        go.touch()
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "advanced to cam: 2 queued in remote_id 2" in out1
    assert "nothing to advance" in out2
    assert q(cli, "select remote_id, stage from remote_run where stage='cam'") == [(2, "cam")]
    assert q(cli, "select stage_id from remote_component where stage='cam' order by stage_id") == [(1,), (2,)]
    # again: nothing; re-examining the run explicitly finds its work queued before
    assert "nothing to advance" in cli("advance").stdout
    out = cli("advance", "--remote-id", "1").stdout
    assert "0 queued" in out and "2 queued before" in out
    assert q(cli, "select count(*) from remote_run") == [(2,)]
    assert q(cli, "select count(*) from task_activity") == [(0,)]


def test_a_second_component_for_queued_work_is_refused_by_the_database(cli):
    from scbundle.core.app import App
    from scbundle.core.config import config_from_dict, embedded_default
    from scbundle.core.errors import DatabaseError
    from scbundle.db.runs import new_run
    from scbundle.db.session import Database

    cli("db", "upgrade")
    cli("demo-data", "--images", "8")
    cfg = config_from_dict(embedded_default(cli.home), "test")
    app = App(cfg, Database(cfg.database))
    with app.db.session() as s:
        new_run(s, stage="cam", label="x", site="local", job_policy="fatal", stage_ids=[1])
    with pytest.raises(DatabaseError, match="UNIQUE"):
        with app.db.session() as s:
            new_run(s, stage="cam", label="x", site="local", job_policy="fatal", stage_ids=[1])
    assert q(cli, "select count(*) from remote_run") == [(1,)]  # the second run rolled back with it


def test_advance_switch_and_the_pipeline_from_config(cli, tmp_path):
    chip_run_to_end(cli, 8)
    cli("tasks", "off", "advance")
    p = cli("advance", check=False)
    assert p.returncode == 1 and "advance is switched off" in p.stderr and q(cli, "select count(*) from remote_run") == [(1,)]
    cli("tasks", "on", "advance")
    cfg = tmp_path / "c.toml"
    home = cli.home
    cfg.write_text(
        f'database = "sqlite:///{home}/scbundle.db"\nworkdir = "{home}/work"\n'
        f'[sites.local]\nremote_root = "{home}/site-local/scratch"\npermanent_root = "{home}/site-local/permanent"\n'
        f'paths = [{{local = "{home}/data", remote = "{home}/site-local/scratch/data"}}]\n'
        f'[stages.chip]\nnext_stage = ""\n'
    )
    out = cli("--config", str(cfg), "advance").stdout
    assert "chip is the last stage of the pipeline" in out and q(cli, "select count(*) from remote_run") == [(1,)]
    cfg.write_text(cfg.read_text().replace('next_stage = ""', 'next_stage = "chop"'))
    p = cli("--config", str(cfg), "advance", check=False)
    assert p.returncode == 1 and "stages.chip.next_stage 'chop' is no stage" in p.stderr


@pytest.mark.slow
def test_daemon_carries_a_chip_run_through_the_pipeline(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "8")
    cli("define", "--label", "d", "--stage", "chip")
    d = subprocess.Popen([sys.executable, "-m", "scbundle.cli", "daemon", "--loop-seconds", "0.3", "--poll-seconds", "0"],
                         env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and q(cli, "select count(*) from remote_run where stage='stack' and state='full'") != [(1,)]:
            time.sleep(0.5)
        assert q(cli, "select stage, state from remote_run order by remote_id") == [
            ("chip", "full"), ("cam", "full"), ("warp", "full"), ("stack", "full")]
    finally:
        d.terminate()
        out, _ = d.communicate(timeout=60)
    assert "advance remote_id 1: advanced to cam: 1 queued in remote_id 2" in out
    assert json.loads(json.dumps(q(cli, "select count(*) from stack_result")))[0][0] >= 1
