"""ensure_shipped on a real (local) link: one call when a stage's shipped files are in place,
one more to ship them when absent or differing, refused when another account could change them."""

from __future__ import annotations

import os

import pytest

from scbundle.core.config import config_from_dict, embedded_default
from scbundle.core.errors import SiteUnsafeError
from scbundle.site.layout import shipped_dir
from scbundle.site.link import transport_for
from scbundle.site.tools import ensure_shipped

FILES = {"measure.py": b"print('measured')\n", "conf/a.param": b"digest\n"}


def test_shipped_files_cost_one_link_call_when_unchanged_and_are_sent_again_when_swapped(tmp_path):
    site = config_from_dict(embedded_default(tmp_path / "home"), "t").site("local")
    t = transport_for("local", site)
    target = shipped_dir(site.permanent_root, "rawsum", "0123456789abcdef")
    calls = t.invocations
    assert ensure_shipped(t, site, target, FILES) == f"shipped files sent to {target}"
    assert t.invocations - calls == 2  # the check, then the stream that ships them
    assert (tmp_path / "home/site-local/permanent/stages/rawsum/0123456789abcdef/conf/a.param").read_bytes() == b"digest\n"
    calls = t.invocations
    assert ensure_shipped(t, site, target, FILES) is None
    assert t.invocations - calls == 1  # unchanged: the check alone, nothing sent
    program = f"{target}/measure.py"
    with open(program, "w") as f:
        f.write("print('swapped')\n")
    calls = t.invocations
    note = ensure_shipped(t, site, target, FILES)
    assert note and "sent again" in note and "measure.py does not match" in note and t.invocations - calls == 2
    assert open(program, "rb").read() == FILES["measure.py"]
    os.chmod(target, 0o777)  # a directory anyone can write: refused, not replaced
    with pytest.raises(SiteUnsafeError, match="writable by group or others"):
        ensure_shipped(t, site, target, FILES)
    assert open(program, "rb").read() == FILES["measure.py"]
