import pytest

from scbundle.core.config import PathRule
from scbundle.core.errors import ConfigError
from scbundle.site.pathmap import PathMap


def test_longest_prefix_and_back():
    pm = PathMap.of([PathRule(local="/data", remote="/scratch/u/data"), PathRule(local="/data/det", remote="/perm/det")])
    assert pm.to_remote("/data/raw/a.fits") == "/scratch/u/data/raw/a.fits"
    assert pm.to_remote("/data/det/flat.fits") == "/perm/det/flat.fits"
    assert pm.to_local("/perm/det/flat.fits") == "/data/det/flat.fits"
    assert not pm.covers_local("/database/x")  # a prefix is a directory, not a string prefix
    with pytest.raises(ConfigError, match="no path rule"):
        pm.to_remote("/elsewhere/x")
    assert pm.to_remote("/data/raw/../raw/a") == "/scratch/u/data/raw/a"
    assert not pm.covers_local("/data/../etc/passwd")
