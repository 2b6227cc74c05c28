"""sc_chip.py: the demo chip program, run as a real subprocess."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PY = os.environ.get("SCBUNDLE_REMOTE_PYTHON", sys.executable)  # e.g. the remote's python3.9

REMOTE = Path(__file__).resolve().parents[2] / "remote"
CHIP = REMOTE / "sc_chip.py"
sys.path.insert(0, str(REMOTE))
import sc_chip  # noqa: E402


def chip(*args):
    return subprocess.run([PY, str(CHIP), *map(str, args)],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def demo(tmp_path):
    raw, flat = tmp_path / "a.raw", tmp_path / "a.flat"
    pixels = sc_chip.make_demo_raw(raw, 64, 64, seed=11, saturate_fraction=0.02)
    bias, gains = sc_chip.make_demo_flat(flat, 64, 64, seed=12)
    return raw, flat, pixels, bias, gains


def test_demo_data_is_deterministic(tmp_path):
    a, b = tmp_path / "a.raw", tmp_path / "b.raw"
    sc_chip.make_demo_raw(a, 32, 16, seed=5)
    sc_chip.make_demo_raw(b, 32, 16, seed=5)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes().startswith(b"SCRAW1 32 16\n")
    assert len(a.read_bytes()) == len(b"SCRAW1 32 16\n") + 32 * 16 * 2
    w, h, px = sc_chip.read_raw(a)
    assert (w, h) == (32, 16) and max(px) < 65535  # no saturation unless asked
    sc_chip.make_demo_flat(tmp_path / "f", 32, 16, seed=5)
    w, h, bias, gains = sc_chip.read_flat(tmp_path / "f")
    assert (w, h) == (32, 16) and math.isfinite(bias) and min(gains) > 0


def test_process_and_dbinfo(tmp_path, demo):
    raw, flat, pixels, bias, gains = demo
    out, stats = tmp_path / "out" / "a.proc", tmp_path / "out" / "a.stats.json"
    out.parent.mkdir()
    r = chip("process", "--raw", raw, "--detrend", flat, "--out", out, "--stats", stats)
    assert r.returncode == 0, r.stderr
    s = json.loads(stats.read_text())
    nsat = sum(1 for p in pixels if p == 65535)
    assert nsat == round(0.02 * 64 * 64)
    assert s["nsat"] == nsat and s["npix"] == 64 * 64 - nsat
    assert (s["width"], s["height"]) == (64, 64)
    assert s["seconds"] >= 0

    w, h, proc = sc_chip.read_proc(out)
    assert (w, h) == (64, 64)
    good = [v for v in proc if not math.isnan(v)]
    assert len(good) == s["npix"]
    # independent check of one unsaturated pixel and of the statistics
    i = next(k for k, p in enumerate(pixels) if p != 65535)
    assert proc[i] == pytest.approx((pixels[i] - bias) / gains[i], rel=1e-6)
    assert s["mean"] == pytest.approx(sum(good) / len(good))
    assert s["min"] == min(good) and s["max"] == max(good)
    assert s["median"] == pytest.approx(sorted(good)[len(good) // 2], rel=1e-3)
    assert s["stdev"] > 0
    assert not list(out.parent.glob("*.tmp.*"))

    r = chip("dbinfo", "--stats", stats, "--imfile-id", 4242)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["table"] == "chip_result"
    assert rec["key"] == {"imfile_id": 4242}
    v = rec["values"]
    assert v == {"mean": s["mean"], "stdev": s["stdev"], "median": s["median"],
                 "npix": s["npix"], "nsat": s["nsat"], "bg_min": s["min"],
                 "bg_max": s["max"], "dtime_chip": s["seconds"]}


def test_process_is_fast(tmp_path, demo):
    raw, flat = demo[0], demo[1]
    t0 = time.perf_counter()
    sc_chip.process(raw, flat, tmp_path / "o", tmp_path / "s")
    assert time.perf_counter() - t0 < 0.1


def test_all_saturated_gives_null_stats(tmp_path):
    sc_chip.write_raw(tmp_path / "r", 2, 2, [65535] * 4)
    sc_chip.write_flat(tmp_path / "f", 2, 2, 10.0, [1.0] * 4)
    r = chip("process", "--raw", tmp_path / "r", "--detrend", tmp_path / "f",
             "--out", tmp_path / "o", "--stats", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s").read_text())
    assert s["npix"] == 0 and s["nsat"] == 4 and s["mean"] is None
    r = chip("dbinfo", "--stats", tmp_path / "s", "--imfile-id", 1)
    assert r.returncode == 0 and json.loads(r.stdout)["values"]["mean"] is None


def _corrupt(kind, path, good):
    data = good.read_bytes()
    if kind == "missing":
        return
    if kind == "bad_magic":
        path.write_bytes(b"SCRAW2" + data[6:])
    elif kind == "bad_header":
        path.write_bytes(b"SCRAW1 64 x\n" + data[data.index(b"\n") + 1:])
    elif kind == "no_header":
        path.write_bytes(b"\x00" * 300)
    elif kind == "truncated":
        path.write_bytes(data[:-1])
    elif kind == "trailing":
        path.write_bytes(data + b"\x00\x00")
    elif kind == "mismatch":
        sc_chip.make_demo_raw(path, 32, 64, seed=1)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", ["missing", "bad_magic", "bad_header", "no_header",
                                  "truncated", "trailing", "mismatch", "directory"])
def test_bad_raw_is_a_data_fault(tmp_path, demo, kind):
    raw, flat = demo[0], demo[1]
    bad = tmp_path / "bad.raw"
    _corrupt(kind, bad, raw)
    out, stats = tmp_path / "o", tmp_path / "s"
    r = chip("process", "--raw", bad, "--detrend", flat, "--out", out, "--stats", stats)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "bad.raw" in r.stderr
    assert not out.exists() and not stats.exists()


def test_bad_flat_is_a_data_fault(tmp_path, demo):
    raw, flat = demo[0], demo[1]
    bad = tmp_path / "bad.flat"
    data = flat.read_bytes()
    bad.write_bytes(data.replace(data[:data.index(b"\n")], b"SCFLAT1 64 64 nan", 1))
    r = chip("process", "--raw", raw, "--detrend", bad, "--out", tmp_path / "o",
             "--stats", tmp_path / "s")
    assert r.returncode == 5 and "bad.flat" in r.stderr


def test_usage_and_output_errors(tmp_path, demo):
    raw, flat = demo[0], demo[1]
    assert chip("process", "--raw", raw).returncode == 3
    assert chip("dbinfo", "--stats", "x", "--imfile-id", "notanumber").returncode == 3
    assert chip("bogus").returncode == 3
    r = chip("process", "--raw", raw, "--detrend", flat,
             "--out", tmp_path / "nodir" / "o", "--stats", tmp_path / "s")
    assert r.returncode == 2 and "nodir" in r.stderr


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]", '{"mean": 1.0}',
                                     '{"npix": "x", "nsat": 0, "mean": 1, "stdev": 1, '
                                     '"median": 1, "min": 1, "max": 1, "seconds": 0}'])
def test_dbinfo_bad_stats(tmp_path, content):
    stats = tmp_path / "s.json"
    if content is not None:
        stats.write_text(content)
    r = chip("dbinfo", "--stats", stats, "--imfile-id", 3)
    assert r.returncode == 5 and "s.json" in r.stderr
    assert r.stdout == ""
