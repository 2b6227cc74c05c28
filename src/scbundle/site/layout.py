"""Where scbundle keeps things on a site, and how it names them there (pure).

    <permanent_root>/tools/<hash>/                  a copy of remote/ (site/tools.py ships it)
    <permanent_root>/stages/<stage>/<hash>/         a stage's shipped files (Stage.shipped_files)
    <permanent_root>/runs/<inst>/<stage>.<id>.a<n>  a run directory of installation <inst>
    <permanent_root>/runs/<stage>.<id>.a<n>         one made before installation ids
    <permanent_root>/jobs/                          the local scheduler's job registry
    <permanent_root>/manifest/                      what the push wrote there, by content (sc_remote.py)

A run directory and a job name carry the database's installation id (db/identity.py), so two
databases (one deleted and made again, two teams on one account) never share one: a re-run
exec finds its own job by them, and no other database's.
"""

from __future__ import annotations

from collections.abc import Sequence

from scbundle.core.config import Site
from scbundle.core.names import check_job_name, check_stage_name
from scbundle.core.resources import boot_code, tool_digests, tools_hash


def job_name(stage: str, remote_id: int, attempt: int, installation: str | None) -> str:
    """Deterministic: a re-run exec finds the job it already submitted by this name. Short and
    in [A-Za-z0-9_.-] (#SBATCH --job-name, #MSUB -N), and checked (it goes in #SBATCH/#MSUB
    lines and the local registry's file names): UnsafeNameError. ``installation`` None: the
    name of a run made before installation ids."""
    name = f"scb-{check_stage_name(stage)}-{int(remote_id)}-a{int(attempt)}"
    return check_job_name(name + (f"-{installation}" if installation else ""))


def remote_run_dir(permanent_root: str, stage: str, remote_id: int, attempt: int, installation: str | None) -> str:
    """A run's directory, its parts checked (a stage name from an older database may hold
    anything). ``installation`` None: the directory of a run made before installation ids."""
    runs = f"{permanent_root.rstrip('/')}/runs" + (f"/{check_job_name(installation)}" if installation else "")
    return f"{runs}/{check_stage_name(stage)}.{int(remote_id)}.a{int(attempt)}"


def remote_tools_dir(permanent_root: str, tools_hash: str) -> str:
    return f"{permanent_root.rstrip('/')}/tools/{tools_hash}"


def tools_dir(site: Site) -> str:
    """This installation's remote tools on ``site``."""
    return remote_tools_dir(site.permanent_root, tools_hash())


def shipped_dir(permanent_root: str, stage: str, files_hash: str) -> str:
    """Where one version of a stage's shipped files lives (content-addressed, like the tools)."""
    return f"{permanent_root.rstrip('/')}/stages/{check_stage_name(stage)}/{files_hash}"


def manifest_dir(site: Site) -> str:
    """The site account's record of the inputs it holds (path, stat key, sha256): 0700, its own."""
    return f"{site.permanent_root.rstrip('/')}/manifest"


def registry_dir(site: Site) -> str:
    return f"{site.permanent_root.rstrip('/')}/jobs"


def roots_args(site: Site) -> list[str]:
    """``--root R`` for each of the site's roots: every path a remote tool touches lies under one."""
    args: list[str] = []
    for root in site.roots:
        args += ["--root", root]
    return args


def boot_argv(python: str, tools_dir: str, *, dirs: Sequence[str] = (), mkdirs: Sequence[str] = (), digests: str | None = None) -> list[str]:
    """The inline bootstrap (remote/sc_boot.py) with this installation's tool digests (or
    ``digests``: a stage's shipped files); ``dirs`` must be this account's alone where they
    exist, ``mkdirs`` are created first."""
    argv = [python, "-S", "-c", boot_code(), tools_dir, digests if digests is not None else tool_digests()]
    for d in mkdirs:
        argv += ["--mkdir", d]
    for d in dirs:
        argv += ["--dir", d]
    return argv


def tool_argv(python: str, tools_dir: str, tool: str, *args: str, dirs: Sequence[str] = (), mkdirs: Sequence[str] = ()) -> list[str]:
    """How scbundle runs one of its remote tools: through the bootstrap, which checks the tool
    (and the tools it imports) against this installation's digests and runs the bytes it
    checked; stdlib only, so no site-packages (-S)."""
    return [*boot_argv(python, tools_dir, dirs=dirs, mkdirs=mkdirs), tool, *args]


def tools_check_argv(python: str, tools_dir: str, *, dirs: Sequence[str] = (), digests: str | None = None) -> list[str]:
    """Verify every tool (or every file of ``digests`` in ``tools_dir``) and run nothing (exec
    before shipping, the job script at its start)."""
    return [*boot_argv(python, tools_dir, dirs=dirs, digests=digests), "--check"]
