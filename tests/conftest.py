"""Shared fixtures: a scbundle home on the embedded `local` site, and the real command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from clirun import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCBUNDLE_")}
    env.update(SCBUNDLE_HOME=str(home), SCBUNDLE_CONFIG=str(tmp_path / "absent-config.toml"), COLUMNS="160")
    env.pop("SCBUNDLE_CONFIG")  # the embedded default: no config file at all
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # never read the user's real config
    return Cli(home, env)


# the real ssh test site (tests/sitekit.py): one per test session, shared by every directory
try:
    from sitekit import site_fixture
except ImportError:  # pragma: no cover - sitekit lives beside this file
    raise
test_site = site_fixture(scope="session")


# the real Slurm (tests/slurmkit.py): one per test session (shared with other sessions on this machine)
from slurmkit import cluster_fixture  # noqa: E402

slurm_cluster = cluster_fixture(scope="session")


@pytest.fixture(scope="session")
def slurm_site(test_site, slurm_cluster):
    """The ssh test site whose front end (its netns) reaches the test Slurm: sbatch/srun over ssh."""
    slurm_cluster.attach_site(test_site)
    return test_site


# a private PostgreSQL server (tests/pgkit.py): one per test session; pg_url is its test database
from pgkit import pg_fixtures  # noqa: E402

pg_server, pg_url = pg_fixtures(scope="session")

# a private MariaDB server (tests/mariakit.py): one per test session; maria_url is its test database
from mariakit import maria_fixtures  # noqa: E402

maria_server, maria_url = maria_fixtures(scope="session")
