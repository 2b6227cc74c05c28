#!/usr/bin/env python3
"""The demo pipeline's "cam" program: one exposure's chips into one mosaic (stdlib only).

    python3 sc_cam.py mosaic --out MOSAIC --stats STATS --width W --height H \\
        --chip X0 Y0 BINNED [--chip X0 Y0 BINNED ...]
    python3 sc_cam.py dbinfo --stats STATS --exp-id N

Each BINNED is a chip's 2x2-binned processed image (SCPROC1, written by sc_chip.py
process --binned). Its background (the median of its finite pixels) is subtracted and
it is placed with its pixel (0, 0) at (X0, Y0) of a W x H mosaic (SCPROC1; NaN where no
chip is). Chips must lie inside the mosaic and must not overlap. STATS (JSON) holds the
mosaic's pixel statistics (sc_chip.pixel_stats), the number of chips, the exposure's sky
(the median of the chip backgrounds) and its spread (max - min of them).

The image formats and the exit codes are sc_chip.py's (it sits beside this file):
0 ok; 2 operating-system error; 3 usage error; 5 bad, missing or mismatched input data.
"""

import json
import os
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_chip  # noqa: E402
from sc_chip import NUM, ChipDataError  # noqa: E402


def mosaic(chips, width, height, out_path, stats_path) -> dict:
    """``chips``: [(x0, y0, binned path)]."""
    t0 = time.perf_counter()
    if width < 1 or height < 1:
        raise ChipDataError("mosaic size %dx%d is not positive" % (width, height))
    if not chips:
        raise ChipDataError("no chip given")
    nan = float("nan")
    out = array("f", [nan]) * (width * height)
    owner = [None] * (width * height)  # which chip holds each mosaic pixel
    backgrounds = []
    for x0, y0, path in chips:
        w, h, px = sc_chip.read_proc(path)
        if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
            raise ChipDataError("%s: a %dx%d chip at (%d, %d) does not fit the %dx%d mosaic"
                                % (path, w, h, x0, y0, width, height))
        bg = sc_chip.pixel_stats(px)["median"]
        if bg is None:
            raise ChipDataError("%s: no finite pixel" % path)
        backgrounds.append(bg)
        for y in range(h):
            row = (y0 + y) * width + x0
            src = y * w
            for x in range(w):
                k = row + x
                if owner[k] is not None:
                    raise ChipDataError("%s overlaps %s in the mosaic at (%d, %d)"
                                        % (path, owner[k], x0 + x, y0 + y))
                owner[k] = path
                v = px[src + x]
                out[k] = v - bg if v == v else nan
    stats = sc_chip.pixel_stats(out)
    sc_chip._write_or_os_error(sc_chip.write_proc, out_path, width, height, out)
    backgrounds.sort()
    n = len(backgrounds)
    sky = backgrounds[n // 2] if n % 2 else (backgrounds[n // 2 - 1] + backgrounds[n // 2]) / 2.0
    stats.update({"n_chips": n, "sky": sky, "sky_spread": backgrounds[-1] - backgrounds[0],
                  "width": width, "height": height,
                  "seconds": round(time.perf_counter() - t0, 6)})
    text = json.dumps(stats, sort_keys=True, allow_nan=False) + "\n"
    sc_chip._write_or_os_error(sc_chip._write_text_atomic, stats_path, text)
    return stats


CAM_DBINFO = [
    ("n_chips", "n_chips", int, False),
    ("npix", "npix", int, False),
    ("mean", "mean", NUM, True),
    ("stdev", "stdev", NUM, True),
    ("median", "median", NUM, True),
    ("sky", "sky", NUM, False),
    ("sky_spread", "sky_spread", NUM, False),
    ("width", "width", int, False),
    ("height", "height", int, False),
    ("dtime_cam", "seconds", NUM, False),
]


def dbinfo(stats_path, exp_id) -> dict:
    return sc_chip.stats_record(stats_path, "cam_result", "exp_id", exp_id, CAM_DBINFO)


def build_parser():
    p = sc_chip.Parser(prog="sc_cam.py", description="The demo pipeline's cam program.")
    sub = p.add_subparsers(dest="cmd", metavar="{mosaic,dbinfo}", parser_class=sc_chip.Parser)
    sub.required = True
    sp = sub.add_parser("mosaic", help="place an exposure's binned chips into one mosaic")
    sp.add_argument("--out", required=True)
    sp.add_argument("--stats", required=True)
    sp.add_argument("--width", type=int, required=True)
    sp.add_argument("--height", type=int, required=True)
    sp.add_argument("--chip", nargs=3, action="append", required=True, metavar=("X0", "Y0", "BINNED"))
    sp = sub.add_parser("dbinfo", help="print the cam_result dbinfo record of STATS")
    sp.add_argument("--stats", required=True)
    sp.add_argument("--exp-id", type=int, required=True)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chips = []
    if args.cmd == "mosaic":
        for x0, y0, path in args.chip:
            try:
                chips.append((int(x0), int(y0), path))
            except ValueError:
                parser.error("--chip %s %s %s: X0 and Y0 must be integers" % (x0, y0, path))

    def work():
        if args.cmd == "mosaic":
            mosaic(chips, args.width, args.height, args.out, args.stats)
        else:
            sc_chip.print_record(dbinfo(args.stats, args.exp_id))

    return sc_chip.run_guarded("sc_cam.py %s" % args.cmd, work)


if __name__ == "__main__":
    sys.exit(main())
