#!/usr/bin/env python3
"""Concurrency: four `scbundle daemon` processes drive one PostgreSQL (or MariaDB) database for a minute
(prepare, exec and poll on the embedded `local` site, its jobs running on this machine), then
every run still in flight is polled home. Counts, from the daemons' logs and the rows: runs
prepared / submitted / replayed more than once (must be 0), components lost or doubled (must
be 0), and the throughput.

A private PostgreSQL is started with tests/pgkit.py (root runs it as `postgres`), or with
--backend mariadb a private MariaDB with tests/mariakit.py, unless --database names one (an
empty database).

    python bench/concurrency.py [--workers 4] [--seconds 60] [--runs 300] [--per-run 10] [--backend mariadb] [--database URL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import tomli_w
from sqlalchemy import create_engine, text

from scbundle.core.app import App
from scbundle.core.config import embedded_default, load_config
from scbundle.db.session import Database
from scbundle.steps.define import define

TESTS = Path(__file__).resolve().parents[1] / "tests"


class Home:
    def __init__(self, root: Path, url: str, **site: object) -> None:
        self.root, self.url = root, url
        cfg = embedded_default(root / "home")
        cfg["database"] = url
        cfg["sites"]["local"].update(site)
        (root / "config.toml").write_text(tomli_w.dumps(cfg))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SCBUNDLE_")}
        self.env.update(SCBUNDLE_HOME=str(root / "home"), SCBUNDLE_CONFIG=str(root / "config.toml"), XDG_CONFIG_HOME=str(root / "xdg"))

    def run(self, *args: str) -> str:
        p = subprocess.run([sys.executable, "-m", "scbundle.cli", *args], env=self.env, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise SystemExit(f"scbundle {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
        return p.stdout

    def start(self, *args: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "scbundle.cli", *args], env=self.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def q(self, sql: str) -> list[tuple]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as c:
                return [tuple(r) for r in c.execute(text(sql))]
        finally:
            engine.dispose()


def count_log(logs: list[Path], pattern: str) -> Counter:
    rx = re.compile(pattern)
    return Counter(int(m.group(1)) for log in logs for line in log.read_text().splitlines() if (m := rx.search(line)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--per-run", type=int, default=10)
    ap.add_argument("--max-in-flight", type=int, default=4, help="the site's throttle (the jobs share this machine)")
    ap.add_argument("--database", default=None)
    ap.add_argument("--backend", choices=["postgresql", "mariadb"], default="postgresql", help="the private server started without --database")
    args = ap.parse_args()
    server = None
    if args.database is None:
        sys.path.insert(0, str(TESTS))
        if args.backend == "mariadb":
            from mariakit import start_server
        else:
            from pgkit import start_server

        server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="scb-conc-") as tmp:
            h = Home(Path(tmp), args.database or server.url, max_in_flight=args.max_in_flight)
            h.run("db", "upgrade")
            h.run("tasks", "off", "advance")  # chip only: the next stages are not this bench's subject
            h.run("demo-data", "--images", str(args.runs * args.per_run))
            app = App(load_config(Path(tmp) / "config.toml"), Database(h.url))
            for i in range(args.runs):
                define(app, label=f"c{i}", stage="chip", limit=args.per_run, site=None, job_policy=None)
            app.db.engine.dispose()
            total = h.q("select count(*) from remote_component")[0][0]
            logs = [Path(tmp) / f"daemon-{w}.log" for w in range(args.workers)]
            t0 = time.monotonic()
            daemons = [h.start("daemon", "--loop-seconds", "0.2", "--poll-seconds", "0", log=log) for log in logs]
            time.sleep(args.seconds)
            for d in daemons:
                d.send_signal(signal.SIGTERM)
            for d in daemons:
                d.wait(timeout=600)
            minute = time.monotonic() - t0
            full_in_minute = h.q("select count(*) from remote_component where state = 'full'")[0][0]
            runs_in_minute = h.q("select count(*) from remote_run where state = 'full'")[0][0]
            h.run("poll", "--wait", "600")  # bring home what was in flight when they stopped
            prepared = count_log(logs, r"prepared remote_id (\d+):")
            submitted = count_log(logs, r"exec remote_id (\d+): job ")
            replayed = count_log(logs, r"poll remote_id (\d+): (?:full|error)")
            states = dict(h.q("select state, count(*) from remote_component group by state"))
            runs = dict(h.q("select state, count(*) from remote_run group by state"))
            results, distinct = h.q("select count(*), count(distinct imfile_id) from chip_result")[0]
            inconsistent = h.q(
                "select count(*) from remote_component c join remote_run r on r.remote_id = c.remote_id "
                "where (r.state = 'full' and c.state <> 'full') or (r.state = 'pending' and c.state <> 'pending') "
                "or (r.state = 'new' and c.state <> 'new')"
            )[0][0]
            jobs = list((Path(tmp) / "home" / "site-local" / "permanent" / "jobs").glob("*.job"))
            out = {
                "workers": args.workers,
                "seconds": round(minute, 1),
                "components": total,
                "runs_prepared": len(prepared),
                "runs_submitted": len(submitted),
                "runs_replayed_by_daemons": len(replayed),
                "prepared_twice": sum(1 for n in prepared.values() if n > 1),
                "submitted_twice": sum(1 for n in submitted.values() if n > 1),
                "replayed_twice": sum(1 for n in replayed.values() if n > 1),
                "jobs": len(jobs),
                "jobs_per_run_max": max(Counter(j.name.rsplit("-a", 1)[0] for j in jobs).values(), default=0),
                "component_states": states,
                "run_states": runs,
                "chip_result_rows": results,
                "chip_result_duplicates": results - distinct,
                "components_lost": total - sum(states.values()),
                "full_without_result": states.get("full", 0) - results,
                "inconsistent_with_run": inconsistent,
                "components_full_per_s": round(full_in_minute / minute, 1),
                "runs_full_per_min": round(60 * runs_in_minute / minute, 1),
            }
            for k, v in out.items():
                print(f"{k:>26}: {v}")
            print(json.dumps(out))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
