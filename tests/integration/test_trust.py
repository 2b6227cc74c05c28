"""Trust (issue 10): a third party's stage (tests/pluginkit.py CATALOG) on the embedded `local`
site, real processes and a real SQLite: no wrong answer, no dead end, one run's failure its own.

- a failed component's partial product never reaches the product's destination;
- a stage's fault map and the faults it retries decide what happens to a failure, the config
  can override both;
- abandoned components come back with `revert --abandoned`, and a run's state, fault and
  message always agree with its components;
- a hostile value in a record fails that component alone, and the daemon goes on;
- a run that cannot be prepared is that run's error and the others are prepared;
- every state has a command that leaves it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
import tomli_w
from pluginkit import install_catalog


def q(cli, sql, *args):
    with sqlite3.connect(cli.db_path) as c:
        return c.execute(sql, args).fetchall()


@pytest.fixture
def cat(cli, tmp_path):
    """The catalog plugin installed, demo data for 8 images, the schema current."""
    site = tmp_path / "plugins"
    install_catalog(site)
    cli.env["PYTHONPATH"] = str(site)
    cli("db", "upgrade")
    cli("demo-data", "--images", "8")
    return cli


def raw_of(cli, imfile_id: int) -> Path:
    return Path(q(cli, "select uri from imfile where imfile_id=?", imfile_id)[0][0])


def spoil(cli, imfile_id: int, head: bytes) -> None:
    """Rewrite an image so the catalog program fails or lies for it (same size)."""
    raw = raw_of(cli, imfile_id)
    data = raw.read_bytes()
    raw.write_bytes(head + data[len(head):])


def run_catalog(cli, label: str = "cat", limit: int | None = None) -> int:
    args = ["define", "--label", label, "--stage", "catalog"] + (["--limit", str(limit)] if limit else [])
    rid = cli.json(*args)["remote_id"]
    cli("prepare", "catalog", "--remote-id", str(rid))
    cli("exec", "--remote-id", str(rid))
    cli("poll", "--remote-id", str(rid), "--wait", "120", check=False)
    return rid


def with_config(cli, tmp_path, **stages) -> None:
    """The embedded default written out, with [stages.NAME] tables added."""
    from scbundle.core.config import embedded_default

    data = embedded_default(cli.home)
    data["stages"] = {**data["stages"], **stages}
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    cli.env["SCBUNDLE_CONFIG"] = str(path)


def test_a_failed_components_partial_product_never_reaches_its_destination(cat):
    for i in (2, 5):
        spoil(cat, i, b"BAD")
    rid = run_catalog(cat)
    assert q(cat, "select state, fault from remote_run") == [("error", 5)]
    rows = q(cat, "select stage_id, state, fault from remote_component order by stage_id")
    assert [r for r in rows if r[1] != "full"] == [(2, "error", 5), (5, "error", 5)]
    good = q(cat, "select imfile_id, cat_uri, nobj from catalog_result order by imfile_id")
    assert [g[0] for g in good] == [1, 3, 4, 6, 7, 8] and all(n > 0 for _, _, n in good)
    for _, uri, nobj in good:
        lines = Path(uri).read_text().splitlines()
        assert len([x for x in lines if not x.startswith("#")]) == nobj
    # the failed components' header-only catalogs stayed on the site: nothing at their destination
    cat_dir = Path(good[0][1]).parent
    assert sorted(p.name for p in cat_dir.iterdir()) == sorted(Path(u).name for _, u, _ in good)
    site_cats = list((cat.site_root / "scratch").rglob("*.cat"))
    assert len(site_cats) == 8  # all eight were written there, two of them partial
    assert {p.read_text() for p in site_cats if p.name.startswith(raw_of(cat, 2).name)} == {"# x y flux\n"}
    assert not list(Path(cat.home / "work").rglob("returned/products/*")), "staged products are moved, not left"
    assert q(cat, "select count(*) from catalog_result where remote_id=?", rid) == [(6,)]


def test_the_stages_fault_map_decides_and_the_config_overrides_it(cat, tmp_path):
    spoil(cat, 3, b"BAD")
    run_catalog(cat, "a", limit=4)
    # the stage maps exit 1 to fault 5 (data): not worth a retry in the job, revertable after
    assert q(cat, "select state, fault, attempts, exit_code from remote_component where stage_id=3") == [("error", 5, 1, 1)]
    log = "".join(p.read_text() for p in (cat.site_root / "permanent" / "runs").rglob("rank-*.log"))
    assert log.count("stage_id 3 attempt 2") == 0 and log.count("stage_id 3 attempt 1") == 1
    # the site's operators read exit 1 as a system fault, retried in the job
    with_config(cat, tmp_path, catalog={"fault_map": {"1": 2}, "retry_faults": [2]})
    spoil(cat, 7, b"BAD")
    rid = run_catalog(cat, "b")
    assert q(cat, "select state, fault, attempts from remote_component where stage_id=7") == [("abandoned", 2, 1)]
    msg = q(cat, "select message from remote_component where stage_id=7")[0][0]
    assert msg.startswith("abandoned after 2 tries: command exit 1")
    assert q(cat, "select state, fault from remote_run where remote_id=?", rid) == [("full", 2)]
    bad = tmp_path / "bad.toml"
    bad.write_text(tomli_w.dumps({"database": "sqlite:///x", "workdir": "/tmp/w", "sites": {"local": {"remote_root": "/r", "permanent_root": "/p"}},
                                  "stages": {"catalog": {"fault_map": {"1": 9}}}}))  # fmt: skip
    p = cat("--config", str(bad), "status", check=False)
    assert p.returncode == 1 and "stages.catalog.fault_map" in p.stderr and "faults are 1-6" in p.stderr


def test_abandoned_components_come_back_and_the_run_always_agrees_with_its_components(cat, tmp_path):
    with_config(cat, tmp_path, catalog={"fault_map": {"1": 2}})  # retried in the job (2 is retried by default)
    originals = {i: raw_of(cat, i).read_bytes() for i in (2, 6)}
    for i in (2, 6):
        spoil(cat, i, b"BAD")
    rid = run_catalog(cat)
    assert q(cat, "select state, count(*) from remote_component group by state order by state") == [("abandoned", 2), ("full", 6)]
    state, fault, message = q(cat, "select state, fault, message from remote_run")[0]
    assert (state, fault) == ("full", 2) and "2 of 8 component(s) abandoned" in message and "revert --abandoned" in message
    st = cat.json("status", "--remote-id", str(rid))["runs"][0]
    assert (st["state"], st["fault"], st["nabandoned"], st["ngood"]) == ("full", 2, 2, 6)
    # a plain revert has nothing to put back (nothing failed revertably), and says what would
    p = cat("revert", "--remote-id", str(rid), check=False)
    assert p.returncode == 1 and "in state 'full'; revert needs state 'error'" in p.stderr and f"revert --remote-id {rid} --abandoned" in p.stderr
    out = cat("revert", "--label", "cat", "--fault", "5", "--abandoned").stdout
    assert "nothing to revert" in out  # the abandoned ones are fault 2
    # the input fixed: back in line, under a new attempt, to full with nothing abandoned
    for i, data in originals.items():
        raw_of(cat, i).write_bytes(data)
    out = cat("revert", "--label", "cat", "--fault", "2", "--abandoned").stdout
    assert f"remote_id {rid}: full -> new (2 component(s) requeued, 0 abandoned)" in out
    assert q(cat, "select state, attempt, advanced from remote_run") == [("new", 2, 0)]
    cat("prepare", "catalog", "--remote-id", str(rid))
    cat("exec", "--remote-id", str(rid))
    cat("poll", "--remote-id", str(rid), "--wait", "120")
    assert q(cat, "select state, fault, message from remote_run") == [("full", 0, None)]
    assert q(cat, "select count(*) from catalog_result") == [(8,)]


def test_a_hostile_record_fails_its_component_alone_and_the_daemon_goes_on(cat):
    spoil(cat, 2, b"HUGE")  # its post reports 10**30 objects: too big for any integer column
    spoil(cat, 4, b"DEEP")  # its post prints a 100,000-deep list
    first = cat.json("define", "--label", "a", "--stage", "catalog", "--limit", "4")["remote_id"]
    cat("demo-data", "--images", "4")
    second = cat.json("define", "--label", "b", "--stage", "catalog")["remote_id"]
    for _ in range(60):  # daemon passes: prepare and exec both, then poll until both jobs are back
        p = cat("daemon", "--once", "--poll-seconds", "0", timeout=300)
        assert "Traceback" not in p.stdout + p.stderr
        if all(s not in ("new", "pending", "run") for (s,) in q(cat, "select state from remote_run")):
            break
        time.sleep(0.5)
    assert q(cat, "select remote_id, state, fault from remote_run order by remote_id") == [(first, "error", 5), (second, "full", 0)]
    comps = dict(q(cat, "select stage_id, message from remote_component where remote_id=? and state != 'full'", first))
    assert set(comps) == {2, 4}
    assert "rank-" in comps[2] and ".jsonl:" in comps[2] and "64-bit integer" in comps[2]  # file and line, and why
    assert "nested too deep" in comps[4]  # the runner refused it: the rank's other components still ran
    assert q(cat, "select count(*) from catalog_result where remote_id=?", first) == [(2,)]
    assert q(cat, "select count(*) from catalog_result where remote_id=?", second) == [(8,)]  # 4 left of the 8, and 4 more


def test_a_run_that_cannot_be_prepared_is_its_own_error_and_the_others_prepare(cli, tmp_path):
    cli("db", "upgrade")
    cli("demo-data", "--images", "6")
    a = cli.json("define", "--label", "blocked", "--stage", "chip", "--limit", "3")["remote_id"]
    b = cli.json("define", "--label", "fine", "--stage", "chip")["remote_id"]
    work = cli.home / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "blocked").write_text("a file where the run's directory goes")  # mkdir fails: ENOTDIR
    p = cli("prepare", "chip", check=False)
    assert p.returncode == 1
    assert f"remote_id {a}: prepare failed, run -> error: File exists: {work / 'blocked'}" in p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    assert f"remote_id {b}: 3 components prepared" in p.stdout
    assert q(cli, "select remote_id, state, fault, prev_state from remote_run order by remote_id") == [(a, "error", 2, "new"), (b, "pending", 0, None)]
    (work / "blocked").unlink()
    assert f"remote_id {a}: error -> new" in cli("revert", "--remote-id", str(a)).stdout
    cli("prepare", "chip", "--remote-id", str(a))
    assert q(cli, "select state from remote_run where remote_id=?", a) == [("pending",)]
    # a request over the site's max_walltime is a configuration fault of that run alone
    with_config(cli, tmp_path, chip={"cost_seconds": 10_000_000.0})
    cli("demo-data", "--images", "2")
    c = cli.json("define", "--label", "long", "--stage", "chip")["remote_id"]
    p = cli("prepare", "chip", check=False)
    assert p.returncode == 1 and f"remote_id {c}: prepare failed, run -> error: 2 commands" in p.stderr and "over the site's max walltime of 12 h" in p.stderr
    assert q(cli, "select state, fault from remote_run where remote_id=?", c) == [("error", 3)]


def test_a_product_swapped_for_a_symlink_on_the_site_fails_its_component_not_the_run(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "4")
    rid = cli.json("define", "--label", "t", "--stage", "chip")["remote_id"]
    cli("prepare", "chip", "--remote-id", str(rid))
    cli("exec", "--remote-id", str(rid))
    run_dir = cli.site_root / "permanent" / "runs"
    for _ in range(600):
        if list(run_dir.rglob("job.exit")):
            break
        time.sleep(0.2)
    stats = sorted((cli.site_root / "scratch").rglob("*.ch.stats.json"))
    assert len(stats) == 4
    victim = stats[0]
    victim.unlink()
    victim.symlink_to("/etc/passwd")  # a co-user's swap: pack refuses to follow it out of the roots
    p = cli("poll", "--remote-id", str(rid), "--wait", "60", check=False)
    assert "Traceback" not in p.stderr
    assert q(cli, "select state, fault from remote_run") == [("error", 2)]
    assert q(cli, "select state, count(*) from remote_component group by state order by state") == [("error", 1), ("full", 3)]
    assert "permanent product did not come back" in q(cli, "select message from remote_component where state='error'")[0][0]
    local = list((cli.home / "data").rglob(victim.name))
    assert local == [] or all("root:" not in x.read_text() for x in local)


def _set_state(cli, rid, state, prev=None):
    with sqlite3.connect(cli.db_path) as c:
        c.execute("update remote_run set state=?, prev_state=? where remote_id=?", (state, prev, rid))


def test_every_state_has_a_command_that_leaves_it(cli):
    """Each state reached for real (new, pending, run, error, auth, full with abandoned
    components) and left with an operator's command; retired is final."""
    from scbundle.core.states import FINAL_STATES, OPERATOR_COMMANDS, RunState, exits

    for state in RunState:
        if state not in FINAL_STATES:
            assert any(t.by in OPERATOR_COMMANDS for t in exits(state)), f"no operator's way out of {state}"
    assert exits(RunState.RETIRED) == []
    cli("db", "upgrade")
    cli("demo-data", "--images", "10")

    def run(limit=2):
        return cli.json("define", "--label", "w", "--stage", "chip", "--limit", str(limit))["remote_id"]

    def state(rid):
        return q(cli, "select state from remote_run where remote_id=?", rid)[0][0]

    r_new = run()
    assert state(r_new) == "new"
    cli("retire", "--remote-id", str(r_new), "--release")
    assert state(r_new) == "retired" and q(cli, "select count(*) from remote_component where remote_id=?", r_new) == [(0,)]
    r_pend = run()
    cli("prepare", "chip", "--remote-id", str(r_pend))
    assert state(r_pend) == "pending"
    cli("retire", "--remote-id", str(r_pend), "--abandon")
    assert state(r_pend) == "retired"
    assert q(cli, "select state, count(*) from remote_component where remote_id=? group by state", r_pend) == [("abandoned", 2)]
    r_run = run()
    cli("prepare", "chip", "--remote-id", str(r_run))
    cli("exec", "--remote-id", str(r_run))
    assert state(r_run) == "run"
    out = cli("retire", "--remote-id", str(r_run), "--release").stdout
    assert "run -> retired" in out and "cancelled" in out
    r_err = run()
    raw = Path(q(cli, "select uri from imfile where imfile_id in (select stage_id from remote_component where remote_id=?) order by imfile_id", r_err)[0][0])
    raw.write_bytes(b"garbage")
    cli("prepare", "chip", "--remote-id", str(r_err))
    cli("exec", "--remote-id", str(r_err))
    cli("poll", "--remote-id", str(r_err), "--wait", "120", check=False)
    assert state(r_err) == "error"
    cli("revert", "--remote-id", str(r_err))
    assert state(r_err) == "new"
    r_auth = run()
    cli("prepare", "chip", "--remote-id", str(r_auth))
    _set_state(cli, r_auth, "auth", "pending")  # what exec does when the link is down (tests/link)
    cli("revert", "--auth")
    assert state(r_auth) == "pending"
    p = cli("revert", "--remote-id", str(r_new), check=False)
    assert p.returncode == 1 and "needs state 'error'" in p.stderr and "RunState" not in p.stderr


def test_messages_a_person_reads(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "2")
    for args in (["exec", "--remote-id", str(10**30)], ["define", "--label", "x", "--stage", "chip", "--limit", str(10**30)],
                 ["demo-data", "--images", "0"], ["status", "--remote-id", "-3"]):  # fmt: skip
        p = cli(*args, check=False)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode != 0 and len(lines) == 1 and "Traceback" not in p.stderr, (args, p.stderr)
    assert "nothing to exec" in cli("exec").stdout
    assert "nothing to poll" in cli("poll").stdout
    assert "nothing to prepare" in cli("prepare", "chip").stdout
    cli("tasks", "off", "exec")
    p = cli("exec", check=False)
    assert p.returncode == 1 and p.stderr.strip() == "exec is switched off (`scbundle tasks on exec`)"
    cli("tasks", "on", "exec")
    p = cli("prepare", "chip", "--remote-id", "1", check=False)
    assert "does not exist" in p.stderr
    rid = cli.json("define", "--label", "a-rather-long-label-for-a-narrow-terminal", "--stage", "chip")["remote_id"]
    p = cli("exec", "--remote-id", str(rid), check=False)
    assert "needs state 'pending'" in p.stderr and "<RunState" not in p.stderr
    for width in (80, 60):
        cli.env["COLUMNS"] = str(width)
        out = cli("status").stdout
        table = [x for x in out.splitlines() if any(c in x for c in "┃│━─")]
        assert table and max(len(x) for x in table) <= width, out
        row = next(x for x in out.splitlines() if f" {rid} " in x)
        assert " chip " in row and " new " in row, out  # stage and state are never cut
        if width == 60:
            assert "not shown at 60 columns" in out
    os.environ.pop("COLUMNS", None)
