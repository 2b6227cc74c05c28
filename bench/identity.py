#!/usr/bin/env python3
"""Input identity by content vs today's size check, side by side in one run, on the `local`
site (issue 10 item 1). Prints figures; asserts nothing about time.

1. exec's input check of the 37,200-component chip bundle (6-7 detrends a chip from a
   catalog: 40,320 inputs) when nothing changed: (a) today's way, `path<TAB>size` lines into a
   size-only `missing` (main's code, kept below as OLD_MISSING); (b) scbundle's content check:
   the local digests (from the cache) and `sc_remote.py missing --manifest`. Goal: (b) within
   1.2x of (a), and 0 s of local hashing after the first run. (c) is (a) with the root check
   missing now uses (RootCheck: each directory resolved once, where today's resolves every
   path's parent): (b) over (c) is what knowing inputs by content costs by itself.
2. A first push of 10,000 files of 20 kB: (a) today's (size listing, size-only missing, unpack)
   vs (b) with digests (local hashing with a cold cache, missing with the manifest, unpack
   recording each file). Goal: (b) within 1.1x of (a).

    .venv/bin/python bench/identity.py [--components 37200] [--files 10000] [--rounds 5] [--disk]

(a), (c) and (b) alternate over --rounds; medians of wall and of CPU time (this process and
its children: steadier on a shared machine) are reported. The site's data goes to
tmpfs (/dev/shm) unless --disk: the VM disk's writeback noise swamps the differences.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchkit import CatalogChipStage, make_app, seed, use_stage

from scbundle.site.digests import DigestCache
from scbundle.site.layout import manifest_dir, roots_args, tool_argv, tools_dir
from scbundle.site.link import transport_for
from scbundle.site.tools import ensure_tools
from scbundle.steps.define import define
from scbundle.steps.exec import _read_requirements, check_inputs, input_listing, push_files
from scbundle.steps.prepare import prepare

# Today's `sc_remote.py missing` (main before content identity): presence and size only. Its
# root check is the tool's own within_roots, unchanged.
OLD_MISSING = r'''
import os, stat, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sc_remote as r

def main():
    fast = sys.argv[1] == "--fast-roots"  # (c): today's check with the content check's RootCheck
    args = sys.argv[2:] if fast else sys.argv[1:]
    roots = r.real_roots(args[1::2])
    inside = r.RootCheck(roots) if fast else (lambda p: r.within_roots(p, roots))
    out = sys.stdout.buffer
    for n, line in enumerate(r.read_lines(sys.stdin.buffer)):
        if line == "":
            continue
        path, sep, size = line.rpartition("\t")
        if not sep or not size.isascii() or not size.isdigit():
            raise SystemExit("input line %d is not 'remote_path<TAB>size'" % (n + 1))
        if not inside(path):
            raise SystemExit("path %r is not under any --root" % path)
        try:
            st = os.stat(path)
            gone = not stat.S_ISREG(st.st_mode) or st.st_size != int(size)
        except OSError:
            gone = True
        if gone:
            out.write(r._encode(line) + b"\n")
    out.flush()

main()
'''


def old_missing(t, site, tools: str, reqs, fast: bool = False) -> set[str]:
    listing = "".join(f"{remote}\t{size}\n" for _, remote, size in reqs).encode()
    argv = [site.python, "-S", f"{tools}/old_missing.py", *(["--fast-roots"] if fast else []), *roots_args(site)]
    out = t.run(argv, input=listing).text
    return {line.rsplit("\t", 1)[0] for line in out.splitlines() if line}


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the site's tools): steadier than
    wall time on a shared machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def site_area(base: Path, on_disk: bool) -> Path:
    if on_disk:
        return base / "site"
    d = Path(tempfile.mkdtemp(prefix="scb-idbench-", dir="/dev/shm"))
    return d


def check_figures(args, home: Path, area: Path) -> dict:
    app = make_app(home, remote_root=str(area / "scratch"), permanent_root=str(area / "perm"),
                   paths=[{"local": str(home / "data"), "remote": str(area / "scratch" / "data")}])  # fmt: skip
    catalog = seed(app, home, args.components)
    use_stage(app, CatalogChipStage(catalog))
    d = define(app, label="bench", stage="chip", limit=None, site=None, job_policy=None)
    p = prepare(app, remote_id=d.remote_id, stage="chip")
    reqs = _read_requirements(Path(p.path_base))
    old = time.time_ns() - 3600 * 10**9  # the data was made an hour ago (past the racy window)
    for local, _, _ in reqs:
        os.utime(local, ns=(old, old))
    site = app.site("mustang")
    t = transport_for("mustang", site)
    ensure_tools(t, site)
    tools = tools_dir(site)
    Path(tools, "old_missing.py").write_text(OLD_MISSING)

    # the first exec: everything hashed locally, everything pushed and recorded
    cache = DigestCache.for_workdir(app.config.workdir)
    t0 = time.perf_counter()
    listing, sizes, first = input_listing(reqs, cache)
    t_first_local = time.perf_counter() - t0
    check = check_inputs(t, site, reqs, listing, sizes, tools=tools)
    t0 = time.perf_counter()
    push_files(t, tool_argv(site.python, tools, "sc_remote.py", "unpack", *roots_args(site), "--manifest", manifest_dir(site)),
               check.to_push, streams=site.push_streams)  # fmt: skip
    t_push = time.perf_counter() - t0

    wall: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    cpu: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    b_local, b_hashing, hashed, by_manifest, site_hashed = [], [], [], [], []
    for _ in range(args.rounds):
        for way in ("a", "c", "b"):
            w0, c0 = time.perf_counter(), cpu_seconds()
            if way != "b":
                assert not old_missing(t, site, tools, reqs, fast=way == "c")
            else:
                listing, sizes, st = input_listing(reqs, cache)
                b_local.append(time.perf_counter() - w0)
                c = check_inputs(t, site, reqs, listing, sizes, tools=tools)
                assert not c.to_push
                b_hashing.append(st.hash_seconds)
                hashed.append(st.hashed)
                by_manifest.append(int(c.site.get("by_manifest", -1)))
                site_hashed.append(int(c.site.get("hashed", -1)))
            wall[way].append(time.perf_counter() - w0)
            cpu[way].append(cpu_seconds() - c0)
    cache.close()
    med = {k: statistics.median(v) for k, v in wall.items()}
    medc = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "components": p.n_components, "inputs": len(reqs),
        "first_exec_local_hashing_s": round(first.hash_seconds, 2), "first_exec_local_s": round(t_first_local, 2),
        "first_exec_hashed_files": first.hashed, "first_push_s": round(t_push, 2), "first_pushed": len(check.to_push),
        "a_size_check_s": round(med["a"], 3), "a_all_s": [round(x, 3) for x in wall["a"]], "a_cpu_s": round(medc["a"], 3),
        "b_content_check_s": round(med["b"], 3), "b_all_s": [round(x, 3) for x in wall["b"]], "b_cpu_s": round(medc["b"], 3),
        "c_size_check_fast_roots_s": round(med["c"], 3), "c_cpu_s": round(medc["c"], 3),
        "b_local_part_s": round(statistics.median(b_local), 3),
        "b_local_hashing_s": round(max(b_hashing), 3), "b_local_hashed_files": max(hashed),
        "b_site_by_manifest": min(by_manifest), "b_site_hashed": max(site_hashed),
        "b_over_a": round(med["b"] / med["a"], 2), "b_over_a_cpu": round(medc["b"] / medc["a"], 2),
        "b_over_c": round(med["b"] / med["c"], 2), "b_over_c_cpu": round(medc["b"] / medc["c"], 2),
    }  # fmt: skip


def push_figures(args, home: Path, area: Path) -> dict:
    app = make_app(home / "push", remote_root=str(area / "pscratch"), permanent_root=str(area / "pperm"),
                   paths=[{"local": str(home / "small"), "remote": str(area / "pscratch" / "small")}])  # fmt: skip
    site = app.site("mustang")
    src = home / "small"
    src.mkdir()
    old = time.time_ns() - 3600 * 10**9
    for i in range(args.files):
        f = src / f"f{i:05d}.dat"
        f.write_bytes(os.urandom(20 * 1024))
        os.utime(f, ns=(old, old))
    t = transport_for("mustang", site)
    ensure_tools(t, site)
    tools = tools_dir(site)
    Path(tools, "old_missing.py").write_text(OLD_MISSING)
    roots = roots_args(site)
    wall: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    cpu: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    hash_s = []
    for k in range(args.rounds):
        for way in ("a", "c", "b"):
            dest = area / "pscratch" / "small"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(area / "pperm" / "manifest", ignore_errors=True)
            reqs = [(str(src / n), f"{dest}/{n}", 20 * 1024) for n in sorted(os.listdir(src))]
            work = home / "push" / f"work-{k}-{way}"  # a cold digest cache every round: a first push
            os.sync()
            w0, c0 = time.perf_counter(), cpu_seconds()
            if way != "b":
                wanted = old_missing(t, site, tools, reqs, fast=way == "c")
                push_files(t, tool_argv(site.python, tools, "sc_remote.py", "unpack", *roots),
                           [(lo, r) for lo, r, _ in reqs if r in wanted], streams=site.push_streams)  # fmt: skip
            else:
                with DigestCache.for_workdir(work) as cache:
                    listing, sizes, st = input_listing(reqs, cache)
                c = check_inputs(t, site, reqs, listing, sizes, tools=tools)
                push_files(t, tool_argv(site.python, tools, "sc_remote.py", "unpack", *roots, "--manifest", manifest_dir(site)),
                           c.to_push, streams=site.push_streams)  # fmt: skip
                hash_s.append(st.hash_seconds)
                assert len(c.to_push) == args.files and st.hashed == args.files
            wall[way].append(time.perf_counter() - w0)
            cpu[way].append(cpu_seconds() - c0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    medc = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "files": args.files, "bytes_each": 20 * 1024,
        "a_today_s": round(med["a"], 3), "a_all_s": [round(x, 3) for x in wall["a"]], "a_cpu_s": round(medc["a"], 3),
        "b_with_digests_s": round(med["b"], 3), "b_all_s": [round(x, 3) for x in wall["b"]], "b_cpu_s": round(medc["b"], 3),
        "c_today_fast_roots_s": round(med["c"], 3), "c_cpu_s": round(medc["c"], 3),
        "b_local_hashing_s": round(statistics.median(hash_s), 3),
        "b_over_a": round(med["b"] / med["a"], 2), "b_over_a_cpu": round(medc["b"] / medc["a"], 2),
        "b_over_c": round(med["b"] / med["c"], 2), "b_over_c_cpu": round(medc["b"] / medc["c"], 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--components", type=int, default=37200)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--disk", action="store_true", help="the site's data on disk (default: tmpfs)")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-push", action="store_true")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="scb-idbench-"))
    area = site_area(home, args.disk)
    out: dict[str, object] = {"target": "disk" if args.disk else "tmpfs", "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        if not args.skip_check:
            c = out["check"] = check_figures(args, home, area)
            print(f"1. exec's input check, nothing changed: {c['components']} components, {c['inputs']} inputs ({out['target']})")
            print(f"   first exec: {c['first_exec_hashed_files']} files hashed locally in {c['first_exec_local_hashing_s']} s, "
                  f"{c['first_pushed']} pushed in {c['first_push_s']} s")  # fmt: skip
            print(f"   (a) today's size check     : {c['a_size_check_s']:>7} s wall, {c['a_cpu_s']:>6} s cpu  (wall {c['a_all_s']})")
            print(f"   (b) content check          : {c['b_content_check_s']:>7} s wall, {c['b_cpu_s']:>6} s cpu  (wall {c['b_all_s']})"
                  f" = {c['b_over_a']}x (a) wall, {c['b_over_a_cpu']}x cpu")  # fmt: skip
            print(f"       of which local         : {c['b_local_part_s']:>7} s, hashing {c['b_local_hashing_s']} s "
                  f"({c['b_local_hashed_files']} files); site: {c['b_site_by_manifest']} by manifest, {c['b_site_hashed']} hashed")  # fmt: skip
            print(f"   (c) (a) with (b)'s RootCheck: {c['c_size_check_fast_roots_s']:>6} s wall, {c['c_cpu_s']:>6} s cpu: (b) = "
                  f"{c['b_over_c']}x (c) wall, {c['b_over_c_cpu']}x cpu (the content check's own cost)")  # fmt: skip
        if not args.skip_push:
            p = out["push"] = push_figures(args, home, area)
            print(f"2. first push of {p['files']} files of 20 kB ({out['target']}):")
            print(f"   (a) today's push           : {p['a_today_s']:>7} s wall, {p['a_cpu_s']:>6} s cpu  (wall {p['a_all_s']})")
            print(f"   (b) with digests recorded  : {p['b_with_digests_s']:>7} s wall, {p['b_cpu_s']:>6} s cpu  (wall {p['b_all_s']})"
                  f" = {p['b_over_a']}x (a) wall, {p['b_over_a_cpu']}x cpu; local hashing {p['b_local_hashing_s']} s")  # fmt: skip
            print(f"   (c) (a) with (b)'s RootCheck: {p['c_today_fast_roots_s']:>6} s wall, {p['c_cpu_s']:>6} s cpu: (b) = "
                  f"{p['b_over_c']}x (c) wall, {p['b_over_c_cpu']}x cpu")  # fmt: skip
        print(json.dumps(out))
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if not args.disk:
            shutil.rmtree(area, ignore_errors=True)


if __name__ == "__main__":
    main()
