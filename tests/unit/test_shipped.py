"""A stage's shipped files (Stage.shipped_files): read from the package of the class that names
them, named by ctx.shipped, verified by the job script before the first command."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from test_render import REQ, plan, specs

from scbundle.bundle.build import assemble
from scbundle.core.errors import ConfigError
from scbundle.core.resources import content_hash, digest_list, tool_digests, tools_hash
from scbundle.site.pathmap import PathMap
from scbundle.stages.base import BuildContext, shipped_file_bytes

STAGE = '''
from scbundle.stages.base import Stage


class Shipper(Stage):
    name = "shipper"
    threads, cost_seconds, dbinfo_tables = 1, 1.0, {}
    shipped_files = ("tool.py", "conf/a.param")

    def pending_work(self, session, limit):
        return []

    def build(self, session, stage_ids, ctx):
        return []

    def replay(self, session, run, records, ctx):
        pass
'''


@pytest.fixture
def pkgs(tmp_path, monkeypatch):
    (tmp_path / "shippkg" / "conf").mkdir(parents=True)
    (tmp_path / "shippkg" / "__init__.py").write_text(STAGE)
    (tmp_path / "shippkg" / "tool.py").write_text("print('hi')\n")
    (tmp_path / "shippkg" / "conf" / "a.param").write_text("digest\n")
    (tmp_path / "otherpkg").mkdir()
    (tmp_path / "otherpkg" / "__init__.py").write_text("from shippkg import Shipper\n\n\nclass Child(Shipper):\n    name = 'child'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("shippkg", "otherpkg"):
        sys.modules.pop(mod, None)


def test_shipped_files_come_from_the_package_of_the_class_that_names_them(pkgs):
    import otherpkg
    import shippkg

    want = {"tool.py": b"print('hi')\n", "conf/a.param": b"digest\n"}
    assert shipped_file_bytes(shippkg.Shipper()) == want
    assert shipped_file_bytes(otherpkg.Child()) == want  # a subclass elsewhere ships its parent's files


@pytest.mark.parametrize("name, why", [("../etc/passwd", "not a plain relative name"), ("/abs", "not a plain relative name"),
                                       ("a=b,c", "not a plain relative name"), ("absent.sex", "cannot be read from package shippkg")])  # fmt: skip
def test_a_bad_or_missing_shipped_file_is_one_error_naming_stage_and_file(pkgs, name, why):
    import shippkg

    stage = shippkg.Shipper()
    stage.shipped_files = (name,)
    type(stage).shipped_files = (name,)
    try:
        with pytest.raises(ConfigError, match=rf"stage 'shipper' \(shippkg.Shipper\): shipped file '{name}' .*{why}"):
            shipped_file_bytes(stage)
    finally:
        type(stage).shipped_files = ("tool.py", "conf/a.param")


def test_ctx_shipped_names_only_the_stages_own_files():
    ctx = BuildContext(remote_id=1, label="l", pathmap=PathMap.of([]), tools_dir="/p/tools/x", python="python3",
                       shipped_dir="/p/stages/s/abc", shipped_names=frozenset({"tool.py"}))  # fmt: skip
    assert ctx.shipped("tool.py") == "/p/stages/s/abc/tool.py"
    with pytest.raises(ConfigError, match=r"'nope.py' is not one of the stage's shipped_files \(it ships: tool.py\)"):
        ctx.shipped("nope.py")
    with pytest.raises(ConfigError, match=r"it ships: none"):
        replace(ctx, shipped_dir=None, shipped_names=frozenset()).shipped("tool.py")


def test_the_content_hash_changes_with_any_file_and_the_tools_hash_is_the_same_function():
    a = {"tool.py": b"x", "conf/a.param": b"y"}
    assert content_hash(a) == content_hash(dict(reversed(a.items())))
    assert content_hash(a) != content_hash({**a, "conf/a.param": b"y\n"}) != content_hash({**a, "b": b""})
    assert digest_list(a).startswith("conf/a.param=") and "," in digest_list(a)
    assert len(tools_hash()) == 16 and tool_digests().count("=") == tool_digests().count(",") + 1


def test_the_job_script_verifies_the_shipped_files_before_the_first_command():
    files = assemble(specs(3), REQ, replace(plan("slurm/job.sh.j2"), shipped_dir="/perm/stages/chip/abc", shipped_digests="t.py=00"))
    job = files["job.sh"]
    check = job.index("/perm/stages/chip/abc t.py=00 --check")
    assert check < job.index("sc_runner.py pre") and "exit 3" in job[check : job.index("sc_runner.py pre")]
    assert "/perm/stages" not in assemble(specs(3), REQ, plan("slurm/job.sh.j2"))["job.sh"]  # nothing shipped, no check
