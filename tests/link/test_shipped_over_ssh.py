"""A stage's shipped files over the real link (OpenSSH through the bastion, password + one-time
code): shipped once, one call when in place, a copy swapped on the site sent again before use."""

from __future__ import annotations

import pytest
from linkkit import SITE

from scbundle.core.config import load_config
from scbundle.site.layout import shipped_dir
from scbundle.site.link import transport_for
from scbundle.site.tools import ensure_shipped

pytestmark = pytest.mark.slow

FILES = {"measure.py": b"import sys\nprint('measured', sys.argv[1])\n", "conf/a.param": b"digest\n"}


def test_shipped_files_reach_the_site_once_and_a_swapped_copy_is_replaced(sshenv):
    sshenv.link_start()
    site = load_config(sshenv.config).site(SITE)
    t = transport_for(SITE, site)
    try:
        target = shipped_dir(site.permanent_root, "rawsum", "fedcba9876543210")
        calls = t.invocations
        assert ensure_shipped(t, site, target, FILES) == f"shipped files sent to {target}"
        assert t.invocations - calls == 2
        assert t.run([site.python, "-S", f"{target}/measure.py", "x"]).text == "measured x\n"
        calls = t.invocations
        assert ensure_shipped(t, site, target, FILES) is None and t.invocations - calls == 1
        t.run(["sh", "-c", f"echo 'print(\"swapped\")' > {target}/measure.py"])
        note = ensure_shipped(t, site, target, FILES)
        assert note and "measure.py does not match" in note
        assert t.run([site.python, "-S", f"{target}/measure.py", "y"]).text == "measured y\n"
    finally:
        t.close()
