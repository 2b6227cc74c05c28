"""Several processes on one database (SQLite, a real PostgreSQL and a real MariaDB): claims, throttles, a replay
cut off by a server restart, a bundle deleted before exec. Real `scbundle` processes on the
embedded `local` site; every check reads the rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import clirun
import pytest
import tomli_w
from clirun import Cli
from sqlalchemy import create_engine, text

from scbundle.core.config import embedded_default

BACKENDS = ["sqlite", "postgresql", "mariadb"]
SERVERS = {"postgresql": "pg_server", "mariadb": "maria_server"}  # the fixture of each server backend


@dataclass
class Env:
    """A scbundle home on the local site, a config file naming the database, the command line."""

    backend: str
    url: str
    cli: Cli
    config_path: Path

    def configure(self, **site: object) -> None:
        """(Re)write the config: the embedded default, this database, ``site`` keys on `local`."""
        cfg = embedded_default(self.cli.home)
        cfg["database"] = self.url
        cfg["sites"]["local"].update(site)
        self.config_path.write_text(tomli_w.dumps(cfg))

    def q(self, sql: str, **params: object) -> list[tuple]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as c:
                return [tuple(r) for r in c.execute(text(sql), params)]
        finally:
            engine.dispose()

    def scbundle(self, *args: str, failpoint: str | None = None) -> clirun.Proc | subprocess.Popen:
        env = dict(self.cli.env)
        if failpoint:
            env["SCBUNDLE_FAILPOINT"] = failpoint
        return clirun.popen(list(args), env=env)  # its own process, started now

    def at_once(self, n: int, *args: str, timeout: float = 300) -> list[tuple[int, str, str]]:
        """``n`` processes of the same command started together; (exit code, stdout, stderr) each."""
        procs = [self.scbundle(*args) for _ in range(n)]
        out = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            out.append((p.returncode, stdout, stderr))
        return out


def make_env(tmp_path: Path, backend: str, url: str | None = None) -> Env:
    home = tmp_path / "home"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SCBUNDLE_")}
    config_path = tmp_path / "config.toml"
    environ.update(SCBUNDLE_HOME=str(home), SCBUNDLE_CONFIG=str(config_path), COLUMNS="160", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    e = Env(backend, url or f"sqlite:///{home / 'scbundle.db'}", Cli(home, environ), config_path)
    e.configure()
    return e


@pytest.fixture(params=BACKENDS)
def env(request, tmp_path: Path):
    if request.param == "sqlite":
        yield make_env(tmp_path, "sqlite")
        return
    server = request.getfixturevalue(SERVERS[request.param])
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield make_env(tmp_path, request.param, server.create_database(name))
    server.drop_database(name)


def seed(env: Env, runs: int, per_run: int) -> list[int]:
    env.cli("db", "upgrade")
    env.cli("demo-data", "--images", str(runs * per_run))
    return [env.cli.json("define", "--label", f"r{i}", "--stage", "chip", "--limit", str(per_run))["remote_id"] for i in range(runs)]


def wait_for_jobs(env: Env, rids: list[int], timeout: float = 240) -> None:
    """Until every run's job wrote its exit marker (the local site runs them on this machine)."""
    dirs = {rid: Path(d) for rid, d in env.q("select remote_id, remote_dir from remote_run")}
    deadline = time.monotonic() + timeout
    while not all((dirs[rid] / "job.exit").exists() for rid in rids):
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.2)


def poll_until_done(env: Env, workers: int, timeout: float = 300) -> list[dict]:
    """``workers`` threads, each starting `scbundle poll --json` again and again until no run is
    left in state run; every Polled record any of them printed."""
    records: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def worker() -> None:
        while time.monotonic() < deadline:
            if not env.q("select remote_id from remote_run where state = 'run'"):
                return
            p = env.scbundle("poll", "--json")
            stdout, stderr = p.communicate(timeout=timeout)
            with lock:
                if p.returncode != 0:
                    errors.append(stderr)
                records.extend(json.loads(stdout) if stdout.strip() else [])

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return records


# --- each run prepared once, one job per run, results replayed once ---------------------------


def test_four_processes_prepare_exec_poll_the_same_runs_once_each(env):
    rids = seed(env, runs=10, per_run=3)
    prepared = env.at_once(4, "prepare", "chip", "--json")
    assert all(code == 0 for code, _, _ in prepared), prepared
    by_prepare = Counter(p["remote_id"] for _, out, _ in prepared for p in json.loads(out))
    assert by_prepare == Counter(rids)  # each run prepared by exactly one process
    assert env.q("select state, count(*) from remote_run group by state") == [("pending", 10)]
    assert env.q("select state, count(*) from remote_component group by state") == [("pending", 30)]

    executed = env.at_once(4, "exec", "--json")
    assert all(code == 0 for code, _, _ in executed), executed
    subs = [e for _, out, _ in executed for e in json.loads(out)]
    assert Counter(e["remote_id"] for e in subs) == Counter(rids) and all(e["error"] is None for e in subs)
    jobs = sorted(p.name for p in (env.cli.site_root / "permanent" / "jobs").glob("*.job"))
    assert jobs == sorted(f"{n}.job" for (n,) in env.q("select job_name from remote_run")) and len(jobs) == len(rids)  # one job per run
    assert env.q("select state, count(*), sum(attempts) from remote_component group by state") == [("run", 30, 30)]

    wait_for_jobs(env, rids)
    records = poll_until_done(env, workers=4)
    replays = Counter(r["remote_id"] for r in records if r["state"] != "run")
    assert replays == Counter(rids)  # each run's results replayed by exactly one poll
    assert env.q("select state, count(*) from remote_run group by state") == [("full", 10)]
    assert env.q("select state, count(*), sum(attempts) from remote_component group by state") == [("full", 30, 30)]
    assert env.q("select count(*), count(distinct imfile_id) from chip_result") == [(30, 30)]
    # every result row belongs to the run that holds its imfile
    assert env.q(
        "select count(*) from chip_result r join remote_component c on c.stage = 'chip' and c.stage_id = r.imfile_id "
        "where c.remote_id = r.remote_id"
    ) == [(30,)]


def test_four_processes_define_at_once_share_the_work_without_overlap(env):
    env.cli("db", "upgrade")
    env.cli("demo-data", "--images", "20")
    results = env.at_once(4, "define", "--label", "d", "--stage", "chip", "--limit", "5", "--json")
    assert all(code == 0 for code, _, _ in results), results
    assert sorted(json.loads(out)["n_components"] for _, out, _ in results) == [5, 5, 5, 5]
    assert env.q("select count(*), count(distinct stage_id), count(distinct remote_id) from remote_component") == [(20, 20, 4)]


def test_four_advances_at_once_and_again_queue_the_next_stage_once(env, tmp_path):
    rids = seed(env, runs=2, per_run=8)  # one exposure (8 chips) a run
    env.cli("prepare", "chip")
    env.cli("exec")
    wait_for_jobs(env, rids)
    poll_until_done(env, workers=1)
    assert env.q("select state, count(*) from remote_run group by state") == [("full", 2)]

    # the first advance stops holding the lock (pg_advisory_xact_lock / SQLite's write lock)
    # after reading the full runs; three more start meanwhile and must wait their turn
    go = tmp_path / "go"
    first = env.scbundle("advance", "--json", failpoint=f"advance.examined@{go}")
    others: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        while not go.with_name("go.reached").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate(timeout=5)
            time.sleep(0.05)
        others = [env.scbundle("advance", "--json") for _ in range(3)]
        time.sleep(2.0)
        assert [p.poll() for p in others] == [None, None, None]  # waiting for the lock
        go.touch()
        outs = [p.communicate(timeout=120) for p in (first, *others)]
    finally:
        for p in (first, *others):
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in (first, *others)] == [0, 0, 0, 0], [err for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert sorted(r["remote_id"] for r in reports[0]["runs"]) == rids
    assert sorted(d["n_components"] for d in reports[0]["defined"]) == [1, 1]
    assert [r["runs"] for r in reports[1:]] == [[], [], []]  # the full runs were advanced already
    assert [r["defined"] for r in reports[1:]] == [[], [], []]

    def cam_rows() -> list[tuple]:
        return env.q("select count(*), count(distinct stage_id), count(distinct remote_id) from remote_component where stage = 'cam'")

    assert cam_rows() == [(2, 2, 2)]  # each exposure queued once, in one cam run a chip run
    assert env.q("select count(*) from remote_run where advanced") == [(2,)]
    # and again, plainly and by re-examining each run: nothing more is queued
    assert json.loads(env.cli("advance", "--json").stdout)["defined"] == []
    for rid in rids:
        assert json.loads(env.cli("advance", "--remote-id", str(rid), "--json").stdout)["defined"] == []
    assert cam_rows() == [(2, 2, 2)]
    assert env.q("select count(*) from remote_run") == [(4,)]


def test_the_daemon_carries_a_chip_run_to_stack_and_every_stage_writes_its_results(env):
    seed(env, runs=1, per_run=8)  # one exposure
    d = env.scbundle("daemon", "--loop-seconds", "0.3", "--poll-seconds", "0")
    try:
        deadline = time.monotonic() + 240
        while env.q("select count(*) from remote_run where stage = 'stack' and state = 'full'") != [(1,)]:
            assert time.monotonic() < deadline and d.poll() is None, env.q("select remote_id, stage, state, message from remote_run")
            time.sleep(0.5)
    finally:
        d.terminate()
        d.communicate(timeout=60)
    assert env.q("select stage, state from remote_run order by remote_id") == [
        ("chip", "full"), ("cam", "full"), ("warp", "full"), ("stack", "full")]  # fmt: skip
    full = dict(env.q("select stage, count(*) from remote_component where state = 'full' group by stage"))
    assert full["chip"] == 8 and full["cam"] == 1 and full["warp"] >= 1 and full["stack"] >= 1
    # one result row a full component, in each stage's own table, with its products' paths
    assert env.q("select count(*), count(processed_uri), count(binned_uri) from chip_result") == [(8, 8, 8)]
    assert env.q("select count(*), count(mosaic_uri) from cam_result") == [(1, 1)]
    assert env.q("select count(*), count(image_uri) from warp_result") == [(full["warp"], full["warp"])]
    assert env.q("select count(*), count(image_uri) from stack_result") == [(full["stack"], full["stack"])]


def test_a_claimed_run_is_left_alone_by_other_processes(env):
    from scbundle.db.claims import claim_run
    from scbundle.db.session import Database

    (rid,) = seed(env, runs=1, per_run=3)
    db = Database(env.url)
    try:
        for states, step in ((["new"], ("prepare", "chip")), (["pending"], ("exec",)), (["run"], ("poll",))):
            with claim_run(db, rid, states) as claim:
                assert claim is not None
                named = env.cli(*step, "--remote-id", str(rid), check=False)
                assert named.returncode == 1 and "another process is working on it" in named.stderr
                bulk = env.cli(*step, "--json")
                assert json.loads(bulk.stdout) == []
                assert env.q("select state from remote_run") == [(states[0],)]
            if step[0] == "poll":
                wait_for_jobs(env, [rid])
                env.cli("poll", "--remote-id", str(rid), "--wait", "120")
            else:
                env.cli(*step, "--remote-id", str(rid))  # released: it goes through
    finally:
        db.engine.dispose()
    assert env.q("select state from remote_run") == [("full",)]
    assert env.q("select count(*) from chip_result") == [(3,)]


@pytest.mark.parametrize("point", ["prepare.written", "exec.pushed", "poll.pulled", "poll.replayed"])
def test_killed_inside_a_claim_the_rerun_finishes_once(env, point):
    (rid,) = seed(env, runs=1, per_run=6)
    steps = [("prepare", "chip", "--remote-id", str(rid)), ("exec", "--remote-id", str(rid)), ("poll", "--remote-id", str(rid), "--wait", "120")]
    for step in steps:
        if point.startswith(step[0]):
            if step[0] == "poll":
                wait_for_jobs(env, [rid])
            p = env.cli(*step, failpoint=point, check=False)
            assert p.returncode == -9  # killed while holding the claim; nothing cleaned up
        env.cli(*step)  # at once: no claim was left behind
    assert env.q("select state from remote_run") == [("full",)]
    assert env.q("select count(*), sum(attempts) from remote_component where state = 'full'") == [(6, 6)]
    assert env.q("select count(*) from chip_result") == [(6,)]
    assert [j.name for j in (env.cli.site_root / "permanent" / "jobs").glob("*.job")] == [f"{env.q('select job_name from remote_run')[0][0]}.job"]


# --- the database server restarted under a replay ---------------------------------------------


@pytest.mark.parametrize("backend", list(SERVERS))
def test_replay_cut_off_by_a_server_restart_rolls_back_and_a_later_poll_finishes(request, tmp_path, backend):
    pg = request.getfixturevalue(SERVERS[backend])
    name = f"t_{uuid.uuid4().hex[:12]}"
    e = make_env(tmp_path, backend, pg.create_database(name))
    try:
        (rid,) = seed(e, runs=1, per_run=8)
        e.cli("prepare", "chip", "--remote-id", str(rid))
        e.cli("exec", "--remote-id", str(rid))
        wait_for_jobs(e, [rid])
        go = tmp_path / "go"
        poller = e.scbundle("poll", "--remote-id", str(rid), failpoint=f"poll.replayed@{go}")
        deadline = time.monotonic() + 120
        while not go.with_name("go.reached").exists():  # replayed inside the claim's transaction, not committed
            assert poller.poll() is None and time.monotonic() < deadline, poller.communicate()
            time.sleep(0.05)
        assert e.q("select count(*) from chip_result") == [(0,)]  # nothing visible before the commit
        pg.restart()  # every connection cut; the open transaction is rolled back by the server
        go.touch()
        _, stderr = poller.communicate(timeout=120)
        assert poller.returncode == 1 and "poll failed, nothing replayed" in stderr and "database" in stderr
        assert e.q("select state from remote_run") == [("run",)]
        assert e.q("select state, count(*) from remote_component group by state") == [("run", 8)]
        assert e.q("select count(*) from chip_result") == [(0,)]
        out = e.cli("poll", "--remote-id", str(rid)).stdout  # a later poll finishes it
        assert "full (8 good, 0 failed)" in out
        assert e.q("select state from remote_run") == [("full",)]
        assert e.q("select state, count(*), sum(attempts) from remote_component group by state") == [("full", 8, 8)]
        assert e.q("select count(*), count(distinct imfile_id) from chip_result") == [(8, 8)]
    finally:
        pg.drop_database(name)


# --- a prepared bundle deleted before exec ----------------------------------------------------


def test_exec_of_a_deleted_bundle_says_so_and_one_prepare_brings_it_back(env):
    (rid,) = seed(env, runs=1, per_run=5)
    env.cli("prepare", "chip", "--remote-id", str(rid))
    shutil.rmtree(env.q("select path_base from remote_run")[0][0])
    p = env.cli("exec", "--remote-id", str(rid), check=False)
    assert p.returncode == 1 and "is missing" in p.stderr
    hint = p.stderr.split("run `")[1].split("`")[0]
    assert hint == f"scbundle prepare chip --remote-id {rid}"
    assert env.q("select state, fault from remote_run") == [("pending", 2)]  # nothing was sent; it waits
    assert json.loads(env.cli("exec", "--json").stdout) == []  # and a bulk exec leaves it to a person
    env.cli(*hint.split()[1:])  # the one command exec named
    assert env.q("select state, fault from remote_run") == [("pending", 0)]
    env.cli("exec")
    env.cli("poll", "--remote-id", str(rid), "--wait", "120")
    assert env.q("select state from remote_run") == [("full",)]
    assert env.q("select count(*) from chip_result") == [(5,)]


# --- throttles ----------------------------------------------------------------------------------


def site_status(env: Env) -> dict:
    (site,) = env.cli.json("status")["sites"]
    return site


def test_max_prepared_holds_prepare_back_across_processes_and_status_says_so(env):
    env.configure(max_prepared=3)
    seed(env, runs=6, per_run=2)
    results = env.at_once(4, "prepare", "chip", "--json")
    assert all(code == 0 for code, _, _ in results)
    assert env.q("select state, count(*) from remote_run group by state order by state") == [("new", 3), ("pending", 3)]
    assert any("held back: max_prepared: 3 run(s) on site local" in err for _, _, err in results)
    st = site_status(env)
    assert st["held_by"] == ["max_prepared"] and st["prepared"] == 3 and st["new_runs"] == 3
    assert "held back: prepare of 3 new run(s) by max_prepared (3 prepared, max 3)" in env.cli("status").stdout
    p = env.cli("prepare", "chip", "--remote-id", "4", check=False)
    assert p.returncode == 1 and "max_prepared" in p.stderr
    env.cli("exec")  # the pending runs go: room to prepare again
    assert env.q("select count(*) from remote_run where state = 'pending'") == [(0,)]
    daemon = env.cli("daemon", "--once", "--poll-seconds", "3600")
    assert "prepared remote_id" in daemon.stdout and "prepare held back" not in daemon.stdout


def test_max_in_flight_holds_exec_back_across_processes_and_status_says_so(env):
    env.configure(max_in_flight=2)
    rids = seed(env, runs=5, per_run=2)
    env.cli("prepare", "chip")
    results = env.at_once(4, "exec", "--json")
    assert all(code == 0 for code, _, _ in results)
    assert env.q("select state, count(*) from remote_run group by state order by state") == [("pending", 3), ("run", 2)]
    assert any("held back: max_in_flight: 2 run(s) on site local" in err for _, _, err in results)
    st = site_status(env)
    assert st["held_by"] == ["max_in_flight"] and st["in_flight"] == 2 and st["pending_runs"] == 3
    assert "held back: exec of 3 pending run(s) by max_in_flight (2 in flight, max 2)" in env.cli("status").stdout
    first = [r for (r,) in env.q("select remote_id from remote_run where state = 'run'")]
    wait_for_jobs(env, first)
    held = env.cli("daemon", "--once", "--poll-seconds", "0").stdout  # exec (held back), then poll brings two back
    assert "exec held back: max_in_flight" in held
    assert env.q("select state, count(*) from remote_run group by state order by state") == [("full", 2), ("pending", 3)]
    env.cli("daemon", "--once", "--poll-seconds", "0")  # room for two more
    states = dict(env.q("select state, count(*) from remote_run group by state"))
    assert states["pending"] == 1 and states.get("run", 0) + states["full"] == 4 and len(rids) == 5
    # the journal has one event a hold begun or ended (what a notifier times), not one a pass
    holds = env.q("select command, site, src, dst from journal_event where kind = 'hold' order by id")
    assert holds == [("exec", "local", "free", "held"), ("exec", "local", "held", "free"), ("exec", "local", "free", "held")]


def test_min_free_disk_holds_prepare_back_and_status_says_so(env):
    env.configure(min_free_disk="100%")  # never that much free: nothing new is prepared
    seed(env, runs=2, per_run=2)
    p = env.cli("prepare", "chip")
    assert "held back: min_free_disk: the workdir" in p.stderr
    assert env.q("select state, count(*) from remote_run group by state") == [("new", 2)]
    st = site_status(env)
    assert st["held_by"] == ["min_free_disk"] and st["min_free_disk"] == "100%" and st["min_free_disk_bytes"] > st["free_disk"]
    assert "held back: prepare of 2 new run(s) by min_free_disk" in env.cli("status").stdout
    env.configure(min_free_disk="1M")
    env.cli("prepare", "chip")
    assert env.q("select state, count(*) from remote_run group by state") == [("pending", 2)]
    assert site_status(env)["held_by"] == []
