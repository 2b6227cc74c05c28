"""The web console's response times at production size: the overview (page and /api), a run
page and a failed component's page, with N components (default 100,000 and 1,000,000) in
runs of 37,200 (the field notes' chip stage), rows bulk-inserted straight into the tables:
two runs in three full, the third in error with 5% of its
components failed (faults 5 and 2) and 5% pending. Prints figures; asserts nothing.

    .venv/bin/python bench/web.py [--components 100000 1000000] [--url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import make_app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from scbundle.core.config import WebSettings  # noqa: E402
from scbundle.db.models import RemoteComponent, RemoteRun  # noqa: E402
from scbundle.web.app import create_app  # noqa: E402
from scbundle.web.auth import Keyring  # noqa: E402

PER_RUN = 37_200
TOKEN = "bench-token-0123456789"


def fill(app, n: int) -> tuple[int, int]:
    """Runs and components for ``n`` components; (a run with failures, one failed stage_id)."""
    runs = (n + PER_RUN - 1) // PER_RUN
    with app.db.session() as s:
        s.execute(insert(RemoteRun), [
            {"remote_id": r + 1, "stage": "chip", "label": f"night{r % 8}", "site": "mustang",
             "state": "error" if r % 3 == 0 else "full", "fault": 5 if r % 3 == 0 else 0, "req_nodes": 162,
             "req_cores": 162 * 24, "req_seconds": 3600, "cost_seconds": 150.0, "cost_source": "configured",
             "job_seconds": 3000.0, "busy_core_seconds": 162 * 24 * 2500.0, "path_base": "/nonexistent"}
            for r in range(runs)])  # fmt: skip
    sid = 0
    chunk: list[dict] = []
    for r in range(runs):
        for i in range(min(PER_RUN, n - r * PER_RUN)):
            sid += 1
            k = sid % 100
            if r % 3:  # a full run: every component full
                state, fault = "full", 0
            else:  # a run in error: 5% failed (faults 5 and 2), 5% pending again
                state, fault = ("full", 0) if k < 90 else ("error", 5 if k < 93 else 2) if k < 95 else ("pending", 0)
            chunk.append({"remote_id": r + 1, "stage": "chip", "stage_id": sid, "idx": i, "state": state, "fault": fault,
                          "attempts": 1, "exit_code": 5 if fault == 5 else 0, "rank": i % 3888, "host": f"nid{i % 162:05d}",
                          "t_start": 0.0, "t_end": 150.0, "message": "command exit 5: bad input data" if fault == 5 else None})  # fmt: skip
            if len(chunk) >= 50_000:
                with app.db.session() as s:
                    s.execute(insert(RemoteComponent), chunk)
                chunk = []
    if chunk:
        with app.db.session() as s:
            s.execute(insert(RemoteComponent), chunk)
    return 1, 91  # run 1 is in error; stage_id 91 is its first fault-5 component


def timed(client: TestClient, path: str, reps: int) -> tuple[float, float]:
    h = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get(path, headers=h).status_code == 200, path
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = client.get(path, headers=h)
        ts.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, path
    return statistics.median(ts), max(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--url", default=None, help="a database URL (default: SQLite in a temporary directory)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    for n in args.components:
        with tempfile.TemporaryDirectory() as tmp:
            app = make_app(Path(tmp), args.url)
            t0 = time.perf_counter()
            rid, sid = fill(app, n)
            made = time.perf_counter() - t0
            client = TestClient(create_app(app, Keyring.from_settings(WebSettings(token=TOKEN), env={})), base_url="http://127.0.0.1")
            print(f"{n:,} components in {(n + PER_RUN - 1) // PER_RUN} runs ({app.db.engine.url.get_backend_name()}, inserted in {made:.1f} s):")
            for what, path in [("overview page", "/"), ("overview /api", "/api/overview"), ("status --json /api", "/api/status"),
                               ("run page", f"/runs/{rid}"), ("run page, failed only", f"/runs/{rid}?state=failed&fault=5"),
                               ("component page", f"/runs/{rid}/components/{sid}")]:  # fmt: skip
                med, worst = timed(client, path, args.reps)
                print(f"  {what:24s} median {med:8.1f} ms  max {worst:8.1f} ms")
            app.db.engine.dispose()


if __name__ == "__main__":
    main()
