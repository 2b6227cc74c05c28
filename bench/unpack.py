#!/usr/bin/env python3
"""The site's unpacker alone: CPU seconds of `remote/sc_remote.py unpack` for a push of
10,000 files of 20 kB (into one directory, and spread over 500), on tmpfs, no ssh. The link
figure (bench/link.py) is dominated by ssh and the disk; this one shows what the unpacker
itself costs a file (its directory walk by descriptor, the part file, the rename).

    python bench/unpack.py [--files 10000] [--dirs 1 500] [--rounds 7] [--tool PATH ...]

Several --tool paths (e.g. an older copy of sc_remote.py) are timed side by side, alternated.
Prints figures (medians of user + system CPU seconds); asserts nothing about time.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from scbundle.site.transfer import TarWriter  # noqa: E402


def stream(base: Path, files: int, dirs: int) -> bytes:
    buf = io.BytesIO()
    w = TarWriter(buf)
    payload = os.urandom(20 * 1024)
    for i in range(files):
        w.add_bytes(f"{base}/R/d{i % dirs}/f{i:05d}.dat", payload)
    w.close()
    return buf.getvalue()


def cpu_of(tool: str, root: Path, data: bytes) -> tuple[float, float]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-S", tool, "unpack", "--root", str(root)], input=data, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{tool} unpack failed: {p.stderr.decode(errors='replace')}")
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--dirs", type=int, nargs="+", default=[1, 500])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tool", action="append", default=None, help="sc_remote.py to time (repeatable)")
    args = ap.parse_args()
    tools = args.tool or [str(ROOT / "remote" / "sc_remote.py")]
    base = Path(tempfile.mkdtemp(prefix="scb-unpackbench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        for dirs in args.dirs:
            data = stream(base, args.files, dirs)
            cpu: dict[str, list[float]] = {t: [] for t in tools}
            wall: dict[str, list[float]] = {t: [] for t in tools}
            for _ in range(args.rounds):
                for t in tools:
                    c, w = cpu_of(t, base / "R", data)
                    cpu[t].append(c)
                    wall[t].append(w)
            for t in tools:
                print(f"{args.files} files in {dirs} dir(s), {t}: {statistics.median(cpu[t]):.3f} s CPU "
                      f"({statistics.median(cpu[t]) / args.files * 1e6:.0f} us a file), {statistics.median(wall[t]):.3f} s wall "
                      f"(medians of {args.rounds})")  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
