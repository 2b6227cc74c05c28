"""The tool bootstrap (remote/sc_boot.py, sent inline by scbundle.site.layout.tool_argv): what a
co-user who can write on the site can plant never runs. Real subprocesses on real files: a
copy of the tools, then the attacks (a changed tool, a foreign or group-writable directory, a
symbolic link, a trojan beside a tool that imports another, a foreign run directory)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scbundle.bundle.allocation import ResourceRequest
from scbundle.bundle.build import BundlePlan, assemble
from scbundle.core import resources
from scbundle.core.resources import boot_code, inline_code, remote_dir, remote_files
from scbundle.site.layout import tool_argv, tools_check_argv
from scbundle.stages.base import ComponentSpec

PY = os.environ.get("SCBUNDLE_REMOTE_PYTHON", sys.executable)
NOBODY = 65534


def shipped(tmp_path: Path) -> Path:
    """This installation's tools as exec ships them (0755 directories, 0644 files, bin/ 0755)."""
    tools = tmp_path / "perm" / "tools" / "h"
    root = remote_dir()
    for p in remote_files():
        dest = tools / p.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
        dest.chmod(0o755 if dest.parent.name == "bin" else 0o644)
    for d in (tools, tools / "bin"):
        d.chmod(0o755)
    return tools


def trojan(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')\n"


def run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120, cwd="/")


def missing(tools: Path, roots: Path, stdin: bytes, **kw) -> subprocess.CompletedProcess:
    return run(tool_argv(PY, str(tools), "sc_remote.py", "missing", "--root", str(roots), **kw), stdin)


def test_a_verified_tool_runs_from_the_bytes_it_checked(tmp_path):
    tools = shipped(tmp_path)
    (tmp_path / "here").write_bytes(b"abc")
    abc, zero = hashlib.sha256(b"abc").hexdigest(), "0" * 64
    p = missing(tools, tmp_path, f"{tmp_path}/here\t3\t{abc}\n{tmp_path}/gone\t1\t{zero}\n".encode())
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"{tmp_path}/gone\t1\t{zero}\n"  # the real tool answered
    check = run(tools_check_argv(PY, str(tools)))
    assert check.returncode == 0 and b"verified" in check.stdout


def test_a_changed_tool_never_runs(tmp_path):
    tools = shipped(tmp_path)
    marker = tmp_path / "marker"
    (tools / "sc_remote.py").write_text(trojan(marker))  # same owner, same mode: only the content differs
    p = missing(tools, tmp_path, b"")
    assert p.returncode == resources.BOOT_MISMATCH
    assert f"tool {tools}/sc_remote.py does not match this installation" in p.stderr.decode()
    assert not marker.exists()
    assert run(tools_check_argv(PY, str(tools))).returncode == resources.BOOT_MISMATCH


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another account needs root")
def test_a_tools_directory_another_account_owns_or_can_write_is_refused(tmp_path):
    tools = shipped(tmp_path)
    marker = tmp_path / "marker"
    (tools / "sc_remote.py").write_text(trojan(marker))
    os.chown(tools, NOBODY, NOBODY)  # planted by another account
    p = missing(tools, tmp_path, b"")
    assert p.returncode == resources.BOOT_UNSAFE
    err = p.stderr.decode()
    assert f"tools directory {tools} is owned by uid {NOBODY} (nobody) with mode 0755" in err and "nothing was run" in err
    assert len(err.strip().splitlines()) == 1
    os.chown(tools, 0, 0)
    tools.chmod(0o775)  # group-writable: a teammate could swap a file in
    p = missing(tools, tmp_path, b"")
    assert p.returncode == resources.BOOT_UNSAFE and "with mode 0775" in p.stderr.decode()
    tools.chmod(0o755)
    os.chown(tools / "sc_remote.py", NOBODY, NOBODY)  # one file another account's
    p = missing(tools, tmp_path, b"")
    assert p.returncode == resources.BOOT_UNSAFE and f"tool {tools}/sc_remote.py is owned by uid {NOBODY}" in p.stderr.decode()
    assert not marker.exists()


def test_symbolic_links_are_never_followed(tmp_path):
    good = shipped(tmp_path / "a")
    marker = tmp_path / "marker"
    link = tmp_path / "perm-link"
    link.symlink_to(good)  # the tools directory itself a link (to a good copy, even)
    p = missing(link, tmp_path, b"")
    assert p.returncode == resources.BOOT_UNSAFE and f"tools directory {link} is a symbolic link" in p.stderr.decode()
    evil = tmp_path / "evil.py"
    evil.write_text(trojan(marker))
    tools = shipped(tmp_path / "b")
    (tools / "sc_remote.py").unlink()
    (tools / "sc_remote.py").symlink_to(evil)
    p = missing(tools, tmp_path, b"")
    assert p.returncode == resources.BOOT_UNSAFE and "cannot be opened without following links" in p.stderr.decode()
    assert not marker.exists()


def test_a_tool_imports_only_verified_tools(tmp_path):
    """sc_cam imports sc_chip (and sc_chip argparse): a changed sc_chip is refused, and a planted
    argparse.py beside them is never imported (python's own sys.path[0] would be that directory)."""
    tools = shipped(tmp_path)
    marker = tmp_path / "marker"
    (tools / "argparse.py").write_text(trojan(marker))
    p = run(tool_argv(PY, str(tools), "sc_cam.py", "--help"))
    assert p.returncode == 0, p.stderr
    assert b"usage: sc_cam.py" in p.stdout
    assert not marker.exists()
    (tools / "sc_chip.py").write_text(trojan(marker))
    p = run(tool_argv(PY, str(tools), "sc_cam.py", "--help"))
    assert p.returncode == resources.BOOT_MISMATCH and f"tool {tools}/sc_chip.py does not match" in p.stderr.decode()
    assert not marker.exists()


@pytest.mark.parametrize("tool", ["sc_runner.py", "sc_task.py", "sc_sched.py", "sc_localjob.py"])
def test_the_protocol_module_is_verified_like_any_tool(tmp_path, tool):
    """Every tool that imports remote/sc_protocol.py gets it from the verified bytes: a changed
    or missing sc_protocol.py is refused as a changed sc_remote.py is, and nothing of it runs."""
    tools = shipped(tmp_path)
    marker = tmp_path / "marker"
    assert run(tool_argv(PY, str(tools), tool, "--help")).returncode == 0
    (tools / "sc_protocol.py").write_text(trojan(marker))
    p = run(tool_argv(PY, str(tools), tool, "--help"))
    assert p.returncode == resources.BOOT_MISMATCH and f"tool {tools}/sc_protocol.py does not match" in p.stderr.decode()
    assert run(tools_check_argv(PY, str(tools))).returncode == resources.BOOT_MISMATCH
    (tools / "sc_protocol.py").unlink()
    p = run(tool_argv(PY, str(tools), tool, "--help"))
    assert p.returncode == resources.BOOT_MISMATCH and "sc_protocol.py" in p.stderr.decode()
    assert run(tools_check_argv(PY, str(tools))).returncode == resources.BOOT_MISMATCH
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another account needs root")
def test_run_and_registry_directories_must_be_this_accounts_alone(tmp_path):
    tools = shipped(tmp_path)
    run_dir = tmp_path / "perm" / "runs" / "chip.1.a1"
    old = os.umask(0)  # even under a lax umask, what the bootstrap creates is not writable by others
    try:
        p = missing(tools, tmp_path, b"", mkdirs=[str(run_dir)])
    finally:
        os.umask(old)
    assert p.returncode == 0, p.stderr
    assert run_dir.is_dir() and oct(run_dir.stat().st_mode & 0o777) == "0o755"
    os.chown(run_dir, NOBODY, NOBODY)  # another account's run directory
    for kw in ({"mkdirs": [str(run_dir)]}, {"dirs": [str(run_dir)]}):
        p = missing(tools, tmp_path, b"", **kw)
        assert p.returncode == resources.BOOT_UNSAFE
        assert f"directory {run_dir} is owned by uid {NOBODY} (nobody)" in p.stderr.decode()
    planted = tmp_path / "perm" / "runs" / "chip.2.a1"
    planted.symlink_to(tmp_path / "elsewhere")
    p = missing(tools, tmp_path, b"", mkdirs=[str(planted)])
    assert p.returncode == resources.BOOT_UNSAFE and "is a symbolic link" in p.stderr.decode()
    assert not (tmp_path / "elsewhere").exists()
    p = missing(tools, tmp_path, b"", dirs=[str(tmp_path / "not-yet")])  # --dir: absent is fine
    assert p.returncode == 0


def test_absent_tools_and_the_exit_codes_the_local_side_reads(tmp_path):
    spec = importlib.util.spec_from_file_location("sc_boot_under_test", remote_dir() / "sc_boot.py")
    boot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(boot)
    assert (boot.ABSENT, boot.UNSAFE, boot.MISMATCH) == (resources.BOOT_ABSENT, resources.BOOT_UNSAFE, resources.BOOT_MISMATCH)
    p = run(tools_check_argv(PY, str(tmp_path / "nothing-here")))
    assert p.returncode == resources.BOOT_ABSENT and b"is missing" in p.stderr


def test_the_inline_code_is_one_shell_word_a_csh_login_shell_takes_too():
    for word in (boot_code(), inline_code("sc_sitecheck.py")):
        assert "\n" not in word and "!" not in word


def test_the_job_script_verifies_the_tools_before_it_runs_anything(tmp_path):
    """A tool changed between exec and the job's start (the job runs much later, on a compute
    node): the job script's own check refuses it, records exit 3, and nothing ran."""
    tools = shipped(tmp_path)
    marker = tmp_path / "marker"
    (tools / "sc_runner.py").write_text(trojan(marker))
    run_dir = tmp_path / "perm" / "runs" / "chip.7.a1"
    spec = ComponentSpec(1, (), (str(tmp_path / "out"),), ("true",), ("true",), (), 1.0)
    plan = BundlePlan(remote_id=7, stage="chip", attempt=1, run_dir=str(run_dir), tools_dir=str(tools),
                      python=PY, cores_per_node=2, job_template="slurm/job.sh.j2")  # fmt: skip
    for rel, text in assemble([spec], ResourceRequest(hours=1, nodes=1, nranks=1, threads=1), plan).items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    p = subprocess.run(["bash", str(run_dir / "job.sh")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": f"{tools}/bin:{os.environ['PATH']}"})  # fmt: skip
    assert p.returncode == 3, p.stderr
    assert (run_dir / "job.exit").read_text().strip() == "3"
    assert f"tool {tools}/sc_runner.py does not match this installation" in p.stderr
    assert not marker.exists() and not (run_dir / "results").exists()
