#!/usr/bin/env python3
"""The demo pipeline's "chip" program: detrend a raw image (Python 3 standard library only).

    python3 sc_chip.py process --raw RAW --detrend FLAT --out OUT --stats STATS [--binned BIN]
    python3 sc_chip.py dbinfo --stats STATS --imfile-id N

File formats (little-endian):
    raw        b"SCRAW1 <width> <height>\\n"         then width*height uint16
    detrend    b"SCFLAT1 <width> <height> <bias>\\n" then width*height float32
    processed  b"SCPROC1 <width> <height>\\n"        then width*height float32

processed = (raw - bias) / flat. With --binned, also a 2x2-binned copy of the processed
image (SCPROC1; each binned pixel the mean of the finite pixels of its 2x2 block, NaN if
none; odd edges bin what they have): the small permanent product the later stages read. A raw pixel at 65535 is saturated: it is counted (nsat),
written as NaN and left out of the statistics; so is a pixel whose flat value is not a
positive finite number (counted as nbad). The statistics cover the remaining pixels
(npix of them; population standard deviation).

Exit codes (the pipeline's fault codes): 0 ok; 2 operating-system error (writing outputs,
reading an input that exists); 3 usage error; 5 bad, missing or mismatched input data.
"""

import argparse
import json
import math
import os
import sys
import time
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_protocol as P  # noqa: E402  (remote/sc_protocol.py: the atomic write, among others)

SATURATED = 65535
RAW_MAGIC = b"SCRAW1"
FLAT_MAGIC = b"SCFLAT1"
PROC_MAGIC = b"SCPROC1"
MAX_HEADER = 256
MAX_PIXELS = 1 << 30

EXIT_OS = 2
EXIT_USAGE = 3
EXIT_DATA = 5

assert array("H").itemsize == 2 and array("f").itemsize == 4
_BIG = sys.byteorder == "big"


class ChipDataError(Exception):
    """An input file is missing, malformed, truncated or does not match the other."""


# ---------------------------------------------------------------------------------------
# File formats


def _to_le_bytes(arr: array) -> bytes:
    if _BIG:
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def _write_bytes_atomic(path: str, data: bytes) -> None:
    """Write beside ``path`` and rename into place: a reader never sees half a file."""
    P.write_atomic(path, data, fsync=False)


def _write_atomic(path: str, header: bytes, arr: array) -> None:
    _write_bytes_atomic(path, header + _to_le_bytes(arr))


def _check_size(width, height, n):
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise ValueError("width and height must be positive integers")
    if n != width * height:
        raise ValueError("%d pixels given for a %dx%d image" % (n, width, height))


def write_raw(path, width, height, pixels) -> None:
    """Write a raw image (pixels: width*height ints in 0..65535, row by row)."""
    arr = pixels if isinstance(pixels, array) and pixels.typecode == "H" else array("H", pixels)
    _check_size(width, height, len(arr))
    _write_atomic(path, b"%s %d %d\n" % (RAW_MAGIC, width, height), arr)


def write_flat(path, width, height, bias, values) -> None:
    """Write a detrend (flat) image: a bias level and width*height float32 gains."""
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    _check_size(width, height, len(arr))
    bias = float(bias)
    if not math.isfinite(bias):
        raise ValueError("bias must be finite")
    _write_atomic(path, b"%s %d %d %s\n" % (FLAT_MAGIC, width, height, repr(bias).encode()), arr)


def write_proc(path, width, height, values) -> None:
    arr = values if isinstance(values, array) and values.typecode == "f" else array("f", values)
    _check_size(width, height, len(arr))
    _write_atomic(path, b"%s %d %d\n" % (PROC_MAGIC, width, height), arr)


def _positive_int(tok: bytes, path, what) -> int:
    if not tok.isdigit():
        raise ChipDataError("%s: bad %s %r in header" % (path, what, tok.decode("latin-1")))
    v = int(tok)
    if v < 1:
        raise ChipDataError("%s: %s must be positive" % (path, what))
    return v


def _read(path, magic: bytes, nextra: int, typecode: str):
    """Read one of the formats: (width, height, [extra header tokens], array)."""
    with open(path, "rb") as f:
        header = f.readline(MAX_HEADER)
        if not header.endswith(b"\n"):
            raise ChipDataError("%s: no %s header line" % (path, magic.decode()))
        toks = header[:-1].split(b" ")
        if not toks or toks[0] != magic:
            raise ChipDataError("%s: not a %s file (header %r)"
                                % (path, magic.decode(), header[:40].decode("latin-1")))
        if len(toks) != 3 + nextra:
            raise ChipDataError("%s: %s header needs %d fields, has %d"
                                % (path, magic.decode(), 3 + nextra, len(toks)))
        width = _positive_int(toks[1], path, "width")
        height = _positive_int(toks[2], path, "height")
        if width * height > MAX_PIXELS:
            raise ChipDataError("%s: %dx%d image is too large" % (path, width, height))
        arr = array(typecode)
        expected = width * height * arr.itemsize
        data = f.read(expected + 1)
    if len(data) < expected:
        raise ChipDataError("%s: truncated: %d pixel bytes, %dx%d needs %d"
                            % (path, len(data), width, height, expected))
    if len(data) > expected:
        raise ChipDataError("%s: more pixel data than %dx%d" % (path, width, height))
    arr.frombytes(data)
    if _BIG:
        arr.byteswap()
    return width, height, toks[3:], arr


def read_raw(path):
    """(width, height, array('H')) of a raw image; ChipDataError if malformed."""
    w, h, _, arr = _read(path, RAW_MAGIC, 0, "H")
    return w, h, arr


def read_flat(path):
    """(width, height, bias, array('f')) of a detrend image; ChipDataError if malformed."""
    w, h, extra, arr = _read(path, FLAT_MAGIC, 1, "f")
    try:
        bias = float(extra[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        bias = float("nan")
    if not math.isfinite(bias):
        raise ChipDataError("%s: bad bias %r in header" % (path, extra[0].decode("latin-1")))
    return w, h, bias, arr


def read_proc(path):
    """(width, height, array('f')) of a processed image (NaN marks excluded pixels)."""
    w, h, _, arr = _read(path, PROC_MAGIC, 0, "f")
    return w, h, arr


# ---------------------------------------------------------------------------------------
# Demo data


def make_demo_raw(path, width, height, seed, saturate_fraction=0.0):
    """Write a deterministic raw image: a sky level with noise, a few stars and, if asked,
    a fraction of saturated (65535) pixels. Returns the pixels (array('H')).

    Without saturate_fraction no pixel reaches 65535.
    """
    if not 0.0 <= saturate_fraction <= 1.0:
        raise ValueError("saturate_fraction must be within [0, 1]")
    import random  # here, not at the top: every component's command and post start faster

    rng = random.Random(seed)
    n = width * height
    sky = 800.0 + rng.uniform(0.0, 400.0)
    noise = math.sqrt(sky)
    gauss = rng.gauss
    img = [sky + gauss(0.0, noise) for _ in range(n)]
    for _ in range(max(3, n // 800)):
        cx, cy = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
        amp, sigma = rng.uniform(2000.0, 20000.0), rng.uniform(1.0, 2.5)
        r = int(math.ceil(3 * sigma))
        two_s2 = 2.0 * sigma * sigma
        for y in range(max(0, int(cy) - r), min(height, int(cy) + r + 2)):
            row = y * width
            dy2 = (y - cy) ** 2
            for x in range(max(0, int(cx) - r), min(width, int(cx) + r + 2)):
                img[row + x] += amp * math.exp(-((x - cx) ** 2 + dy2) / two_s2)
    pixels = array("H", (min(SATURATED - 1, max(0, int(round(v)))) for v in img))
    k = int(round(saturate_fraction * n))
    for i in rng.sample(range(n), k):
        pixels[i] = SATURATED
    write_raw(path, width, height, pixels)
    return pixels


def make_demo_flat(path, width, height, seed):
    """Write a deterministic detrend image (bias near 100, gains near 1 with a gentle
    gradient). Returns (bias, array('f'))."""
    import random  # here, not at the top: every component's command and post start faster

    rng = random.Random(seed)
    bias = round(100.0 + rng.uniform(-5.0, 5.0), 3)
    gx, gy = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
    gauss = rng.gauss
    values = array("f")
    for y in range(height):
        fy = gy * (y / max(1, height - 1) - 0.5)
        for x in range(width):
            v = 1.0 + gx * (x / max(1, width - 1) - 0.5) + fy + gauss(0.0, 0.01)
            values.append(max(0.5, v))
    write_flat(path, width, height, bias, values)
    return bias, values


# ---------------------------------------------------------------------------------------
# Processing


def detrend(raw: array, bias: float, flat: array):
    """(processed array('f'), nsat, nbad): (raw - bias) / flat, NaN where excluded."""
    nan = float("nan")
    isfinite = math.isfinite
    vals = []
    append = vals.append
    nsat = nbad = 0
    for r, g in zip(raw, flat):
        if r == SATURATED:
            nsat += 1
            append(nan)
        elif g > 0.0 and isfinite(g):
            append((r - bias) / g)
        else:
            nbad += 1
            append(nan)
    out = array("f", vals)
    # float32 can overflow (a tiny gain): such pixels are bad too.
    for i, v in enumerate(out):
        if not isfinite(v) and vals[i] == vals[i]:
            nbad += 1
            out[i] = nan
    return out, nsat, nbad


def pixel_stats(values) -> dict:
    """npix, mean, stdev (population), min, max, median of the finite values."""
    good = [v for v in values if v == v]
    n = len(good)
    if n == 0:
        return {"npix": 0, "mean": None, "stdev": None, "min": None, "max": None,
                "median": None}
    mean = math.fsum(good) / n
    var = math.fsum((v - mean) ** 2 for v in good) / n
    good.sort()
    mid = n // 2
    med = good[mid] if n % 2 else (good[mid - 1] + good[mid]) / 2.0
    return {"npix": n, "mean": mean, "stdev": math.sqrt(var), "min": good[0],
            "max": good[-1], "median": med}


def bin2(width, height, values):
    """(bw, bh, array('f')): 2x2 blocks averaged over their finite pixels (NaN if none)."""
    bw, bh = (width + 1) // 2, (height + 1) // 2
    out = array("f", bytes(4 * bw * bh))
    nan = float("nan")
    for by in range(bh):
        rows = [y * width for y in (2 * by, 2 * by + 1) if y < height]
        for bx in range(bw):
            total, n = 0.0, 0
            for row in rows:
                for x in (2 * bx, 2 * bx + 1):
                    if x < width:
                        v = values[row + x]
                        if v == v:
                            total += v
                            n += 1
            out[by * bw + bx] = total / n if n else nan
    return bw, bh, out


def process(raw_path, flat_path, out_path, stats_path, binned_path=None) -> dict:
    t0 = time.perf_counter()
    w, h, raw = read_raw(raw_path)
    fw, fh, bias, flat = read_flat(flat_path)
    if (w, h) != (fw, fh):
        raise ChipDataError("size mismatch: raw %s is %dx%d, detrend %s is %dx%d"
                            % (raw_path, w, h, flat_path, fw, fh))
    out, nsat, nbad = detrend(raw, bias, flat)
    stats = pixel_stats(out)
    _write_or_os_error(write_proc, out_path, w, h, out)
    if binned_path:
        _write_or_os_error(write_proc, binned_path, *bin2(w, h, out))
    stats.update({"nsat": nsat, "nbad": nbad, "width": w, "height": h,
                  "seconds": round(time.perf_counter() - t0, 6)})
    text = json.dumps(stats, sort_keys=True, allow_nan=False) + "\n"
    _write_or_os_error(_write_text_atomic, stats_path, text)
    return stats


class OutputError(Exception):
    pass


def _write_or_os_error(func, path, *args):
    try:
        func(path, *args)
    except OSError as e:
        raise OutputError("cannot write %s: %s" % (path, e.strerror or e))


def _write_text_atomic(path, text):
    _write_bytes_atomic(path, text.encode("utf-8"))


STATS_NUMBERS = ("mean", "stdev", "median", "min", "max")


def read_stats(stats_path) -> dict:
    """The JSON object a process step wrote; ChipDataError if it is not one."""
    with open(stats_path, "r", encoding="utf-8") as f:
        try:
            stats = json.load(f)
        except ValueError as e:
            raise ChipDataError("%s: not valid JSON: %s" % (stats_path, e))
    if not isinstance(stats, dict):
        raise ChipDataError("%s: not a JSON object" % stats_path)
    return stats


NUM = (int, float)


def stats_record(stats_path, table, key_column, key_id, columns) -> dict:
    """The dbinfo record for ``table``: ``columns`` is a list of (column, stats key, types,
    nullable); a value that is absent, of another type or not finite is a data error."""
    stats = read_stats(stats_path)

    def get(key, kinds, nullable):
        if key not in stats:
            raise ChipDataError("%s: no %r" % (stats_path, key))
        v = stats[key]
        if v is None and nullable:
            return v
        if isinstance(v, bool) or not isinstance(v, kinds) or (
                isinstance(v, float) and not math.isfinite(v)):
            raise ChipDataError("%s: bad %r: %r" % (stats_path, key, v))
        return v

    return {
        "table": table,
        "key": {key_column: key_id},
        "values": dict((col, get(key, kinds, nullable)) for col, key, kinds, nullable in columns),
    }


CHIP_DBINFO = [
    ("mean", "mean", NUM, True),
    ("stdev", "stdev", NUM, True),
    ("median", "median", NUM, True),
    ("npix", "npix", int, False),
    ("nsat", "nsat", int, False),
    ("bg_min", "min", NUM, True),
    ("bg_max", "max", NUM, True),
    ("dtime_chip", "seconds", NUM, False),
]


def dbinfo(stats_path, imfile_id) -> dict:
    return stats_record(stats_path, "chip_result", "imfile_id", imfile_id, CHIP_DBINFO)


# ---------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    """argparse that exits 3 (the usage fault) on a bad command line."""

    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(EXIT_USAGE)


def build_parser():
    p = Parser(prog="sc_chip.py", description="The demo pipeline's chip program.")
    sub = p.add_subparsers(dest="cmd", metavar="{process,dbinfo}", parser_class=Parser)
    sub.required = True
    sp = sub.add_parser("process", help="detrend RAW with FLAT, write OUT and STATS")
    sp.add_argument("--raw", required=True)
    sp.add_argument("--detrend", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--stats", required=True)
    sp.add_argument("--binned", help="also write the 2x2-binned processed image here")
    sp = sub.add_parser("dbinfo", help="print the chip_result dbinfo record of STATS")
    sp.add_argument("--stats", required=True)
    sp.add_argument("--imfile-id", type=int, required=True)
    return p


def print_record(record) -> None:
    sys.stdout.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
    sys.stdout.flush()


def run_guarded(prog, func) -> int:
    """Run ``func()``; map failures to the pipeline's exit codes with one line on stderr.
    Shared by the demo pipeline's programs (sc_chip, sc_cam, sc_warp, sc_stack)."""
    try:
        func()
        return 0
    except ChipDataError as e:
        sys.stderr.write("%s: bad input data: %s\n" % (prog, e))
        return EXIT_DATA
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        sys.stderr.write("%s: missing input: %s: %s\n" % (prog, e.filename, e.strerror))
        return EXIT_DATA
    except OutputError as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return EXIT_OS
    except OSError as e:
        sys.stderr.write("%s: %s: %s\n" % (prog, e.filename, e.strerror or e))
        return EXIT_OS


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def work():
        if args.cmd == "process":
            process(args.raw, args.detrend, args.out, args.stats, args.binned)
        else:
            print_record(dbinfo(args.stats, args.imfile_id))

    return run_guarded("sc_chip.py %s" % args.cmd, work)


if __name__ == "__main__":
    sys.exit(main())
