#!/usr/bin/env python3
"""The demo pipeline's "stack" program: combine a sky cell's warps (stdlib only).

    python3 sc_stack.py combine --out STACK --stats STATS --input WARP [--input WARP ...]
    python3 sc_stack.py dbinfo --stats STATS --stack-id N

Every WARP is one exposure resampled onto the same sky cell (SCPROC1, from sc_warp.py),
so they must all have the same size. STACK (SCPROC1, same size) is, pixel by pixel, the
mean of the inputs' finite values (NaN where no input has one). STATS (JSON): the stack's
pixel statistics (sc_chip.pixel_stats), the number of inputs, the coverage (fraction of
finite pixels) and the mean depth (inputs contributing to a covered pixel, on average).

Formats and exit codes are sc_chip.py's: 0 ok; 2 operating-system error; 3 usage error;
5 bad, missing or mismatched input data.
"""

import json
import os
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_chip  # noqa: E402
from sc_chip import NUM, ChipDataError  # noqa: E402


def combine(inputs, out_path, stats_path) -> dict:
    t0 = time.perf_counter()
    if not inputs:
        raise ChipDataError("no input warp given")
    size = None
    total = count = None
    for path in inputs:
        w, h, px = sc_chip.read_proc(path)
        if size is None:
            size = (w, h)
            total = [0.0] * (w * h)
            count = [0] * (w * h)
        elif (w, h) != size:
            raise ChipDataError("%s is %dx%d, %s is %dx%d: warps of one sky cell must match"
                                % (path, w, h, inputs[0], size[0], size[1]))
        for k, v in enumerate(px):
            if v == v:
                total[k] += v
                count[k] += 1
    nan = float("nan")
    out = array("f", [t / n if n else nan for t, n in zip(total, count)])
    stats = sc_chip.pixel_stats(out)
    covered = [n for n in count if n]
    sc_chip._write_or_os_error(sc_chip.write_proc, out_path, size[0], size[1], out)
    stats.update({"n_inputs": len(inputs), "coverage": len(covered) / float(len(count)),
                  "depth": (sum(covered) / float(len(covered))) if covered else 0.0,
                  "width": size[0], "height": size[1],
                  "seconds": round(time.perf_counter() - t0, 6)})
    text = json.dumps(stats, sort_keys=True, allow_nan=False) + "\n"
    sc_chip._write_or_os_error(sc_chip._write_text_atomic, stats_path, text)
    return stats


STACK_DBINFO = [
    ("n_inputs", "n_inputs", int, False),
    ("npix", "npix", int, False),
    ("coverage", "coverage", NUM, False),
    ("depth", "depth", NUM, False),
    ("mean", "mean", NUM, True),
    ("stdev", "stdev", NUM, True),
    ("median", "median", NUM, True),
    ("dtime_stack", "seconds", NUM, False),
]


def dbinfo(stats_path, stack_id) -> dict:
    return sc_chip.stats_record(stats_path, "stack_result", "stack_id", stack_id, STACK_DBINFO)


def build_parser():
    p = sc_chip.Parser(prog="sc_stack.py", description="The demo pipeline's stack program.")
    sub = p.add_subparsers(dest="cmd", metavar="{combine,dbinfo}", parser_class=sc_chip.Parser)
    sub.required = True
    sp = sub.add_parser("combine", help="average a sky cell's warps")
    sp.add_argument("--out", required=True)
    sp.add_argument("--stats", required=True)
    sp.add_argument("--input", action="append", required=True)
    sp = sub.add_parser("dbinfo", help="print the stack_result dbinfo record of STATS")
    sp.add_argument("--stats", required=True)
    sp.add_argument("--stack-id", type=int, required=True)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def work():
        if args.cmd == "combine":
            combine(args.input, args.out, args.stats)
        else:
            sc_chip.print_record(dbinfo(args.stats, args.stack_id))

    return sc_chip.run_guarded("sc_stack.py %s" % args.cmd, work)


if __name__ == "__main__":
    sys.exit(main())
