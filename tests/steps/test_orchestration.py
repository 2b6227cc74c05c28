"""The orchestration in-process: exec, poll, revert and cancel through steps/, against a site in
a local directory (tests/steps/fakesite.py: the real remote tools, the local scheduler, and a
transport that drops the link, cuts a stream or fails a command on cue). The outcome is read
from the rows and the files, never from which function was called.

The real parts (sshd, Slurm, PostgreSQL) are tested elsewhere; here the logic of the steps:
claims and throttles, a dropped link, one run's failure kept to that run, a refused tool, a cut
stream, products of failed components, revert by fault, cancel.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fakesite import FakeSite, make_app, task_file, wait_job
from sqlalchemy import select

from scbundle.core.app import App
from scbundle.core.states import RunState
from scbundle.db.claims import claim_run
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.stages.demo_data import seed_demo
from scbundle.steps.advance import advance
from scbundle.steps.cancel import cancel
from scbundle.steps.define import define
from scbundle.steps.exec import exec_runs
from scbundle.steps.poll import poll_runs
from scbundle.steps.prepare import prepare
from scbundle.steps.revert import revert

COPY = 'cp "$1" "$2"'


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One upgraded database for the module, copied into each test's home (the migrations run once)."""
    home = tmp_path_factory.mktemp("template") / "home"
    make_app(home).db.engine.dispose()
    return home / "scbundle.db"


@pytest.fixture
def home(tmp_path, template) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(template, home / "scbundle.db")
    return home


@pytest.fixture
def fake(home, monkeypatch) -> FakeSite:
    return FakeSite(home).install(monkeypatch)


def new_run(app: App, home: Path, scripts: list[str], *, site: str | None = None, name: str = "t") -> int:
    """A `commands` run of ``scripts`` (one task each), defined and prepared: pending."""
    d = define(app, label=name, stage="commands", limit=None, site=site, job_policy=None, tasks=task_file(home, scripts, f"{name}.jsonl"))
    prepare(app, remote_id=d.remote_id)
    return d.remote_id


def runs(app: App) -> dict[int, tuple[str, int]]:
    with app.db.read_session() as s:
        return {r.remote_id: (str(r.state), r.fault) for r in s.scalars(select(RemoteRun))}


def run_row(app: App, rid: int) -> RemoteRun:
    with app.db.read_session() as s:
        run = s.get(RemoteRun, rid)
        assert run is not None
        s.expunge(run)
        return run


def components(app: App, rid: int) -> list[tuple[int, str, int]]:
    with app.db.read_session() as s:
        rows = s.execute(
            select(RemoteComponent.idx, RemoteComponent.state, RemoteComponent.fault).where(RemoteComponent.remote_id == rid).order_by(RemoteComponent.id)
        )
        return [(i, str(st), f) for i, st, f in rows]


def outputs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "data" / "out").glob("*")) if (home / "data" / "out").is_dir() else []


def test_a_cut_stream_then_a_whole_poll_delivers_only_good_products_and_revert_picks_by_fault(home, fake):
    app = make_app(home)
    # task 1 writes its product, then fails with a data fault (exit 5): a partial product on the site
    rid = new_run(app, home, [COPY, 'echo partial > "$2"; exit 5', COPY])
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert [r.error for r in rep.results] == [None] and runs(app) == {rid: ("run", 0)}
    assert components(app, rid) == [(0, "run", 0), (1, "run", 0), (2, "run", 0)]
    run_dir = run_row(app, rid).remote_dir
    assert wait_job(run_dir) == 0

    fake.faults.cut_on, fake.faults.cut_bytes = "pack", 700  # the first pack's stream ends mid-way
    rep = poll_runs(app, remote_id=rid)
    assert rep.results[0].error and runs(app) == {rid: ("run", 2)}  # a hiccup: the next poll tries again
    assert "(poll tries again)" in run_row(app, rid).message
    assert components(app, rid) == [(0, "run", 0), (1, "run", 0), (2, "run", 0)]  # nothing replayed
    assert outputs(home) == []  # nothing delivered from a stream cut short

    fake.faults.cut_on = None
    poll_runs(app, remote_id=rid)
    assert runs(app) == {rid: ("error", 5)}
    assert components(app, rid) == [(0, "full", 0), (1, "error", 5), (2, "full", 0)]
    # the good components' products at their destinations; the failed one's partial product stays on the site
    assert outputs(home) == ["t.jsonl.0.out", "t.jsonl.2.out"]
    assert (home / "data" / "out" / "t.jsonl.0.out").read_text() == "task 0\n"
    assert list((home / "site-local").rglob("t.jsonl.1.out"))
    assert not list((home / "work").rglob("returned/products/*"))  # staged products are moved, not left

    assert revert(app, remote_id=rid, fault=2)[0].requeued == 0  # no component has fault 2
    assert components(app, rid)[1] == (1, "error", 5)
    assert runs(app)[rid][0] == "error"
    rev = revert(app, remote_id=rid, fault=5)[0]
    assert (rev.from_state, rev.to_state, rev.requeued) == ("error", "new", 1)
    assert [c[1:] for c in components(app, rid)] == [("full", 0), ("new", 0), ("full", 0)]


def test_a_dropped_link_pauses_the_run_and_the_sites_later_ones_not_another_sites(home, fake):
    app = make_app(home)
    a = new_run(app, home, [COPY], name="a")
    b = new_run(app, home, [COPY], name="b")
    c = new_run(app, home, [COPY], site="other", name="c")
    fake.faults.drop_on = str(home / "site-local")  # every invocation on site local finds the link dropped
    rep = exec_runs(app, progress=False)
    assert sorted(rep.auth) == [a, b] and "link to site local is down" in (rep.auth_reason or "")
    assert runs(app) == {a: ("auth", 0), b: ("auth", 0), c: ("run", 0)}
    local_calls = [argv for argv in fake.argvs if any(str(home / "site-local") in x for x in argv)]
    assert len(local_calls) == 1  # the site's later run was not tried on the dropped link
    assert fake.opened.count("local") == 1 and fake.opened.count("other") == 1  # one transport a site a pass

    fake.faults.drop_on = None
    assert sorted(r.remote_id for r in revert(app, auth=True)) == [a, b]
    assert runs(app) == {a: ("pending", 0), b: ("pending", 0), c: ("run", 0)}  # exec takes them up again


def test_a_link_down_before_the_pass_pauses_every_run_of_the_site(home, fake):
    app = make_app(home)
    a = new_run(app, home, [COPY], name="a")
    b = new_run(app, home, [COPY], name="b")
    fake.faults.down = True
    rep = exec_runs(app, progress=False)
    assert sorted(rep.auth) == [a, b] and runs(app) == {a: ("auth", 0), b: ("auth", 0)}
    assert fake.argvs == []  # nothing was asked of a link that is down


def test_one_runs_failure_is_that_runs_alone(home, fake):
    app = make_app(home)
    a = new_run(app, home, [COPY], name="a")
    b = new_run(app, home, [COPY], name="b")
    gone = new_run(app, home, [COPY], name="gone")
    fake.faults.fail_on = os.path.basename(run_row(app, a).remote_dir)  # a's bundle is refused on the site
    shutil.rmtree(run_row(app, gone).path_base)  # gone's bundle is gone from the workdir
    rep = exec_runs(app, progress=False)
    errors = {r.remote_id: r.error for r in rep.results}
    assert "the site says no" in errors[a] and errors[b] is None and "is missing" in errors[gone]
    assert runs(app) == {a: ("error", 2), b: ("run", 0), gone: ("pending", 2)}  # gone: prepare builds it again
    assert components(app, a) == [(0, "pending", 0)] and components(app, b) == [(0, "run", 0)]
    assert "exit 1" in run_row(app, a).message and "scbundle prepare commands" in run_row(app, gone).message


def test_a_refused_tool_leaves_the_run_pending_until_the_site_is_fixed(home, fake):
    app = make_app(home)
    a = new_run(app, home, [COPY], name="a")
    exec_runs(app, remote_id=a, progress=False)  # ships the tools
    rid = new_run(app, home, [COPY], name="b")
    [tools] = (home / "site-local" / "permanent" / "tools").iterdir()
    tools.chmod(0o777)  # another account could change the tools: nothing runs from there
    n = len(fake.argvs)
    rep = exec_runs(app, remote_id=rid, progress=False)
    assert rep.results[0].still_pending and runs(app)[rid] == ("pending", 3)
    assert str(tools) in run_row(app, rid).message
    assert not any("submit" in argv for argv in fake.argvs[n:])  # no job was queued
    assert exec_runs(app, progress=False).results == []  # unnamed, it waits for the operator
    tools.chmod(0o755)
    exec_runs(app, remote_id=rid, progress=False)
    assert runs(app)[rid] == ("run", 0)


def test_a_claimed_run_is_skipped_and_a_throttle_holds_the_sites_later_runs(home, fake):
    app = make_app(home, max_in_flight=1)
    a = new_run(app, home, [COPY], name="a")
    with claim_run(app.db, a, [RunState.PENDING]) as claim:  # as another process would hold it
        assert claim is not None
        rep = exec_runs(app, remote_id=a, progress=False)
    assert rep.results == [] and "another process is working on it" in rep.held[0]
    assert runs(app) == {a: ("pending", 0)} and fake.argvs == []
    exec_runs(app, remote_id=a, progress=False)
    b = new_run(app, home, [COPY], name="b")
    c = new_run(app, home, [COPY], name="c")
    n = len(fake.argvs)
    rep = exec_runs(app, progress=False)
    assert rep.results == [] and len(rep.held) == 1 and "max_in_flight" in rep.held[0]  # b held; c waits behind it
    assert runs(app) == {a: ("run", 0), b: ("pending", 0), c: ("pending", 0)} and len(fake.argvs) == n


def test_cancel_stops_the_job_and_faults_what_did_not_finish(home, fake):
    app = make_app(home)
    rid = new_run(app, home, [COPY, "sleep 120"])
    exec_runs(app, remote_id=rid, progress=False)
    run_dir = Path(run_row(app, rid).remote_dir)
    for _ in range(600):  # until the quick task's record is written: the job is under way
        if any(f.read_text() for f in (run_dir / "results").glob("rank-*.jsonl")):
            break
        import time

        time.sleep(0.05)
    out = cancel(app, rid, settle_s=30)
    assert out.state == RunState.ERROR and runs(app) == {rid: ("error", 2)}
    assert components(app, rid) == [(0, "full", 0), (1, "error", 2)]  # safe to revert
    assert outputs(home) == ["t.jsonl.0.out"]


def test_a_full_run_advances_its_work_to_the_next_stage_once(home, fake):
    app = make_app(home)
    seed_demo(app, 8)  # one exposure of 8 chips
    rid = define(app, label="night", stage="chip", limit=None, site=None, job_policy=None).remote_id
    prepare(app, remote_id=rid)
    exec_runs(app, remote_id=rid, progress=False)
    wait_job(run_row(app, rid).remote_dir)
    poll_runs(app, remote_id=rid)
    assert runs(app) == {rid: ("full", 0)}
    rep = advance(app, label="night")
    [nxt] = rep.defined
    assert (nxt.stage, nxt.label, nxt.n_components) == ("cam", "night", 1)  # the exposure's chips, one cam item
    assert runs(app) == {rid: ("full", 0), nxt.remote_id: ("new", 0)}
    assert advance(app, label="night").defined == []  # nothing queued twice
