#!/usr/bin/env python3
"""The demo pipeline's "warp" program: resample an exposure onto a sky cell (stdlib only).

    python3 sc_warp.py warp --in MOSAIC --out WARP --stats STATS --width W --height H \\
        --affine A B C D E F
    python3 sc_warp.py dbinfo --stats STATS --warp-id N

MOSAIC is an exposure's mosaic (SCPROC1, from sc_cam.py). WARP is the W x H sky cell
(SCPROC1): its pixel (i, j) takes the value of the mosaic at

    u = A*i + B*j + C,   v = D*i + E*j + F

(pixel centres at integer coordinates) by bilinear interpolation of the four mosaic pixels
around (u, v). A sky-cell pixel is NaN where (u, v) is outside the mosaic or any of the
four is NaN (chip gaps). The local side computes the affine transform from the exposure's
pointing and the sky cell's place in its projection cell. STATS (JSON): the warp's pixel
statistics (sc_chip.pixel_stats) and its coverage (the fraction of finite pixels). A warp
that covers no pixel at all is a data error (exit 5).

Formats and exit codes are sc_chip.py's: 0 ok; 2 operating-system error; 3 usage error;
5 bad, missing or mismatched input data.
"""

import json
import math
import os
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_chip  # noqa: E402
from sc_chip import NUM, ChipDataError  # noqa: E402


def resample(src, sw, sh, width, height, affine):
    """array('f') of width*height: ``src`` (sw x sh) sampled bilinearly through ``affine``."""
    a, b, c, d, e, f = affine
    nan = float("nan")
    out = array("f", [nan]) * (width * height)
    umax, vmax = sw - 1, sh - 1
    xlast, ylast = max(0, sw - 2), max(0, sh - 2)
    for j in range(height):
        ub, vb = b * j + c, e * j + f
        row = j * width
        for i in range(width):
            u = a * i + ub
            v = d * i + vb
            if u < 0.0 or v < 0.0 or u > umax or v > vmax:
                continue
            x0 = int(u)
            y0 = int(v)
            if x0 > xlast:
                x0 = xlast
            if y0 > ylast:
                y0 = ylast
            fx, fy = u - x0, v - y0
            gx, gy = 1.0 - fx, 1.0 - fy
            k = y0 * sw + x0
            # terms of zero weight are skipped: an exact pixel centre next to a gap keeps its value
            val = src[k] * (gx * gy) if gx > 0.0 and gy > 0.0 else 0.0
            if fx > 0.0 and gy > 0.0:
                val += src[k + 1] * (fx * gy)
            if fy > 0.0:
                if gx > 0.0:
                    val += src[k + sw] * (gx * fy)
                if fx > 0.0:
                    val += src[k + sw + 1] * fx * fy
            if val == val:  # a NaN among the weighted pixels poisons the sum
                out[row + i] = val
    return out


def warp(in_path, width, height, affine, out_path, stats_path) -> dict:
    t0 = time.perf_counter()
    if width < 1 or height < 1:
        raise ChipDataError("sky cell size %dx%d is not positive" % (width, height))
    if not all(math.isfinite(x) for x in affine):
        raise ChipDataError("the affine transform holds a non-finite number: %r" % (affine,))
    sw, sh, src = sc_chip.read_proc(in_path)
    out = resample(src, sw, sh, width, height, affine)
    stats = sc_chip.pixel_stats(out)
    if stats["npix"] == 0:
        raise ChipDataError("%s covers no pixel of the %dx%d sky cell" % (in_path, width, height))
    sc_chip._write_or_os_error(sc_chip.write_proc, out_path, width, height, out)
    stats.update({"coverage": stats["npix"] / float(width * height), "width": width,
                  "height": height, "seconds": round(time.perf_counter() - t0, 6)})
    text = json.dumps(stats, sort_keys=True, allow_nan=False) + "\n"
    sc_chip._write_or_os_error(sc_chip._write_text_atomic, stats_path, text)
    return stats


WARP_DBINFO = [
    ("npix", "npix", int, False),
    ("coverage", "coverage", NUM, False),
    ("mean", "mean", NUM, True),
    ("stdev", "stdev", NUM, True),
    ("median", "median", NUM, True),
    ("dtime_warp", "seconds", NUM, False),
]


def dbinfo(stats_path, warp_id) -> dict:
    return sc_chip.stats_record(stats_path, "warp_result", "warp_id", warp_id, WARP_DBINFO)


def build_parser():
    p = sc_chip.Parser(prog="sc_warp.py", description="The demo pipeline's warp program.")
    sub = p.add_subparsers(dest="cmd", metavar="{warp,dbinfo}", parser_class=sc_chip.Parser)
    sub.required = True
    sp = sub.add_parser("warp", help="resample MOSAIC onto a sky cell")
    sp.add_argument("--in", dest="inp", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--stats", required=True)
    sp.add_argument("--width", type=int, required=True)
    sp.add_argument("--height", type=int, required=True)
    sp.add_argument("--affine", type=float, nargs=6, required=True, metavar=("A", "B", "C", "D", "E", "F"))
    sp = sub.add_parser("dbinfo", help="print the warp_result dbinfo record of STATS")
    sp.add_argument("--stats", required=True)
    sp.add_argument("--warp-id", type=int, required=True)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def work():
        if args.cmd == "warp":
            warp(args.inp, args.width, args.height, tuple(args.affine), args.out, args.stats)
        else:
            sc_chip.print_record(dbinfo(args.stats, args.warp_id))

    return sc_chip.run_guarded("sc_warp.py %s" % args.cmd, work)


if __name__ == "__main__":
    sys.exit(main())
