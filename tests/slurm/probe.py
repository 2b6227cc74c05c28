"""A test stage, `probe`, whose components do what a test asks: sleep, fail once, always fail,
hang, or take an argument full of shell syntax. Its dbinfo goes to its own small table.

It runs through the real spine (prepare / exec / poll, the real remote runner) on the real
Slurm; only the stage itself is the test's. The App here hands it out by name; everything
else is scbundle's own code.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Float, Integer, String, delete, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from scbundle.core.app import App
from scbundle.core.config import Config, StageSettings, config_from_dict
from scbundle.db.migrate import upgrade
from scbundle.db.models import RemoteComponent, RemoteRun
from scbundle.db.session import Database
from scbundle.stages.base import (
    BuildContext,
    ComponentSpec,
    DbinfoRecord,
    DbinfoTable,
    MissingInput,
    Requirement,
    Stage,
)
from scbundle.stages.registry import STAGES

NASTY = """a b; 'single' "double" $HOME `id` %t %o \\ end"""

_OK = "import sys,time; time.sleep(float(sys.argv[1])); open(sys.argv[2],'w').write(sys.argv[3])"
_FLAKY = (
    "import os,sys; p=sys.argv[1]; seen=os.path.exists(p); open(p,'a').close(); "
    "seen or sys.stderr.write('first try fails\\n'); sys.exit(0 if seen else 2)"  # a system hiccup: retried in the job
)
_FAIL = "import sys; sys.stderr.write('probe: bad data\\n'); sys.exit(5)"
_HANG = "import time; time.sleep(3600)"
_ECHO = "import sys; open(sys.argv[1],'w').write(sys.argv[2])"
_POST = (
    "import json,sys; print(json.dumps({'table':'probe_result','key':{'probe_id':int(sys.argv[1])},"
    "'values':{'value':float(sys.argv[2])}}))"
)
_POST_CHECK = (
    "import json,sys; got=open(sys.argv[3]).read(); sys.exit(5) if got!=sys.argv[4] else "
    "print(json.dumps({'table':'probe_result','key':{'probe_id':int(sys.argv[1])},'values':{'value':float(sys.argv[2])}}))"
)


class ProbeBase(DeclarativeBase):
    pass


class ProbeResult(ProbeBase):
    __tablename__ = "probe_result"

    probe_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    remote_id: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    out_uri: Mapped[str | None] = mapped_column(String(1024))


@dataclass(frozen=True)
class Probe:
    kind: str  # ok | flaky | fail | hang | nasty
    seconds: float = 0.0


class ProbeStage(Stage):
    name = "probe"
    dbinfo_tables = {"probe_result": DbinfoTable(ProbeResult, "probe_id", {"value": float})}

    def __init__(self, probes: dict[int, Probe], data_root: Path, python: str, cost_seconds: float = 1.0) -> None:
        self.probes = probes
        self.data_root = data_root
        self.python = python
        self.threads = 1
        self.cost_seconds = cost_seconds
        self.guess = 1.0  # the stage's estimate of a component's cost is its seconds x guess
        self.input = data_root / "shared.in"
        self.input.parent.mkdir(parents=True, exist_ok=True)
        self.input.write_text("probe input\n")

    def pending_work(self, session: Session, limit: int | None) -> list[int]:
        taken = set(session.scalars(select(RemoteComponent.stage_id).where(RemoteComponent.stage == self.name)))
        ids = [i for i in sorted(self.probes) if i not in taken]
        return ids[:limit] if limit else ids

    def out_local(self, label: str, sid: int) -> str:
        return str(self.data_root / "probe" / label / f"{sid}.out")

    def build(self, session: Session, stage_ids: Sequence[int], ctx: BuildContext) -> list[ComponentSpec | MissingInput]:
        out: list[ComponentSpec | MissingInput] = []
        py = self.python
        inp = Requirement(str(self.input), ctx.pathmap.to_remote(str(self.input)), self.input.stat().st_size)
        for sid in stage_ids:
            p = self.probes[sid]
            local = self.out_local(ctx.label, sid)
            remote = ctx.pathmap.to_remote(local)
            text = f"probe {sid}"
            post = (py, "-S", "-c", _POST, str(sid), str(p.seconds))
            if p.kind == "ok":
                cmd = (py, "-S", "-c", _OK, str(p.seconds), remote, text)
            elif p.kind == "flaky":
                cmd = (py, "-S", "-c", _FLAKY, remote + ".tried")
                post = (py, "-S", "-c", _POST, str(sid), "1")
            elif p.kind == "fail":
                cmd = (py, "-S", "-c", _FAIL)
            elif p.kind == "hang":
                cmd = (py, "-S", "-c", _HANG)
            elif p.kind == "nasty":
                cmd = (py, "-S", "-c", _ECHO, remote, NASTY)
                post = (py, "-S", "-c", _POST_CHECK, str(sid), "1", remote, NASTY)
            else:
                raise ValueError(p.kind)
            products = ((remote, local),) if p.kind in ("ok", "nasty") else ()
            out.append(
                ComponentSpec(
                    stage_id=sid, inputs=(inp,), out_dirs=(posixpath.dirname(remote),), command=cmd, post=post,
                    products=products, cost=max(p.seconds, 0.01) * self.guess,
                )
            )  # fmt: skip
        return out

    def replay(self, session: Session, run: RemoteRun, records: Sequence[DbinfoRecord], ctx: BuildContext) -> None:
        if not records:
            return
        ids = [r.stage_id for r in records]
        session.execute(delete(ProbeResult).where(ProbeResult.probe_id.in_(ids)))
        session.execute(
            insert(ProbeResult),
            [{"probe_id": r.stage_id, "remote_id": run.remote_id, "value": r.values.get("value"),
              "out_uri": self.out_local(run.label, r.stage_id)} for r in records],
        )  # fmt: skip


class ProbeApp(App):
    probe: ProbeStage


def probe_app(tmp: Path, probes: dict[int, Probe], *, scheduler: str = "slurm", permanent: Path | None = None,
              cores_per_node: int = 64, settings: StageSettings | None = None, python: str = "/usr/bin/python3",
              partition: str | None = None, account: str | None = None, slurm_conf: str | None = None) -> ProbeApp:  # fmt: skip
    site = {
        "link": "local", "scheduler": scheduler, "remote_root": str(tmp / "scratch"),
        "permanent_root": str(permanent or tmp / "perm"),
        "paths": [{"local": str(tmp / "data"), "remote": str(tmp / "scratch" / "data")}],
        "cores_per_node": cores_per_node, "max_nodes": 1, "fill_factor": 0.8, "max_walltime": "02:00:00",
        "python": python,
    }  # fmt: skip
    if partition:
        site["partition"] = partition
    if account:
        site["account"] = account
    if slurm_conf:
        site["slurm_conf"] = slurm_conf
    config: Config = config_from_dict(
        {"database": f"sqlite:///{tmp / 'scbundle.db'}", "workdir": str(tmp / "work"), "default_site": "s", "sites": {"s": site}},
        "probe test",
    )
    config.stages["probe"] = settings or StageSettings()
    db = Database(config.database)
    upgrade(db)
    ProbeBase.metadata.create_all(db.engine)
    app = ProbeApp(config, db)
    app.probe = ProbeStage(probes, tmp / "data", python)
    STAGES.use("probe", lambda: app.probe)  # the stage registry answers "probe" with this one
    return app
