"""Bad input: one clear line naming the problem, a non-zero exit, nothing half-written."""

from __future__ import annotations

import sqlite3


def one_error_line(p):
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_config_unknown_key_and_wrong_type(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'database = "sqlite:///{tmp_path}/x.db"\nworkdir = "{tmp_path}/w"\n'
        f'[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\ncores_per_node = "24"\nmax_nodez = 3\n'
    )
    line = one_error_line(cli("--config", str(cfg), "status", check=False))
    assert "sites.local.cores_per_node" in line and "unknown key 'sites.local.max_nodez'" in line


def test_database_that_cannot_be_opened(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    (tmp_path / "ro").mkdir()
    cfg.write_text(f'database = "sqlite:////proc/nope/x.db"\nworkdir = "{tmp_path}/w"\n[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\n')
    line = one_error_line(cli("--config", str(cfg), "status", check=False))
    assert "/proc/nope" in line
    cfg.write_text(f'database = "postgresql+psycopg://u:secret@127.0.0.1:1/db"\nworkdir = "{tmp_path}/w"\n[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\n')
    line = one_error_line(cli("--config", str(cfg), "status", check=False))
    assert "127.0.0.1" in line and "secret" not in line


def test_schema_not_upgraded_is_named(cli):
    line = one_error_line(cli("status", check=False))
    assert "scbundle db upgrade" in line


def test_unknown_stage_and_remote_id(cli):
    cli("db", "upgrade")
    line = one_error_line(cli("define", "--label", "x", "--stage", "chop", check=False))
    assert "no stage named 'chop'" in line
    line = one_error_line(cli("prepare", "chop", "--remote-id", "1", check=False))
    assert "'chop'" in line
    line = one_error_line(cli("prepare", "chip", "--remote-id", "42", check=False))
    assert "remote_id 42 does not exist" in line
    line = one_error_line(cli("exec", "--remote-id", "42", check=False))
    assert "remote_id 42" in line
    line = one_error_line(cli("define", "--label", "x", "--stage", "chip", check=False))
    assert "no pending chip work" in line


def test_wrong_state_for_the_step(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "3")
    cli("define", "--label", "x", "--stage", "chip")
    line = one_error_line(cli("exec", "--remote-id", "1", check=False))
    assert "remote_id 1 is in state 'new'" in line and "'pending'" in line
    line = one_error_line(cli("poll", "--remote-id", "1", check=False))
    assert "state 'new'" in line
    with sqlite3.connect(cli.db_path) as c:
        assert c.execute("select state from remote_run").fetchall() == [("new",)]


def test_one_piece_of_work_never_in_two_live_runs(cli):
    cli("db", "upgrade")
    cli("demo-data", "--images", "5")
    a = cli.json("define", "--label", "a", "--stage", "chip", "--limit", "3")
    b = cli.json("define", "--label", "b", "--stage", "chip")
    assert (a["n_components"], b["n_components"]) == (3, 2)
    with sqlite3.connect(cli.db_path) as c:
        rows = c.execute("select stage_id, count(*) from remote_component group by stage_id").fetchall()
    assert len(rows) == 5 and all(n == 1 for _, n in rows)


def test_cancel_names_what_is_wrong(cli):
    cli("db", "upgrade")
    line = one_error_line(cli("cancel", "--remote-id", "5", check=False))
    assert "remote_id 5 does not exist" in line
    cli("demo-data", "--images", "2")
    rid = cli.json("define", "--label", "c", "--stage", "chip")["remote_id"]
    line = one_error_line(cli("cancel", "--remote-id", str(rid), check=False))
    assert f"remote_id {rid}" in line and "'new'" in line


def test_bad_scheduler_and_account_are_named(cli, tmp_path):
    cfg = tmp_path / "c.toml"
    base = f'database = "sqlite:///{tmp_path}/x.db"\nworkdir = "{tmp_path}/w"\n[sites.local]\nremote_root = "/r"\npermanent_root = "/p"\n'
    cfg.write_text(base + 'scheduler = "pbs"\n')
    assert "sites.local.scheduler" in one_error_line(cli("--config", str(cfg), "status", check=False))
    cfg.write_text(base + 'account = "a b\\n#SBATCH --x"\n')
    assert "sites.local.account" in one_error_line(cli("--config", str(cfg), "status", check=False))
