"""The web console's fixtures: one scbundle home per test session on the embedded `local`
site, with runs the real steps carried to `error` (one component of each fed a truncated
image: a data fault, 5, with sc_chip's own stderr), and tokens for an operator and a reader."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import clirun
import pytest
import tomli_w
from sqlalchemy import create_engine, text
from webkit import (  # the tests import them from there too (not from "conftest": several share that name)
    OPERATOR,
    READER,
)

from scbundle.core.config import embedded_default

LABELS = ("web0", "web1", "web2")  # web0: read only; web1: the in-process revert; web2: the browser's
PER_RUN = 4


@dataclass
class WebCli:
    env: dict[str, str]

    def __call__(self, *args: str) -> str:
        p = clirun.run(list(args), env=self.env, timeout=300)
        assert p.returncode == 0, f"scbundle {' '.join(args)} exited {p.returncode}: {p.stderr}"
        return p.stdout

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json"))


@dataclass
class Console:
    cli: WebCli
    config_path: Path
    url: str
    run_ids: dict[str, int]
    bad_stage_id: dict[str, int]  # the failed component of each run

    def q(self, sql: str, **params: object) -> list[tuple]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as c:
                return [tuple(r) for r in c.execute(text(sql), params)]
        finally:
            engine.dispose()

    def app(self):
        from scbundle.core.app import App
        from scbundle.core.config import load_config
        from scbundle.db.session import Database
        from scbundle.stages.registry import check_config

        config = check_config(load_config(self.config_path))
        return App(config, Database(config.database))


def _make(tmp: Path) -> Console:
    home = tmp / "home"
    config_path = tmp / "config.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCBUNDLE_")}
    env.update(SCBUNDLE_HOME=str(home), SCBUNDLE_CONFIG=str(config_path), COLUMNS="160", XDG_CONFIG_HOME=str(tmp / "xdg"))
    cfg = embedded_default(home)
    cfg["web"] = {"token": OPERATOR, "users": {"rita": {"token": READER, "role": "reader"}}}
    config_path.write_text(tomli_w.dumps(cfg))
    cli = WebCli(env)
    url = f"sqlite:///{home / 'scbundle.db'}"
    cli("db", "upgrade")
    cli("demo-data", "--images", str(PER_RUN * len(LABELS)))
    con = Console(cli, config_path, url, {}, {})
    for label in LABELS:
        con.run_ids[label] = cli.json("define", "--label", label, "--stage", "chip", "--limit", str(PER_RUN))["remote_id"]
    for label, rid in con.run_ids.items():
        (sid,) = con.q("select min(stage_id) from remote_component where remote_id = :r", r=rid)[0]
        (uri,) = con.q("select uri from imfile where imfile_id = :i", i=sid)[0]
        Path(uri).write_bytes(b"SCRAW1 64 64\n" + b"\0" * 10)  # truncated pixels: sc_chip refuses it (fault 5)
        con.bad_stage_id[label] = sid
    cli("prepare", "chip")
    cli("exec")
    cli("poll", "--wait", "240")
    states = con.q("select state, fault from remote_run order by remote_id")
    assert states == [("error", 5)] * len(LABELS), states
    return con


@pytest.fixture(scope="session")
def console(tmp_path_factory) -> Console:
    return _make(tmp_path_factory.mktemp("web"))


@pytest.fixture
def client(console: Console):
    from fastapi.testclient import TestClient

    from scbundle.web.app import create_app
    from scbundle.web.auth import Keyring

    app = console.app()
    with TestClient(create_app(app, Keyring.from_settings(app.config.web, env={})), base_url="http://127.0.0.1") as c:
        yield c
