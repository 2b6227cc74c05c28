"""scbundle against the real ssh test site (tests/sitekit.py): the per-test environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from linkkit import ssh_env
from sitekit import TestSite


@pytest.fixture
def sshenv(test_site: TestSite, tmp_path: Path):
    with ssh_env(test_site, tmp_path) as e:
        yield e
