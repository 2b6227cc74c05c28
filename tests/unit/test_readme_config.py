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


def test_every_toml_block_in_the_readme_is_a_valid_configuration():
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[sites." in b]  # whole configs, not one-line snippets
    assert len(blocks) >= 2
    for block in blocks:
        config_from_dict(tomllib.loads(block), "README.md")
    local_slurm = next(b for b in blocks if "slurm_conf" in b)
    site = config_from_dict(tomllib.loads(local_slurm), "README.md").site()
    assert (site.link, site.scheduler, site.slurm_conf) == ("local", "slurm", "/opt/lab-slurm/etc/slurm.conf")
