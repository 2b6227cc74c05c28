"""Front ends in and out of service, and several local hosts on one database: the pure
decision (heartbeats + now -> act / leave / auth), which hosts a transfer may use, and exec's
loop on an ssh site in one process (real `ssh -O check`, no site: no master is up)."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scbundle.core.app import App
from scbundle.core.config import config_from_dict, embedded_default
from scbundle.core.errors import ConfigError
from scbundle.db import journal
from scbundle.db.hosts import Heartbeat, beat, link_decision, off_hosts, service_states, set_service
from scbundle.db.migrate import upgrade
from scbundle.db.models import RemoteRun
from scbundle.db.session import Database
from scbundle.site.hosts import in_service, usable_indices

NOW = datetime(2026, 12, 2, 3, 0, 0)


def hb(local: str, up: bool, age_s: float, host: str = "fe1") -> Heartbeat:
    return Heartbeat(local, "mu", host, up, NOW - timedelta(seconds=age_s))


def decide(beats, *, mine_up=False, off=()):
    return link_decision(beats, me="A", mine_up=mine_up, now=NOW, fresh_s=300, off=off)


def test_decision_own_link_up_acts_whatever_the_others_say():
    assert decide([hb("B", True, 1)], mine_up=True).action == "act"
    assert decide([], mine_up=True).action == "act"


def test_decision_leaves_to_a_host_with_a_fresh_heartbeat_saying_up():
    d = decide([hb("B", True, 10), hb("C", False, 10), hb("A", False, 1)])
    assert (d.action, d.to) == ("leave", ("B",))


@pytest.mark.parametrize(
    "beats, off",
    [
        ([], ()),  # nobody has ever said anything
        ([hb("B", True, 301)], ()),  # B said up, too long ago (its daemon is gone)
        ([hb("B", False, 5)], ()),  # B says down
        ([hb("A", True, 5)], ()),  # this host's own old word does not count: its link is down now
        ([hb("B", True, 5, host="fe2")], ("fe2",)),  # B is up only to a front end out of service
        ([hb("B", True, -400)], ()),  # a heartbeat far in the future: another host's clock, not trusted
    ],
)
def test_decision_auth_when_no_other_host_has_a_live_link(beats, off):
    assert decide(beats, off=off).action == "auth"


def test_decision_a_little_clock_skew_still_counts():
    assert decide([hb("B", True, -30)]).action == "leave"


def test_usable_hosts_skip_those_out_of_service_and_never_ask_their_master():
    asked = []

    def up(i: int) -> bool:
        asked.append(i)
        return i != 2

    hosts = ["fe0", "fe1", "fe2", "fe3"]
    assert in_service(hosts, {"fe1"}) == [0, 2, 3]
    assert usable_indices(hosts, {"fe1"}, up) == [0, 3]
    assert asked == [0, 2, 3]


@pytest.fixture
def short_dir():
    d = Path(tempfile.mkdtemp(prefix="scbh", dir="/tmp"))
    d.chmod(0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def app(tmp_path: Path, short_dir: Path, monkeypatch) -> App:
    monkeypatch.setenv("SCBUNDLE_HOST", "A")
    data = embedded_default(tmp_path)
    data["sites"]["mu"] = {
        "link": "ssh", "scheduler": "slurm", "remote_root": "/scratch/x", "permanent_root": "/perm/x",
        "ssh": {"hosts": ["fe1", "fe2"], "user": "op", "control_dir": str(short_dir / "c"), "connect_timeout": 2},
    }  # fmt: skip
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(db)
    with db.session() as s:
        s.add(RemoteRun(remote_id=1, stage="chip", label="l", site="mu", state="pending", attempt=1, fault=0, job_policy="fatal"))
    return App(config_from_dict(data, "test"), db)


def test_set_service_refuses_an_unknown_host_by_name_and_journals_each_change(app):
    with app.db.session() as s, pytest.raises(ConfigError, match=r"'fe9' is not one of its front ends \(hosts: fe1, fe2\)"):
        set_service(s, "mu", ["fe1", "fe2"], "fe9", on=False, why=None)
    with app.db.session() as s:
        assert set_service(s, "mu", ["fe1", "fe2"], "fe2", on=False, why="disk full") is True
    with app.db.session() as s:
        assert set_service(s, "mu", ["fe1", "fe2"], "fe2", on=False, why="again") is False  # already off: no event
        assert off_hosts(s, "mu") == {"fe2"}
        fe1, fe2 = service_states(s, "mu", ["fe1", "fe2"])
        assert fe1.in_service and fe1.since is None
        assert not fe2.in_service and fe2.why == "disk full" and fe2.by == journal.whoami() and fe2.since is not None
        assert set_service(s, "mu", ["fe1", "fe2"], "fe2", on=True, why=None) is True
    with app.db.read_session() as s:
        evs = journal.events(s, kind="link")
        assert [(e.command, e.site, e.src, e.dst, e.message) for e in evs] == [
            ("link", "mu", "on", "off", "fe2: out of service (disk full)"), ("link", "mu", "off", "on", "fe2: in service")]
        assert off_hosts(s, "mu") == frozenset()


def _state(app: App) -> tuple[str, str | None]:
    with app.db.read_session() as s:
        r = s.get(RemoteRun, 1)
        return r.state, r.prev_state


def test_exec_with_every_host_off_holds_the_run_pending_and_says_so(app):
    from scbundle.steps.exec import exec_runs

    with app.db.session() as s:
        for h in ("fe1", "fe2"):
            set_service(s, "mu", ["fe1", "fe2"], h, on=False, why="maintenance")
    rep = exec_runs(app, progress=False)
    assert _state(app) == ("pending", None) and not rep.auth and not rep.results
    assert any("every front end is out of service (fe1, fe2)" in h and "link host on" in h for h in rep.held)


def test_exec_without_a_link_leaves_the_run_to_a_host_whose_link_is_up_else_auth(app):
    from scbundle.steps.exec import exec_runs

    with app.db.session() as s:  # host B said a moment ago that its master to fe1 is up
        beat(s, "B", "mu", [("fe1", True), ("fe2", False)])
    rep = exec_runs(app, progress=False)
    assert _state(app) == ("pending", None) and not rep.auth
    assert any("left to B" in h for h in rep.held)
    with app.db.session() as s:  # B's master dropped and its daemon said so
        beat(s, "B", "mu", [("fe1", False)])
    rep = exec_runs(app, progress=False)
    assert _state(app) == ("auth", "pending") and rep.auth == [1]


def test_a_live_host_only_to_a_front_end_out_of_service_does_not_count(app):
    from scbundle.steps.exec import exec_runs

    with app.db.session() as s:
        beat(s, "B", "mu", [("fe2", True)])
        set_service(s, "mu", ["fe1", "fe2"], "fe2", on=False, why=None)
    exec_runs(app, progress=False)
    assert _state(app)[0] == "auth"


def test_the_daemon_round_records_this_hosts_masters_as_heartbeats(app):
    from scbundle.db.hosts import heartbeats
    from scbundle.ops.links import beat_all

    with app.db.session() as s:
        beat(s, "A", "mu", [("fe1", True)])  # an old word of this host's: up
    assert beat_all(app) == ["site mu: no master up from A (`scbundle link start mu`)"]
    with app.db.read_session() as s:
        assert [(b.local_host, b.host, b.up) for b in heartbeats(s, "mu")] == [("A", "fe1", False), ("A", "fe2", False)]
