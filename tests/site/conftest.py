"""The real ssh test site (tests/sitekit.py), once per session.

tests/conftest.py may define the same fixture for every directory; fixtures from site_fixture()
share one site per prefix, so this one only matters when that one is absent.
"""

from sitekit import site_fixture

test_site = site_fixture(scope="session")
