"""sc_chip --binned, sc_cam, sc_warp, sc_stack: the demo pipeline's later programs, run as
real subprocesses (stdlib only, -S)."""

import json
import math
import os
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

PY = os.environ.get("SCBUNDLE_REMOTE_PYTHON", sys.executable)
REMOTE = Path(__file__).resolve().parents[2] / "remote"
sys.path.insert(0, str(REMOTE))
import sc_chip  # noqa: E402
import sc_warp  # noqa: E402

NAN = float("nan")


def tool(name, *args):
    return subprocess.run([PY, "-S", str(REMOTE / name), *map(str, args)], capture_output=True, text=True, timeout=60)


def write(path, w, h, values):
    sc_chip.write_proc(str(path), w, h, array("f", values))
    return path


def same(a, b, tol=1e-5):
    return all((x != x and y != y) or abs(x - y) <= tol * max(1.0, abs(x)) for x, y in zip(a, b, strict=True))


def test_chip_binned_is_the_2x2_mean_of_finite_pixels(tmp_path):
    raw, flat = tmp_path / "r", tmp_path / "f"
    sc_chip.make_demo_raw(raw, 5, 4, seed=3)
    sc_chip.make_demo_flat(flat, 5, 4, seed=4)
    proc, binned = tmp_path / "p", tmp_path / "b"
    r = tool("sc_chip.py", "process", "--raw", raw, "--detrend", flat, "--out", proc, "--stats", tmp_path / "s", "--binned", binned)
    assert r.returncode == 0, r.stderr
    w, h, px = sc_chip.read_proc(proc)
    bw, bh, bx = sc_chip.read_proc(binned)
    assert (bw, bh) == (3, 2)
    assert math.isclose(bx[0], (px[0] + px[1] + px[5] + px[6]) / 4, rel_tol=1e-6)
    assert math.isclose(bx[2], (px[4] + px[9]) / 2, rel_tol=1e-6)  # the odd column bins what it has
    assert sc_chip.bin2(2, 1, [NAN, 3.0])[2][0] == 3.0 and math.isnan(sc_chip.bin2(1, 1, [NAN])[2][0])


def test_cam_places_chips_minus_their_background(tmp_path):
    a = write(tmp_path / "a", 2, 2, [1, 2, 3, 10])  # median 2.5
    b = write(tmp_path / "b", 3, 1, [5, NAN, 7])  # median 6
    out, stats = tmp_path / "m", tmp_path / "m.json"
    r = tool("sc_cam.py", "mosaic", "--out", out, "--stats", stats, "--width", 6, "--height", 3,
             "--chip", 0, 0, a, "--chip", 3, 2, b)
    assert r.returncode == 0, r.stderr
    w, h, px = sc_chip.read_proc(out)
    assert (w, h) == (6, 3)
    expect = [-1.5, -0.5, NAN, NAN, NAN, NAN, 0.5, 7.5, NAN, NAN, NAN, NAN, NAN, NAN, NAN, -1, NAN, 1]
    assert same(px, expect)
    s = json.loads(stats.read_text())
    assert (s["n_chips"], s["npix"], s["sky"], s["sky_spread"]) == (2, 6, 4.25, 3.5)
    rec = json.loads(tool("sc_cam.py", "dbinfo", "--stats", stats, "--exp-id", 7).stdout)
    assert rec["table"] == "cam_result" and rec["key"] == {"exp_id": 7}
    assert rec["values"]["n_chips"] == 2 and rec["values"]["sky"] == 4.25


@pytest.mark.parametrize("args, why", [
    (["--chip", 5, 0, "A"], "does not fit"),
    (["--chip", 0, 0, "A", "--chip", 1, 1, "A"], "overlaps"),
    (["--chip", 0, 0, "MISSING"], "missing input"),
])  # fmt: skip
def test_cam_refuses_bad_layouts_with_exit_5(tmp_path, args, why):
    a = write(tmp_path / "a", 2, 2, [1, 2, 3, 4])
    args = [str(a) if x == "A" else str(tmp_path / "nope") if x == "MISSING" else x for x in args]
    r = tool("sc_cam.py", "mosaic", "--out", tmp_path / "m", "--stats", tmp_path / "s", "--width", 6, "--height", 3, *args)
    assert r.returncode == 5 and why in r.stderr
    assert tool("sc_cam.py", "mosaic", "--out", "x", "--stats", "y", "--width", 2, "--height", 2, "--chip", "a", 0, a).returncode == 3


def test_warp_identity_shift_and_rotation(tmp_path):
    w, h = 7, 5
    src = [float(x * 10 + y) for y in range(h) for x in range(w)]
    src[3 * w + 4] = NAN  # a gap pixel
    m = write(tmp_path / "m", w, h, src)

    def run(width, height, affine):
        out, stats = tmp_path / "w", tmp_path / "w.json"
        r = tool("sc_warp.py", "warp", "--in", m, "--out", out, "--stats", stats, "--width", width, "--height", height, "--affine", *affine)
        return r, (sc_chip.read_proc(out)[2] if r.returncode == 0 else None), (json.loads(stats.read_text()) if r.returncode == 0 else None)

    r, px, s = run(w, h, (1, 0, 0, 0, 1, 0))
    assert r.returncode == 0, r.stderr
    assert same(px, src)  # exact pixel centres keep their values, even beside the gap
    assert s["npix"] == w * h - 1 and math.isclose(s["coverage"], (w * h - 1) / (w * h))
    # shifted by (+2, +1): pixel (i, j) reads the mosaic at (i + 2, j + 1); outside is NaN
    r, px, _ = run(4, 3, (1, 0, 2, 0, 1, 1))
    assert px[0] == src[1 * w + 2] and px[1 * 4 + 3] == src[2 * w + 5]
    # half a pixel: the bilinear mean of two neighbours
    r, px, _ = run(2, 1, (1, 0, 0.5, 0, 1, 0))
    assert math.isclose(px[0], (src[0] + src[1]) / 2)
    # a rotation by 90 degrees: (i, j) -> (u, v) = (j, 4 - i)
    r, px, _ = run(5, 5, (0, 1, 0, -1, 0, 4))
    assert px[0 * 5 + 2] == src[2 * w + 0] and px[4 * 5 + 0] == src[4 * w + 4] and math.isnan(px[4 * 5 + 1])
    # the reference implementation agrees with the program
    aff = (0.998, 0.035, 1.3, -0.035, 0.998, 0.7)
    r, px, _ = run(6, 4, aff)
    assert same(px, sc_warp.resample(array("f", src), w, h, 6, 4, aff))
    r, _, _ = run(3, 3, (1, 0, 100, 0, 1, 100))
    assert r.returncode == 5 and "covers no pixel" in r.stderr
    rec = json.loads(tool("sc_warp.py", "dbinfo", "--stats", tmp_path / "w.json", "--warp-id", 12).stdout)
    assert rec["key"] == {"warp_id": 12} and rec["values"]["npix"] > 0


def test_stack_of_identical_warps_equals_the_warp(tmp_path):
    vals = [1.5, NAN, -3.25, 7.0, 0.125, 2.0]
    warps = [write(tmp_path / f"w{i}", 3, 2, vals) for i in range(4)]
    out, stats = tmp_path / "s", tmp_path / "s.json"
    r = tool("sc_stack.py", "combine", "--out", out, "--stats", stats, *[x for w in warps for x in ("--input", w)])
    assert r.returncode == 0, r.stderr
    assert same(sc_chip.read_proc(out)[2], vals, tol=1e-6)
    s = json.loads(stats.read_text())
    assert (s["n_inputs"], s["npix"], s["depth"]) == (4, 5, 4.0)
    # different warps: the mean of the finite values, pixel by pixel
    write(tmp_path / "x", 3, 2, [2.5, 4.0, NAN, NAN, NAN, NAN])
    r = tool("sc_stack.py", "combine", "--out", out, "--stats", stats, "--input", warps[0], "--input", tmp_path / "x")
    assert same(sc_chip.read_proc(out)[2], [2.0, 4.0, -3.25, 7.0, 0.125, 2.0])
    write(tmp_path / "bad", 2, 3, vals)
    r = tool("sc_stack.py", "combine", "--out", out, "--stats", stats, "--input", warps[0], "--input", tmp_path / "bad")
    assert r.returncode == 5 and "must match" in r.stderr
    rec = json.loads(tool("sc_stack.py", "dbinfo", "--stats", stats, "--stack-id", 3).stdout)
    assert rec["table"] == "stack_result" and rec["key"] == {"stack_id": 3}
