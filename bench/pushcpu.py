#!/usr/bin/env python3
"""CPU seconds of a 10,000 x 20 kB push without ssh, on tmpfs: GNU `tar c | tar x` against
scbundle's writer (site/transfer.py) into remote/sc_remote.py unpack, this tree's and main's
(git show main:...), alternated, medians of 5. What the link figure (bench/link.py) cannot
show on a loaded machine: the scbundle side's own cost, with ssh's taken out.

    .venv/bin/python bench/pushcpu.py

Prints figures; asserts nothing about time.
"""
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import subprocess as sp
import sys
import tempfile
from pathlib import Path


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path); m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m); return m
sys.path.insert(0, "src")
OLD = Path(tempfile.mkdtemp(prefix="scb-pushcpu-"))
open(OLD / "sc_remote.py", "w").write(sp.run(["git", "show", "main:remote/sc_remote.py"], capture_output=True, text=True, check=True).stdout)
new_w = load("src/scbundle/site/transfer.py", "tnew")
open(OLD / "transfer.py", "w").write(sp.run(["git","show","main:src/scbundle/site/transfer.py"],capture_output=True,text=True).stdout)
old_w = load(str(OLD / "transfer.py"), "told")
base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="eprofc-")); src = base / "src"; src.mkdir()
for i in range(10000): (src / f"f{i:05d}.dat").write_bytes(os.urandom(20480))
names = sorted(os.listdir(src))
def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN); s = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime + s.ru_utime + s.ru_stime
res = {"tar": [], "main": [], "new": []}
for rnd in range(5):
    d = base / "t"; d.mkdir(); c0 = cpu()
    tar = subprocess.Popen(["tar", "-c", "-C", str(src), "."], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(d)], stdin=tar.stdout, check=True); tar.wait()
    res["tar"].append(cpu() - c0); shutil.rmtree(d)
    for label, w, tool in (("main", old_w, str(OLD / "sc_remote.py")), ("new", new_w, "remote/sc_remote.py")):
        d = base / "s"; d.mkdir(); pairs = [(str(src / n), f"{d}/{n}") for n in names]; c0 = cpu()
        p = subprocess.Popen(["/usr/bin/python3", "-S", tool, "unpack", "--root", str(d), "--manifest", str(d / ".m")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        w.write_push_tar(p.stdin, pairs); p.stdin.close(); assert p.wait() == 0
        res[label].append(cpu() - c0); shutil.rmtree(d)
m = {k: statistics.median(v) for k, v in res.items()}
print("cpu s (median of 5, writer+unpacker, no ssh):", {k: round(v, 3) for k, v in m.items()}, "main/tar", round(m["main"]/m["tar"], 2), "new/tar", round(m["new"]/m["tar"], 2), "new/main", round(m["new"]/m["main"], 2))
shutil.rmtree(base)
shutil.rmtree(OLD)
