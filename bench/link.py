#!/usr/bin/env python3
"""Link figures on the real test site (root needed: it starts the bastion and front-end sshds).

1. ssh invocations per run for exec + poll of a 2,000-component bundle (goal: a small
   constant, independent of the component count; 200 components are run too, to show it).
2. Pushing 10,000 files of 20 kB through the OpenSSH master, side by side in one run:
   (a) one scp per file over the master, (b) one `tar c | ssh tar x` stream, (c) scbundle's
   push (a checksummed tar stream into remote/sc_remote.py unpack). Goal: (c) within 1.2x of (b).
4. Fan-out (site/fanout.py): 200 x 10 MB and 10,000 x 20 kB with every front end capped
   (tc tbf, --cap-mbit, default 160 = 20 MB/s), pushed over one front end and over three;
   `fanout_speedup` is the three-host over the one-host throughput (goal: >= 2.7x).
3. What the tool bootstrap (remote/sc_boot.py: every tool verified in the call that runs it)
   costs a link call: the same `sc_remote.py missing` over the master, by path as before and
   through the bootstrap, alternated; medians of wall time.

    sudo .venv/bin/python bench/link.py [--files 10000] [--scp-files 10000] [--components 2000] [--calls 40]

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sitekit import start_site  # noqa: E402

from scbundle.core.app import App  # noqa: E402
from scbundle.core.config import config_from_dict  # noqa: E402
from scbundle.db.migrate import upgrade  # noqa: E402
from scbundle.db.session import Database  # noqa: E402
from scbundle.site.layout import roots_args, tool_argv, tools_dir  # noqa: E402
from scbundle.site.link import transport_for  # noqa: E402
from scbundle.site.link.openssh import OpenSshLink  # noqa: E402
from scbundle.site.tools import ensure_tools  # noqa: E402
from scbundle.stages.demo_data import seed_demo  # noqa: E402
from scbundle.steps.define import define  # noqa: E402
from scbundle.steps.exec import exec_runs, push_files  # noqa: E402
from scbundle.steps.prepare import prepare  # noqa: E402


def make_app(site, home: Path, control: Path) -> App:
    user = site.key_user  # a key login: the master starts without a person at the terminal
    remote = site.remote_root / home.name
    perm = site.permanent_root / home.name
    cfg = config_from_dict(
        {
            "database": f"sqlite:///{home / 'bench.db'}",
            "workdir": str(home / "work"),
            "default_site": "mu",
            "stages": {"chip": {"threads": 1, "cost_seconds": 0.05}},
            "sites": {
                "mu": {
                    "link": "ssh", "scheduler": "local", "remote_root": str(remote), "permanent_root": str(perm),
                    "cores_per_node": 2, "max_nodes": 1, "python": site.python, "max_walltime": "04:00:00",
                    "paths": [{"local": str(home / "data"), "remote": str(remote / "data")}],
                    "ssh": {
                        "hosts": list(site.front_hosts or [site.front_host]), "port": site.front_port, "user": user,
                        "bastion": site.bastion_host, "bastion_port": site.bastion_port,
                        "identity": str(site.users[user].key), "known_hosts": str(site.known_hosts),
                        "control_dir": str(control),
                    },
                }
            },
        },
        "bench",
    )  # fmt: skip
    db = Database(cfg.database)
    upgrade(db)
    return App(cfg, db)


def invocations_per_run(app: App, n: int, label: str) -> dict:
    seed_demo(app, n)
    d = define(app, label=label, stage="chip", limit=n, site=None, job_policy=None)
    prepare(app, remote_id=d.remote_id, stage="chip")
    t0 = time.perf_counter()
    rep = exec_runs(app, remote_id=d.remote_id, progress=False)
    exec_calls = rep.results[0].invocations
    polls, poll_calls = 0, 0
    while True:
        t = transport_for("mu", app.site("mu"))
        from scbundle.db.runs import get_run
        from scbundle.steps.collect import poll_run

        with app.db.session() as s:
            run = get_run(s, d.remote_id)
        if run.state != "run":
            break
        assert t.link_up()
        r = poll_run(app, run, t)
        polls += 1
        poll_calls += t.invocations
        if r.state != "run":
            final_calls = t.invocations
            break
        time.sleep(2)
    return {
        "components": n, "exec_invocations": exec_calls, "polls": polls,
        "last_poll_invocations": final_calls, "state": r.state, "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def push_figures(app: App, site, nfiles: int, scp_files: int, tmp: Path, streams: int | None, rounds: int, on_disk: bool) -> dict:
    src = tmp / "small"
    src.mkdir()
    for i in range(nfiles):
        (src / f"f{i:05d}.dat").write_bytes(os.urandom(20 * 1024))
    link = OpenSshLink("mu", app.site("mu"))
    conf, alias = str(link.conf_path(batch=True)), "scb-mu-0"
    if on_disk:
        remote = Path(app.site("mu").remote_root) / "pushbench"
        root = app.site("mu").remote_root
    else:  # tmpfs: the VM disk's writeback noise swamped the difference being measured
        remote = Path(tempfile.mkdtemp(prefix="scb-pushbench-", dir="/dev/shm"))
        remote.chmod(0o777)
        root = str(remote)
    out: dict[str, object] = {"files": nfiles, "bytes_each": 20 * 1024, "target": "disk" if on_disk else "tmpfs"}

    def fresh(name: str) -> Path:
        d = remote / name
        subprocess.run(["ssh", "-F", conf, alias, f"rm -rf {d} && mkdir -p {d}"], check=True)
        return d

    # (a) one scp per file over the master
    d = fresh("scp")
    names = sorted(os.listdir(src))[:scp_files]
    t0 = time.perf_counter()
    for name in names:
        subprocess.run(["scp", "-q", "-F", conf, str(src / name), f"{alias}:{d}/{name}"], check=True)
    t_scp = time.perf_counter() - t0
    out["a_scp_per_file_s"] = round(t_scp, 2)
    out["a_scp_files_timed"] = len(names)
    if len(names) < nfiles:
        out["a_scp_per_file_s_extrapolated"] = round(t_scp * nfiles / len(names), 1)

    # (b) tar c | ssh tar x and (c) scbundle's push (a checksummed pax stream into
    # remote/sc_remote.py unpack, through the transport), alternated over a few rounds: the
    # disk's writeback makes single timings noisy here, so medians are reported
    t = transport_for("mu", app.site("mu"))
    assert t.link_up()
    ensure_tools(t, app.site("mu"))
    tools, py = tools_dir(app.site("mu")), app.site("mu").python
    n_streams = streams or app.site("mu").push_streams
    tb, tc = [], []
    for _ in range(rounds):
        d = fresh("tar")
        os.sync()
        t0 = time.perf_counter()
        tar = subprocess.Popen(["tar", "-c", "-C", str(src), "."], stdout=subprocess.PIPE)
        subprocess.run(["ssh", "-F", conf, alias, f"tar -x -C {d}"], stdin=tar.stdout, check=True)
        tar.wait()
        tb.append(time.perf_counter() - t0)
        fresh("scb")
        pairs = [(str(src / n), f"{remote}/scb/{n}") for n in sorted(os.listdir(src))]
        os.sync()
        t0 = time.perf_counter()
        push_files(t, tool_argv(py, tools, "sc_remote.py", "unpack", "--root", root), pairs,
                   streams=n_streams)  # fmt: skip
        tc.append(time.perf_counter() - t0)
    t_tar, t_scb = statistics.median(tb), statistics.median(tc)
    if not on_disk:
        shutil.rmtree(remote, ignore_errors=True)
    out["rounds"] = rounds
    out["b_tar_stream_s"] = round(t_tar, 2)
    out["b_all_s"] = [round(x, 2) for x in tb]
    out["c_scbundle_push_s"] = round(t_scb, 2)
    out["c_all_s"] = [round(x, 2) for x in tc]
    out["c_streams"] = n_streams
    out["c_over_b"] = round(t_scb / t_tar, 2)
    out["a_over_b"] = round((t_scp * nfiles / len(names)) / t_tar, 1)
    return out


def fanout_figures(app: App, site, tmp: Path, cap_mbit: float, scale: float) -> dict:
    """One host against three, every host capped: the throughput of a push of each workload."""
    from scbundle.site.fanout import push_fanout

    s = app.site("mu")
    t = transport_for("mu", s)
    assert t.link_up()
    ensure_tools(t, s)
    lanes = t.transfer_transports()
    argv = tool_argv(s.python, tools_dir(s), "sc_remote.py", "unpack", "--root", s.remote_root)
    out: dict[str, object] = {"cap_mbit": cap_mbit, "hosts_up": len(lanes)}
    for i in range(len(site.front_hosts)):
        site.cap(i, cap_mbit)
    try:
        speedups = []
        for label, count, size in (("10MB", int(200 * scale), 10 << 20), ("20kB", int(10000 * scale), 20 << 10)):
            src = tmp / f"fan-{label}"
            src.mkdir()
            for i in range(count):
                (src / f"f{i:05d}").write_bytes(os.urandom(size))
            names = sorted(os.listdir(src))
            times = {}
            for n_hosts in (1, len(lanes)):
                dest = f"{s.remote_root}/fan-{label}-{n_hosts}"
                pairs = [(str(src / n), f"{dest}/{n}") for n in names]
                sizes = {r: size for _, r in pairs}
                t0 = time.perf_counter()
                push_fanout(lanes[:n_hosts], argv, pairs, sizes, streams=s.push_streams, bundle_bytes=int(s.push_bundle_mb * (1 << 20)))
                times[n_hosts] = time.perf_counter() - t0
                t.run(["rm", "-rf", dest])
            shutil.rmtree(src)
            mb = count * size / 1e6
            one, many = mb / times[1], mb / times[len(lanes)]
            out[label] = {"files": count, "one_host_MBps": round(one, 1), "all_hosts_MBps": round(many, 1), "speedup": round(many / one, 2)}
            speedups.append(many / one)
        out["fanout_speedup"] = round(min(speedups), 2)
    finally:
        for i in range(len(site.front_hosts)):
            site.uncap(i)
    return out


def call_overhead(app: App, calls: int) -> dict:
    """One small tool call over the master, by path (no verification) and through the bootstrap."""
    site = app.site("mu")
    t = transport_for("mu", site)
    assert t.link_up()
    ensure_tools(t, site)
    tools, py = tools_dir(site), site.python
    plain = [py, "-S", f"{tools}/sc_remote.py", "missing", *roots_args(site)]
    boot = tool_argv(py, tools, "sc_remote.py", "missing", *roots_args(site))
    listing = f"{site.remote_root}/nothing\t1\n".encode()
    tp, tb = [], []
    for _ in range(calls):
        for argv, sink in ((plain, tp), (boot, tb)):
            t0 = time.perf_counter()
            assert t.run(argv, input=listing).text.strip()
            sink.append(time.perf_counter() - t0)
    t.close()
    p, b = statistics.median(tp), statistics.median(tb)
    return {"calls": calls, "by_path_ms": round(p * 1000, 1), "bootstrap_ms": round(b * 1000, 1),
            "overhead_ms": round((b - p) * 1000, 1), "command_bytes": len(" ".join(boot))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--scp-files", type=int, default=10000, help="time this many scp calls (extrapolated to --files)")
    ap.add_argument("--components", type=int, default=2000)
    ap.add_argument("--skip-runs", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="(b) and (c) alternate this many times; medians reported")
    ap.add_argument("--disk", action="store_true", help="push to the site's scratch on disk instead of tmpfs")
    ap.add_argument("--streams", type=int, default=None, help="push streams for (c) (default: the site's push_streams)")
    ap.add_argument("--skip-push", action="store_true")
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--cap-mbit", type=float, default=160, help="each front end's cap for the fan-out figure (160 = 20 MB/s)")
    ap.add_argument("--fanout-scale", type=float, default=1.0, help="fraction of the fan-out workloads (200 x 10 MB, 10,000 x 20 kB)")
    ap.add_argument("--calls", type=int, default=40, help="calls of each kind for the bootstrap's overhead (0: skip)")
    args = ap.parse_args()
    site = start_site("scbb", fronts=3)
    control = Path(tempfile.mkdtemp(prefix="scbc-", dir="/tmp"))
    tmp = Path(tempfile.mkdtemp(prefix="scb-linkbench-"))
    tmp.chmod(0o755)
    try:
        print(f"site: {site.mode_note}")
        app = make_app(site, tmp / "h", control)
        link = OpenSshLink("mu", app.site("mu"))
        for i in range(len(app.site("mu").ssh.hosts)):
            link.start(i)
        results = {}
        if not args.skip_runs:
            small = invocations_per_run(app, 200, "inv200")
            big = invocations_per_run(app, args.components, f"inv{args.components}")
            results["invocations"] = [small, big]
            for r in (small, big):
                print(f"{r['components']:>6} components: exec {r['exec_invocations']} ssh invocations, "
                      f"final poll {r['last_poll_invocations']} ({r['polls']} polls), {r['state']} in {r['seconds']} s")  # fmt: skip
        if not args.skip_push:
            p = push_figures(app, site, args.files, min(args.scp_files, args.files), tmp, args.streams, args.rounds, args.disk)
            results["push"] = p
            print(f"push {p['files']} files of 20 kB over the master (to {p['target']}):")
            print(f"  (a) one scp per file : {p['a_scp_per_file_s']:>8} s for {p['a_scp_files_timed']} files"
                  + (f" (~{p['a_scp_per_file_s_extrapolated']} s for all)" if "a_scp_per_file_s_extrapolated" in p else ""))
            print(f"  (b) tar | ssh tar x  : {p['b_tar_stream_s']:>8} s   (median of {p['b_all_s']})")
            print(f"  (c) scbundle push    : {p['c_scbundle_push_s']:>8} s   (median of {p['c_all_s']}, {p['c_streams']} streams)"
                  f" = {p['c_over_b']}x (b)   [(a) = {p['a_over_b']}x (b)]")
        if not args.skip_fanout:
            f = fanout_figures(app, site, tmp, args.cap_mbit, args.fanout_scale)
            results["fanout"] = f
            for label in ("10MB", "20kB"):
                r = f[label]
                print(f"fan-out {r['files']} x {label}, each host capped at {f['cap_mbit']} Mbit/s: one host {r['one_host_MBps']} MB/s, "
                      f"{f['hosts_up']} hosts {r['all_hosts_MBps']} MB/s = {r['speedup']}x")
        if args.calls:
            c = call_overhead(app, args.calls)
            results["bootstrap"] = c
            print(f"one link call (sc_remote.py missing), median of {c['calls']}: by path {c['by_path_ms']} ms, "
                  f"through the bootstrap {c['bootstrap_ms']} ms (+{c['overhead_ms']} ms; command {c['command_bytes']} bytes)")
        if "push" in results:
            results["c_over_b"] = results["push"]["c_over_b"]
        if "fanout" in results:
            results["fanout_speedup"] = results["fanout"]["fanout_speedup"]
        print(json.dumps(results))
        link.stop()
    finally:
        site.stop()
        shutil.rmtree(control, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
