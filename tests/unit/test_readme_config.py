"""The configuration example in the README is a valid configuration."""

import re
import tomllib
from pathlib import Path

from scbundle.core.config import config_from_dict


def test_readme_toml_example_validates():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    cfg = config_from_dict(tomllib.loads(block), "README.md")
    site = cfg.site()
    assert site.link == "ssh" and site.ssh.hosts == ["mu-fe1"] and "czw" in site.ssh.users
    assert cfg.stage_settings("chip").cost_seconds == 150
